"""End-to-end distance of every chain (nm)."""

from __future__ import annotations


import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import _chain_indices
from multiscale.cg.analysis.chains import make_chains_whole


def end_to_end_distance(traj: md.Trajectory) -> np.ndarray:
    """Distance (nm) between the first and last bead (topology order) of every chain in every
    frame, shape (n_frames, n_chains), on chains made whole (:func:`make_chains_whole`), so
    distances longer than half the box are right. A one-bead chain gives 0."""
    xyz = make_chains_whole(traj)
    chains = _chain_indices(traj.topology)
    out = np.zeros((traj.n_frames, len(chains)))
    for c, idx in enumerate(chains):
        if idx.size >= 2:
            out[:, c] = np.linalg.norm(xyz[:, idx[-1]] - xyz[:, idx[0]], axis=-1)
    return out

