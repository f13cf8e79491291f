"""Bilayer thickness (nm): the distance between the two leaflets' head-bead (phosphate) planes."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.bilayer import heights


def bilayer_thickness(traj: md.Trajectory, head_indices) -> np.ndarray:
    """(T,) mean height of the heads above the mid-plane minus the mean height of those below
    (nm); ``head_indices``: one head bead (e.g. the phosphate) per lipid."""
    h = heights(traj, head_indices)
    upper, lower = h > 0, h <= 0
    if not (upper.any(axis=1).all() and lower.any(axis=1).all()):
        raise ValueError("a frame has all heads on one side of the mid-plane; this is not a bilayer")
    return (np.where(upper, h, 0).sum(1) / upper.sum(1)) - (np.where(lower, h, 0).sum(1) / lower.sum(1))
