"""Second-rank order parameter P₂ of bead–bead bonds against the bilayer normal (z)."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from multiscale.cg.geometry import minimum_image


def bond_order_parameter(traj: md.Trajectory, bonds) -> np.ndarray:
    """(n_bonds,) ⟨P₂(cos θ)⟩ = ⟨(3 cos²θ − 1)/2⟩ over frames, θ the angle between the bond
    (minimum image) and z: 1 along the normal, −0.5 in the plane, 0 isotropic."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    d = (traj.xyz[:, bonds[:, 1]] - traj.xyz[:, bonds[:, 0]]).astype(np.float64)
    if traj.unitcell_vectors is not None:
        cells = np.asarray(traj.unitcell_vectors, dtype=np.float64)
        d = minimum_image(d, cells)
    cos2 = d[..., 2] ** 2 / np.einsum("tbi,tbi->tb", d, d)
    return (1.5 * cos2 - 0.5).mean(0)
