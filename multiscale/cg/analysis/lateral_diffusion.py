"""Lateral diffusion of lipids (nm²/ps): the in-plane mean-square displacement of their centres
of mass, with each leaflet's own centre-of-mass drift removed (leaflets slide against each other)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import Masses, _chain_indices, _masses
from multiscale.cg.analysis.chains import make_chains_whole
from multiscale.cg.analysis.bilayer import heights
from multiscale.cg.geometry import minimum_image


def lipid_lateral_msd(traj: md.Trajectory, masses_amu: Masses, *, types: Optional[Sequence[str]] = None,
                      max_lag_fraction: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """(lags in frames, in-plane MSD in nm²) of the lipids' (chains') centres of mass, averaged
    over lipids and time origins, with each leaflet's mean displacement removed; centres are
    unwrapped by minimum-image steps between successive frames."""
    if traj.n_frames < 4:
        raise ValueError(f"the MSD needs at least 4 frames, got {traj.n_frames}")
    xyz = make_chains_whole(traj)
    m = _masses(traj.topology, masses_amu, types)
    lipids = [c for c in _chain_indices(traj.topology) if c.size]
    com = np.stack([(xyz[:, c] * m[c][None, :, None]).sum(1) / m[c].sum() for c in lipids], axis=1)
    steps = np.diff(com, axis=0)
    cells = np.asarray(traj.unitcell_vectors[1:], dtype=np.float64)
    steps = minimum_image(steps, cells)
    path = np.concatenate([np.zeros((1,) + com.shape[1:]), np.cumsum(steps, axis=0)])[..., :2]
    # leaflet of each lipid from its centre's height in the first frame: + above the mid-plane
    side = np.array([heights(traj[:1], lipid).mean() > 0 for lipid in lipids])
    for leaflet in (side, ~side):
        if leaflet.any():
            path[:, leaflet] -= path[:, leaflet].mean(1, keepdims=True)
    max_lag = max(int(max_lag_fraction * traj.n_frames), 2)
    lags = np.arange(1, max_lag + 1)
    msd = np.array([np.mean(np.sum((path[lag:] - path[:-lag]) ** 2, axis=-1)) for lag in lags])
    return lags, msd


def lateral_diffusion_coefficient(traj: md.Trajectory, masses_amu: Masses, *, frame_interval_ps: float,
                                  types: Optional[Sequence[str]] = None, fit_window=(0.2, 1.0)) -> float:
    """D (nm²/ps) = slope/4 of the in-plane MSD between ``fit_window`` fractions of the largest lag."""
    if not frame_interval_ps > 0:
        raise ValueError(f"frame_interval_ps must be > 0 ps, got {frame_interval_ps!r}")
    lags, msd = lipid_lateral_msd(traj, masses_amu, types=types)
    lo, hi = (int(round(f * lags[-1])) for f in fit_window)
    sel = (lags >= max(lo, 1)) & (lags <= max(hi, lo + 2))
    return float(np.polyfit(lags[sel] * float(frame_interval_ps), msd[sel], 1)[0] / 4.0)
