"""Local density of beads: each bead's number of neighbours of chosen types, counted with a
smooth weight (1 inside ``inner_nm``, a cos² taper to 0 at ``outer_nm``), minimum image.

The quantity a local-density potential acts on (:mod:`multiscale.openmm.local_density`, which
computes the same weight inside OpenMM); its reference means set that potential's targets.
Units: nm.
"""

from __future__ import annotations

from typing import Sequence

import mdtraj as md
import numpy as np

from multiscale.cg.geometry import minimum_image


def local_density_weight(r, inner_nm: float, outer_nm: float) -> np.ndarray:
    """w(r): 1 for r ≤ inner, ½ (1 + cos(π (r − inner) / (outer − inner))) up to outer, 0 beyond
    (continuous with a continuous derivative at both ends)."""
    if not 0.0 < inner_nm < outer_nm:
        raise ValueError(f"the local-density weight needs 0 < inner_nm < outer_nm, got {inner_nm!r}, {outer_nm!r} (nm)")
    r = np.asarray(r, dtype=float)
    taper = 0.5 * (1.0 + np.cos(np.pi * (r - inner_nm) / (outer_nm - inner_nm)))
    return np.where(r <= inner_nm, 1.0, np.where(r < outer_nm, taper, 0.0))


def local_densities(traj: md.Trajectory, members: Sequence[int], inner_nm: float, outer_nm: float) -> np.ndarray:
    """(T, len(members)) ρ_i = Σ_{j ∈ members, j ≠ i} w(|r_ij|) for each bead i of ``members``
    (bead indices), minimum image in the trajectory's cells (none: open boundaries)."""
    members = np.asarray(members, dtype=np.int64)
    if members.size < 2:
        raise ValueError("a local density needs at least 2 member beads")
    xyz = traj.xyz[:, members].astype(np.float64)
    cells = None if traj.unitcell_vectors is None else np.asarray(traj.unitcell_vectors, dtype=np.float64)
    out = np.empty((traj.n_frames, members.size))
    for t in range(traj.n_frames):
        d = (xyz[t][:, None] - xyz[t][None]).reshape(1, -1, 3)
        d = minimum_image(d, None if cells is None else cells[t:t + 1]).reshape(members.size, members.size, 3)
        w = local_density_weight(np.linalg.norm(d, axis=-1), inner_nm, outer_nm)
        np.fill_diagonal(w, 0.0)
        out[t] = w.sum(axis=1)
    return out
