"""In-plane radial distribution function of beads of one leaflet (e.g. the head beads)."""

from __future__ import annotations

from typing import Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.bilayer import heights


def lateral_rdf(traj: md.Trajectory, indices, *, r_max_nm: float = 1.5, bins: int = 60) -> Tuple[np.ndarray, np.ndarray]:
    """(bin centres in nm, g(r)) of the in-plane (xy, minimum image) distances between the beads
    ``indices`` in the same leaflet (same side of the mid-plane), normalised per leaflet by its
    2-D ideal-gas pair density: g → 1 for uncorrelated beads. ``r_max_nm`` must be below half the
    smallest lateral box width."""
    idx = np.asarray(indices, dtype=np.int64)
    cells = np.asarray(traj.unitcell_vectors, dtype=np.float64)
    widths = np.stack([cells[:, 0, 0], cells[:, 1, 1]], axis=1)
    if r_max_nm >= 0.5 * widths.min():
        raise ValueError(f"r_max_nm={r_max_nm} is not below half the smallest lateral box width {widths.min():.2f} nm")
    side = heights(traj, idx) > 0
    edges = np.linspace(0.0, r_max_nm, int(bins) + 1)
    shell = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    g = np.zeros(int(bins))
    for t in range(traj.n_frames):
        area = widths[t, 0] * widths[t, 1]
        for leaflet in (side[t], ~side[t]):
            xy = traj.xyz[t, idx[leaflet], :2].astype(np.float64)
            n = xy.shape[0]
            if n < 2:
                continue
            d = xy[:, None] - xy[None]
            d -= widths[t] * np.round(d / widths[t])
            r = np.sqrt((d ** 2).sum(-1))[np.triu_indices(n, 1)]
            counts = np.histogram(r, edges)[0]
            g += counts / (shell * 0.5 * n * (n - 1) / area)
    return 0.5 * (edges[1:] + edges[:-1]), g / (2 * traj.n_frames)
