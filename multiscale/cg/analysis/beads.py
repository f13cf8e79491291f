"""What every CG observable needs of a trajectory: bead types, bead masses, chains, the unit
cell and the check that two trajectories share one bead topology. Conventions: see
:mod:`multiscale.cg.analysis`."""

from __future__ import annotations

from typing import List, Mapping as MappingABC, Optional, Sequence, Tuple, Union

import mdtraj as md
import numpy as np



TypeKey = Tuple[str, ...]
Masses = Union[Sequence[float], np.ndarray, MappingABC[str, float]]


def bead_types(topology: md.Topology, types: Optional[Sequence[str]] = None) -> List[str]:
    """The type of every bead: ``types`` if given (checked to have one entry per bead), else the
    atom names of ``topology``."""
    if types is None:
        return [atom.name for atom in topology.atoms]
    out = [str(t) for t in types]
    if len(out) != topology.n_atoms:
        raise ValueError(
            f"types has {len(out)} entries but the topology has {topology.n_atoms} beads; pass one type per "
            "bead in topology order (e.g. types=mapping.bead_types) or types=None to use the atom names"
        )
    return out


def _type_key(names: Sequence[str]) -> TypeKey:
    forward = tuple(names)
    return min(forward, forward[::-1])


def _key_str(key: TypeKey) -> str:
    return "-".join(key)


def _masses(topology: md.Topology, masses: Masses, types: Optional[Sequence[str]] = None) -> np.ndarray:
    if isinstance(masses, MappingABC):
        names = bead_types(topology, types)
        missing = sorted({n for n in names if n not in masses})
        if missing:
            raise ValueError(f"no mass for bead types {missing}; pass masses as {{type: amu}} covering them "
                             f"or an array of {topology.n_atoms} bead masses (e.g. mapping.bead_masses)")
        out = np.array([float(masses[n]) for n in names], dtype=np.float64)
    else:
        out = np.asarray(masses, dtype=np.float64).ravel()
        if out.size != topology.n_atoms:
            raise ValueError(f"masses has {out.size} entries but the topology has {topology.n_atoms} beads; "
                             "pass one mass (amu) per bead in topology order or a {type: amu} dict")
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ValueError("bead masses must be finite and positive (amu)")
    return out


def _chain_indices(topology: md.Topology) -> List[np.ndarray]:
    return [np.array([atom.index for atom in chain.atoms], dtype=np.int64) for chain in topology.chains]


def check_same_topology(ref: md.Trajectory, cg: md.Trajectory) -> None:
    """Refuse two trajectories whose bead topologies differ (bead count, names, chains or bonds)."""
    fix = ("both must use the same bead topology: load the CG trajectory with the mapped reference's "
           "topology (md.load(path, top=ref.topology)) or map the reference with the CG model's mapping")
    a, b = ref.topology, cg.topology
    if a.n_atoms != b.n_atoms:
        raise ValueError(f"ref has {a.n_atoms} beads but cg has {b.n_atoms}; {fix}")
    for x, y in zip(a.atoms, b.atoms):
        if x.name != y.name:
            raise ValueError(f"bead {x.index} is named {x.name!r} in ref but {y.name!r} in cg; {fix}")
        if x.residue.chain.index != y.residue.chain.index:
            raise ValueError(f"bead {x.index} is in chain {x.residue.chain.index} in ref but "
                             f"{y.residue.chain.index} in cg; {fix}")
    bonds_a = {tuple(sorted((p.index, q.index))) for p, q in a.bonds}
    bonds_b = {tuple(sorted((p.index, q.index))) for p, q in b.bonds}
    if bonds_a != bonds_b:
        only = sorted(bonds_a ^ bonds_b)[:5]
        raise ValueError(f"the bead bonds differ between ref and cg (e.g. {only}); {fix}")


def _check_unitcell(traj: md.Trajectory, what: str) -> None:
    if traj.unitcell_vectors is None:
        raise ValueError(
            f"{what} needs a periodic box but the trajectory has no unit cell; build it with "
            "md.Trajectory(xyz, topology, unitcell_lengths=..., unitcell_angles=...) or load a file that stores the box"
        )


def _half_min_width(traj: md.Trajectory) -> float:
    """Half the smallest perpendicular width of the cell over all frames (nm): the largest r at
    which the minimum-image convention counts every pair."""
    vectors = np.asarray(traj.unitcell_vectors, dtype=np.float64)  # (frames, 3, 3), rows a, b, c
    volume = np.abs(np.linalg.det(vectors))
    widths = []
    for i, j in ((1, 2), (2, 0), (0, 1)):
        widths.append(volume / np.linalg.norm(np.cross(vectors[:, i], vectors[:, j]), axis=1))
    return float(0.5 * np.min(widths))

