"""Mass-weighted radius of gyration of every chain (nm)."""

from __future__ import annotations

from typing import Optional, Sequence

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import Masses, _chain_indices, _masses
from multiscale.cg.analysis.chains import make_chains_whole


def radius_of_gyration_per_chain(traj: md.Trajectory, masses: Masses, *,
                                 types: Optional[Sequence[str]] = None) -> np.ndarray:
    """Mass-weighted radius of gyration (nm) of every chain in every frame, shape
    (n_frames, n_chains): Rg² = Σ m_i |r_i − r_cm|² / Σ m_i over the chain's beads, on chains made
    whole (:func:`make_chains_whole`). ``masses``: one mass (amu) per bead, or ``{type: amu}``
    (types as in :func:`bead_types`). A one-bead chain has Rg = 0.
    """
    m = _masses(traj.topology, masses, types)
    xyz = make_chains_whole(traj)
    chains = _chain_indices(traj.topology)
    out = np.zeros((traj.n_frames, len(chains)))
    for c, idx in enumerate(chains):
        if idx.size < 2:
            continue
        w = m[idx] / m[idx].sum()
        x = xyz[:, idx]
        centre = np.einsum("i,fij->fj", w, x)
        out[:, c] = np.sqrt(np.einsum("i,fi->f", w, ((x - centre[:, None]) ** 2).sum(-1)))
    return out

