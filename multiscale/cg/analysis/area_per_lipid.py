"""Area per lipid (nm²) of every frame: the box's cross-section over the lipids of one leaflet."""

from __future__ import annotations

from typing import Optional

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import _chain_indices
from multiscale.cg.analysis.bilayer import check_membrane_cell


def area_per_lipid(traj: md.Trajectory, n_lipids: Optional[int] = None) -> np.ndarray:
    """(T,) |a × b| / (n_lipids / 2) in nm², with ``n_lipids`` both leaflets together (default:
    the topology's chains, one per lipid). A symmetric bilayer is assumed (equal leaflets)."""
    check_membrane_cell(traj, "area per lipid")
    n = len([c for c in _chain_indices(traj.topology) if c.size]) if n_lipids is None else int(n_lipids)
    if n < 2:
        raise ValueError(f"a bilayer needs at least 2 lipids, got {n}")
    cells = np.asarray(traj.unitcell_vectors, dtype=np.float64)
    return np.linalg.norm(np.cross(cells[:, 0], cells[:, 1]), axis=1) / (n / 2.0)
