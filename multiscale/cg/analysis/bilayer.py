"""Bilayer geometry shared by the membrane observables: the mid-plane, each bead's height above
it, and the leaflet of each lipid.

A bilayer lies in the xy plane with its normal along z (the box's c axis orthogonal to a and b,
as OpenMM's patches and ``MonteCarloMembraneBarostat`` keep it). Heights use the minimum image
along z, so a bilayer that drifted across the box's z face (a solvent-free CG run) is handled.
Lipids are the topology's chains (one chain per molecule, as a CG topology of a
:class:`~multiscale.cg.mapping.Mapping` has them).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import _chain_indices, _check_unitcell


def check_membrane_cell(traj: md.Trajectory, what: str) -> None:
    """Refuse a trajectory without a unit cell or whose c axis is not along z."""
    _check_unitcell(traj, what)
    cells = np.asarray(traj.unitcell_vectors, dtype=np.float64)
    if np.abs(cells[:, 2, :2]).max() > 1e-6 or np.abs(cells[:, :2, 2]).max() > 1e-6:
        raise ValueError(f"{what}: the bilayer normal must be the box's z axis (c along z, a and b in the xy plane)")


def midplane(traj: md.Trajectory, indices=None) -> np.ndarray:
    """(T,) height (nm) of the bilayer mid-plane: the circular mean of the beads' z over the box
    height (robust to a bilayer split by the z face), refined by one minimum-image mean."""
    check_membrane_cell(traj, "the bilayer mid-plane")
    z = traj.xyz[:, slice(None) if indices is None else np.asarray(indices), 2].astype(np.float64)
    height = np.asarray(traj.unitcell_vectors[:, 2, 2], dtype=np.float64)[:, None]
    angle = 2 * np.pi * z / height
    centre = np.arctan2(np.sin(angle).mean(1), np.cos(angle).mean(1))[:, None] * height / (2 * np.pi)
    d = z - centre
    d -= height * np.round(d / height)
    return (centre + d.mean(1, keepdims=True))[:, 0]


def heights(traj: md.Trajectory, indices=None) -> np.ndarray:
    """(T, n) height (nm) of the beads ``indices`` (default all) above the mid-plane of all
    beads, minimum image along z."""
    mid = midplane(traj)[:, None]
    z = traj.xyz[:, slice(None) if indices is None else np.asarray(indices), 2].astype(np.float64)
    height = np.asarray(traj.unitcell_vectors[:, 2, 2], dtype=np.float64)[:, None]
    d = z - mid
    return d - height * np.round(d / height)


def lipid_head_beads(topology: md.Topology, types: Sequence[str], head_type: str) -> Tuple[List[np.ndarray], np.ndarray]:
    """(lipids as bead-index arrays, the index of each lipid's first ``head_type`` bead)."""
    lipids = [c for c in _chain_indices(topology) if c.size]
    heads = []
    for k, chain in enumerate(lipids):
        hits = [int(b) for b in chain if types[b] == head_type]
        if not hits:
            raise ValueError(f"lipid {k} (chain {k}) has no bead of type {head_type!r}; name the head bead type")
        heads.append(hits[0])
    return lipids, np.array(heads, dtype=np.int64)


def leaflet_of(traj: md.Trajectory, head_indices) -> np.ndarray:
    """(T, n_lipids) leaflet of each lipid in each frame: +1 (head above the mid-plane), −1 below."""
    return np.where(heights(traj, head_indices) > 0, 1, -1)
