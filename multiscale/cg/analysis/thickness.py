"""Bilayer thickness (nm): the distance between the two leaflets' head-bead (phosphate) planes."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.bilayer import heights


def bilayer_thickness(traj: md.Trajectory, head_indices, *, not_a_bilayer: str = "raise") -> np.ndarray:
    """(T,) mean height of the heads above the mid-plane minus the mean height of those below
    (nm); ``head_indices``: one head bead (e.g. the phosphate) per lipid. A frame with all heads
    on one side of the mid-plane is not a bilayer: ``not_a_bilayer="raise"`` refuses it,
    ``"nan"`` gives NaN for it (a CG run whose bilayer fell apart is still reported)."""
    if not_a_bilayer not in ("raise", "nan"):
        raise ValueError(f"not_a_bilayer must be 'raise' or 'nan', got {not_a_bilayer!r}")
    h = heights(traj, head_indices)
    upper, lower = h > 0, h <= 0
    bilayer = upper.any(axis=1) & lower.any(axis=1)
    if not bilayer.all() and not_a_bilayer == "raise":
        raise ValueError(f"frame {int(np.flatnonzero(~bilayer)[0])} has all heads on one side of the mid-plane; "
                         "this is not a bilayer")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (np.where(upper, h, 0).sum(1) / upper.sum(1)) - (np.where(lower, h, 0).sum(1) / lower.sum(1))
    return np.where(bilayer, out, np.nan)
