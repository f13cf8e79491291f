"""Centre-of-mass diffusion of the chains (nm²/ps): the dynamical side of a CG model.

CG models run faster than their reference in simulated time *and* move faster in it (the removed
degrees of freedom no longer rub); the second factor is this observable's ratio, reported apart
from the computational speed-up.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import Masses, _chain_indices, _masses
from multiscale.cg.analysis.chains import make_chains_whole
from multiscale.cg.geometry import minimum_image


def chain_center_of_mass_msd(traj: md.Trajectory, masses_amu: Masses, *, types: Optional[Sequence[str]] = None,
                             max_lag_fraction: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """Mean-square displacement (nm²) of the chains' centres of mass against the lag in frames,
    averaged over chains and time origins, lags 1 .. ``max_lag_fraction`` × frames.

    Chains are made whole, their centres unwrapped by minimum-image steps between successive
    frames (frames must be closer in time than a chain takes to cross half the box), and the
    motion of the whole system's centre of mass is removed. Returns ``(lags, msd)``."""
    if traj.n_frames < 4:
        raise ValueError(f"the MSD needs at least 4 frames, got {traj.n_frames}")
    xyz = make_chains_whole(traj)
    m = _masses(traj.topology, masses_amu, types)
    chains = [c for c in _chain_indices(traj.topology) if c.size]
    weights = np.array([m[c].sum() for c in chains])
    com = np.stack([(xyz[:, c] * m[c][None, :, None]).sum(1) / m[c].sum() for c in chains], axis=1)  # (T, C, 3)
    steps = np.diff(com, axis=0)
    if traj.unitcell_vectors is not None:
        boxes = np.asarray(traj.unitcell_vectors[1:], dtype=np.float64)
        steps = np.stack([minimum_image(steps[t][None], boxes[t][None])[0] for t in range(steps.shape[0])])
    path = np.concatenate([np.zeros((1,) + com.shape[1:]), np.cumsum(steps, axis=0)])
    path -= ((path * weights[None, :, None]).sum(1) / weights.sum())[:, None, :]
    max_lag = max(int(max_lag_fraction * traj.n_frames), 2)
    lags = np.arange(1, max_lag + 1)
    msd = np.array([np.mean(np.sum((path[lag:] - path[:-lag]) ** 2, axis=-1)) for lag in lags])
    return lags, msd


def chain_diffusion_coefficient(traj: md.Trajectory, masses_amu: Masses, *, frame_interval_ps: float,
                                types: Optional[Sequence[str]] = None, fit_window=(0.2, 1.0)) -> float:
    """D (nm²/ps) of the chains' centres of mass: slope/6 of a straight line fitted to the MSD
    between ``fit_window`` fractions of the largest lag (half the run), past the early
    sub-diffusive regime."""
    if not frame_interval_ps > 0:
        raise ValueError(f"frame_interval_ps must be > 0 ps, got {frame_interval_ps!r}")
    lags, msd = chain_center_of_mass_msd(traj, masses_amu, types=types)
    lo, hi = (int(round(f * lags[-1])) for f in fit_window)
    sel = (lags >= max(lo, 1)) & (lags <= max(hi, lo + 2))
    slope = np.polyfit(lags[sel] * float(frame_interval_ps), msd[sel], 1)[0]
    return float(slope / 6.0)
