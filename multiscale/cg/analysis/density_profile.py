"""Number density profiles (beads/nm³) along the bilayer normal, relative to the mid-plane."""

from __future__ import annotations

from typing import Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.bilayer import heights


def density_profile(traj: md.Trajectory, indices, *, half_width_nm: float = 3.5, bins: int = 70
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """(bin centres in nm, number density in beads/nm³) of the beads ``indices`` against their
    height above the mid-plane, between ±``half_width_nm``, averaged over frames (each frame's
    slab volume = its cross-section × bin width)."""
    if not half_width_nm > 0 or bins < 2:
        raise ValueError("half_width_nm must be > 0 nm and bins >= 2")
    h = heights(traj, indices)
    edges = np.linspace(-half_width_nm, half_width_nm, int(bins) + 1)
    cells = np.asarray(traj.unitcell_vectors, dtype=np.float64)
    areas = np.linalg.norm(np.cross(cells[:, 0], cells[:, 1]), axis=1)
    counts = np.stack([np.histogram(h[t], edges)[0] / areas[t] for t in range(traj.n_frames)])
    return 0.5 * (edges[1:] + edges[:-1]), counts.mean(0) / np.diff(edges)
