"""The :class:`Mapping` of atoms to beads: M_x, M_f, bead names, types and masses, the bead
graph, chains and the CG topology."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from multiscale.cg.forcemap import (
    ForceMapError,
    OptimalForceMap,
    check_constraint_cancellation,
    check_force_map,
    default_force_map,
    optimal_force_map,
)
from multiscale.cg.topology import BondGraph
from multiscale.cg.mapping.definition import MappingError


def _without(atom_indices: Sequence[Sequence[int]], excluded: Iterable[int]) -> List[np.ndarray]:
    excluded = np.asarray(sorted(excluded), dtype=np.int64)
    return [np.asarray(a, dtype=np.int64)[~np.isin(a, excluded)] for a in atom_indices]


@dataclass
class _Bead:
    name: str
    type: str
    atoms: List[int]
    weights: Union[str, List[float]]
    origin: str
    residues: List[int]


class Mapping:
    """A linear CG mapping of N atoms onto n beads.

    Attributes
    ----------
    coordinate_map: M_x, ``scipy.sparse.csr_matrix`` (n_beads, n_atoms); rows sum to 1. Sparse
        because maps of 10^5 atoms are common and dense ones would not fit in memory.
    force_map: M_f, CSR (n_beads, n_atoms), with M_f M_xᵀ = I (checked on construction).
    force_map_kind: "sum", "constraint-aware", "optimal" or "custom".
    bead_names, bead_types: lists of strings.
    bead_masses: (n_beads,) amu; Σ over member atoms of mass / (number of beads holding the atom).
    atom_indices: list of int arrays, the atoms of each bead.
    bead_bonds: sorted list of (i, j) bead pairs, i < j.
    chains: list of lists of bead indices, one per molecule (connected by covalent bonds or by
        shared beads); beads are numbered chain by chain, so chain k holds a contiguous range.
    atom_bonds: atomistic bonds (i, j) (for force-map supports); constraints: constrained pairs.
    massless: indices of massless particles (virtual sites such as TIP4P's M): weight 0 in both
        maps. OpenMM's getForces() still reports a force on a virtual site after adding it to the
        parent atoms, so summing it would count it twice.
    box: (3, 3) nm periodic cell of the atomistic topology (rows a, b, c) or None.
    molecule_names: None (the CG topology has one residue per bead, named after its type) or one
        residue name per chain (one residue per molecule, e.g. a lipid; :meth:`with_molecule_names`).
    """

    def __init__(
        self,
        coordinate_map,
        force_map,
        *,
        bead_names: Sequence[str],
        bead_types: Sequence[str],
        bead_masses,
        atom_indices: Sequence[Sequence[int]],
        bead_bonds: Iterable[Tuple[int, int]] = (),
        chains: Optional[Sequence[Sequence[int]]] = None,
        atom_bonds: Iterable[Tuple[int, int]] = (),
        constraints: Iterable[Tuple[int, int]] = (),
        massless: Iterable[int] = (),
        box=None,
        force_map_kind: str = "custom",
        molecule_names: Optional[Sequence[str]] = None,
    ) -> None:
        self.coordinate_map = sp.csr_matrix(coordinate_map, dtype=np.float64)
        n_beads, n_atoms = self.coordinate_map.shape
        self.bead_names = [str(n) for n in bead_names]
        self.bead_types = [str(t) for t in bead_types]
        self.bead_masses = np.asarray(bead_masses, dtype=np.float64)
        self.atom_indices = [np.asarray(a, dtype=np.int64) for a in atom_indices]
        for what, length in (("bead_names", len(self.bead_names)), ("bead_types", len(self.bead_types)),
                             ("bead_masses", len(self.bead_masses)), ("atom_indices", len(self.atom_indices))):
            if length != n_beads:
                raise MappingError(f"{what} has {length} entries for {n_beads} beads")
        rows = np.asarray(self.coordinate_map.sum(axis=1)).ravel()
        bad = np.flatnonzero(np.abs(rows - 1.0) > 1e-8)
        if bad.size:
            raise MappingError(f"row {bad[0]} ({self.bead_names[bad[0]]}) of the coordinate map sums to {rows[bad[0]]:.8g}, not 1")
        if (self.coordinate_map.data < 0).any():
            raise MappingError("the coordinate map has negative weights; bead positions must be weighted means")
        self.bead_bonds = sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in bead_bonds})
        for i, j in self.bead_bonds:
            if i == j or not (0 <= i < n_beads and 0 <= j < n_beads):
                raise MappingError(f"bead bond ({i}, {j}) is invalid for {n_beads} beads")
        self.chains = [list(map(int, c)) for c in (chains if chains is not None else [range(n_beads)])]
        flat = [b for c in self.chains for b in c]
        if flat != list(range(n_beads)):
            raise MappingError("chains must list every bead once, chain by chain in increasing bead order")
        self.atom_bonds = sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in atom_bonds})
        self.constraints = sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in constraints})
        self.massless = sorted(int(a) for a in massless)
        self.box = None if box is None else np.asarray(box, dtype=np.float64).reshape(3, 3)
        if force_map is None:
            force_map, force_map_kind = default_force_map(
                self.coordinate_map, self.force_atoms, self.constraints, bead_labels=self._bead_labels())
        self.force_map = sp.csr_matrix(force_map, dtype=np.float64)
        self.force_map_kind = str(force_map_kind)
        self._check_force_map(self.force_map)
        self.molecule_names = None if molecule_names is None else self._checked_molecule_names(molecule_names)
        # reference atom of each bead for periodic unwrapping: its first atom of its own
        counts = np.bincount(np.concatenate(self.atom_indices), minlength=n_atoms) if n_beads else np.zeros(n_atoms, int)
        self._reference = np.array([next((a for a in atoms if counts[a] == 1), atoms[0]) for atoms in self.atom_indices], dtype=np.int64)

    # ---------------------------------------------------------------- basic properties

    @property
    def n_beads(self) -> int:
        return self.coordinate_map.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.coordinate_map.shape[1]

    @property
    def unique_types(self) -> List[str]:
        """Bead types in order of first appearance (e.g. for ``ModelConfig(types=...)``)."""
        return list(dict.fromkeys(self.bead_types))

    @property
    def force_atoms(self) -> List[np.ndarray]:
        """The atoms of each bead that a force map may use: ``atom_indices`` without the massless
        particles (virtual sites), whose force OpenMM reports although it has already added it to
        their parent atoms."""
        return _without(self.atom_indices, self.massless)

    def _check_force_map(self, force_map: sp.csr_matrix) -> None:
        if force_map.shape != self.coordinate_map.shape:
            raise ForceMapError(f"force map has shape {force_map.shape}; this mapping needs {self.coordinate_map.shape}")
        check_force_map(self.coordinate_map, force_map, atol=1e-6)
        check_constraint_cancellation(force_map, self.constraints, atol=1e-6)
        if self.massless:
            used = np.abs(force_map[:, self.massless]).sum(axis=0).A1
            if used.max() > 0:
                a = self.massless[int(np.argmax(used))]
                raise ForceMapError(
                    f"the force map uses the force on massless particle {a} (a virtual site): OpenMM's getForces() reports it "
                    "although it has already been spread onto the parent atoms, so it would be counted twice; give it weight 0"
                )

    def _bead_labels(self) -> List[str]:
        return [f"bead {k} '{n}' (type {t})" for k, (n, t) in enumerate(zip(self.bead_names, self.bead_types))]

    @property
    def graph(self) -> BondGraph:
        """The bead graph (:class:`multiscale.cg.topology.BondGraph` of ``bead_bonds``)."""
        return BondGraph(self.n_beads, self.bead_bonds)

    @property
    def bead_angles(self) -> List[Tuple[int, int, int]]:
        """Bead triples (i, j, k), j the apex, i < k, for every pair of bonds sharing bead j (sorted)."""
        return sorted(tuple(int(x) for x in angle) for angle in self.graph.angles())

    @property
    def bead_dihedrals(self) -> List[Tuple[int, int, int, int]]:
        """Bead quadruples (i, j, k, l) along bonds i–j, j–k, k–l with four distinct beads, each
        torsion listed once (in the orientation with the smaller first index), sorted."""
        out = set()
        for q in self.graph.dihedrals().tolist():
            q = tuple(q)
            out.add(min(q, q[::-1]))
        return sorted(out)

    # ---------------------------------------------------------------- mapping arrays

    @staticmethod
    def _check_finite(x: np.ndarray, what: str) -> None:
        """Refuse NaN/Inf input, naming the first frame and atom, instead of mapping it to NaN beads."""
        bad = ~np.isfinite(x)
        if bad.any():
            where = np.argwhere(bad)[0]
            place = f"frame {where[0]}, atom {where[1]}" if x.ndim == 3 else f"atom {where[0]}"
            raise ValueError(f"{what} contain NaN or Inf ({int(bad.sum())} values; first at {place}); "
                             "check the trajectory or simulation for a blow-up")

    def _apply(self, matrix: sp.csr_matrix, x, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self._check_finite(x, what)
        if x.ndim == 2 and x.shape == (self.n_atoms, 3):
            return matrix @ x
        if x.ndim == 3 and x.shape[1:] == (self.n_atoms, 3):
            t = x.shape[0]
            out = matrix @ np.moveaxis(x, 1, 0).reshape(self.n_atoms, t * 3)
            return np.moveaxis(out.reshape(self.n_beads, t, 3), 0, 1)
        raise ValueError(f"{what} must have shape ({self.n_atoms}, 3) or (T, {self.n_atoms}, 3), got {x.shape}")

    def map_positions(self, positions, box=None) -> np.ndarray:
        """Bead positions R = M_x r in nm, for (N, 3) or (T, N, 3) atom positions in nm.

        Without ``box`` the atoms of every bead must be whole (see the module docstring: OpenMM's
        getPositions() is). With ``box`` — (3, 3) rows a, b, c in nm, (T, 3, 3), or (3,) edges of a
        rectangular cell — each atom is first moved to the periodic image nearest its bead's
        reference atom, which makes wrapped input and multi-molecule beads safe."""
        if box is None:
            return self._apply(self.coordinate_map, positions, "positions (nm)")
        x = np.asarray(positions, dtype=np.float64)
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape ({self.n_atoms}, 3) or (T, {self.n_atoms}, 3), got {np.shape(positions)}")
        self._check_finite(x, "positions (nm)")
        cell = np.asarray(box, dtype=np.float64)
        if not np.all(np.isfinite(cell)):
            raise ValueError("box contains NaN or Inf; pass the periodic cell in nm")
        if cell.shape == (3,):
            cell = np.diag(cell)
        if cell.shape == (3, 3):
            cell = np.broadcast_to(cell, (x.shape[0], 3, 3))
        if cell.shape != (x.shape[0], 3, 3) or not np.all(np.linalg.det(cell) > 0):
            raise ValueError(f"box must be (3,), (3, 3) or ({x.shape[0]}, 3, 3) in nm with positive volume, got {np.shape(box)}")
        coo = self.coordinate_map.tocoo()
        ref = self._reference[coo.row]
        d = x[:, coo.col, :] - x[:, ref, :]
        frac = np.einsum("tnk,tkl->tnl", d, np.linalg.inv(cell))
        d -= np.einsum("tnk,tkl->tnl", np.round(frac), cell)
        gather = sp.csr_matrix((coo.data, (coo.row, np.arange(coo.nnz))), shape=(self.n_beads, coo.nnz))
        shift = gather @ np.moveaxis(d, 1, 0).reshape(coo.nnz, -1)
        out = x[:, self._reference, :] + np.moveaxis(shift.reshape(self.n_beads, x.shape[0], 3), 0, 1)
        return out[0] if single else out

    def map_forces(self, forces) -> np.ndarray:
        """Bead forces F = M_f f in kJ/mol/nm, for (N, 3) or (T, N, 3) atomic forces in kJ/mol/nm
        (e.g. ``State.getForces(asNumpy=True)``; constraint forces need not be included when the
        force map is constraint-aware)."""
        return self._apply(self.force_map, forces, "forces (kJ/mol/nm)")

    # ---------------------------------------------------------------- force maps

    def _checked_molecule_names(self, names) -> List[str]:
        names = [str(n) for n in names]
        if len(names) != len(self.chains):
            raise MappingError(f"{len(names)} molecule names for {len(self.chains)} chains (molecules); give one per chain")
        bad = sorted({n for n in names if not n or len(n) > 3})
        if bad:
            raise MappingError(f"molecule names {bad} must have 1 to 3 characters (PDB residue names; e.g. DMP for DMPC)")
        return names

    def with_molecule_names(self, names: Sequence[str]) -> "Mapping":
        """A copy whose CG topology has one residue per molecule (chain), named ``names[k]``
        (e.g. "DMP" for every DMPC lipid, as OpenMM's patches name them), instead of one residue per bead."""
        out = copy.copy(self)
        out.molecule_names = self._checked_molecule_names(names)
        return out

    def with_force_map(self, force_map, kind: str = "custom") -> "Mapping":
        """A copy of this mapping using ``force_map`` (checked: M_f M_xᵀ = I and constraint equalities)."""
        force_map = sp.csr_matrix(force_map, dtype=np.float64)
        self._check_force_map(force_map)
        out = copy.copy(self)
        out.force_map, out.force_map_kind = force_map, str(kind)
        return out

    def optimal_force_map(self, forces, *, neighbors: int = 0, ridge: float = 1e-8) -> OptimalForceMap:
        """Minimum-noise force map for sampled atomistic ``forces`` (T, N, 3) kJ/mol/nm; see
        :func:`multiscale.cg.optimal_force_map`. Use ``mapping.with_force_map(result.force_map,
        "optimal")`` to adopt it."""
        return optimal_force_map(
            self.coordinate_map, self.force_atoms, forces, constraints=self.constraints, bonds=self.atom_bonds,
            neighbors=neighbors, ridge=ridge, baseline=self.force_map, exclude=self.massless, bead_labels=self._bead_labels(),
        )

    def with_optimal_force_map(self, train_forces, held_out_forces, *, neighbors: int = 0,
                               ridge: float = 1e-8) -> Tuple["Mapping", Dict[str, Any]]:
        """Adopt the minimum-noise force map fitted on ``train_forces`` (T, N, 3) kJ/mol/nm and
        measure it on ``held_out_forces`` (frames the fit never saw). Returns the new mapping and
        ``{"kind": "optimal", "neighbors", "mean_square_reduction_in_sample",
        "mean_square_reduction_held_out"}``: the fraction by which the mean-square bead force drops
        below the current map's (dimensionless; the held-out one is the honest figure)."""
        held_out = np.asarray(held_out_forces, dtype=np.float64)
        if held_out.ndim != 3 or held_out.shape[0] == 0:
            raise ValueError("held_out_forces must be (T, N, 3) kJ/mol/nm with at least one frame the fit does not use")
        optimal = self.optimal_force_map(train_forces, neighbors=neighbors, ridge=ridge)
        before = self.map_forces(held_out)
        adopted = self.with_force_map(optimal.force_map, "optimal")
        after = adopted.map_forces(held_out)
        return adopted, {"kind": "optimal", "neighbors": int(neighbors),
                         "mean_square_reduction_in_sample": optimal.reduction,
                         "mean_square_reduction_held_out": 1.0 - float((after ** 2).sum() / (before ** 2).sum())}

    # ---------------------------------------------------------------- topologies

    def cg_topology(self):
        """An OpenMM Topology of the beads (see :func:`multiscale.openmm.topology.cg_topology`,
        which builds it: this layer hands the OpenMM layer plain data)."""
        from multiscale.openmm.topology import cg_topology

        return cg_topology(self)

    def mdtraj_topology(self):
        """The CG topology as an ``mdtraj.Topology`` (beads get mdtraj's virtual element)."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self.cg_topology())

    def mapped_trajectory(self, positions, boxes=None):
        """The mapped reference as an ``mdtraj.Trajectory`` of the beads (:meth:`mdtraj_topology`):
        bead positions M_x r of atom ``positions`` (T, N, 3) nm (whole molecules, as OpenMM gives
        them), with the periodic cells ``boxes`` (T, 3, 3) nm (rows a, b, c) or None."""
        import mdtraj

        x = self.map_positions(np.asarray(positions, dtype=np.float64))
        if x.ndim == 2:
            x = x[None]
        trajectory = mdtraj.Trajectory(x, self.mdtraj_topology())
        if boxes is not None:
            cells = np.asarray(boxes, dtype=np.float64)
            if cells.shape != (x.shape[0], 3, 3):
                raise ValueError(f"boxes must be ({x.shape[0]}, 3, 3) nm, one cell per frame, got {cells.shape}")
            trajectory.unitcell_vectors = cells
        return trajectory

    # ---------------------------------------------------------------- storage

    def to_dict(self) -> Dict[str, Any]:
        """JSON-compatible dict (exact float round trip through json) holding everything."""

        def triplets(matrix):
            coo = sp.csr_matrix(matrix).tocoo()
            return {"rows": coo.row.tolist(), "cols": coo.col.tolist(), "values": coo.data.tolist()}

        return {
            "format": "multiscale.cg.Mapping",
            "version": 1,
            "n_atoms": self.n_atoms,
            "bead_names": list(self.bead_names),
            "bead_types": list(self.bead_types),
            "bead_masses": self.bead_masses.tolist(),
            "atom_indices": [a.tolist() for a in self.atom_indices],
            "bead_bonds": [list(b) for b in self.bead_bonds],
            "chains": [list(c) for c in self.chains],
            "atom_bonds": [list(b) for b in self.atom_bonds],
            "constraints": [list(c) for c in self.constraints],
            "massless": list(self.massless),
            "box": None if self.box is None else self.box.tolist(),
            "coordinate_map": triplets(self.coordinate_map),
            "force_map": triplets(self.force_map),
            "force_map_kind": self.force_map_kind,
            "molecule_names": None if self.molecule_names is None else list(self.molecule_names),
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Mapping":
        if not isinstance(data, dict) or data.get("format") != "multiscale.cg.Mapping":
            raise MappingError("not a stored multiscale.cg.Mapping (missing format: multiscale.cg.Mapping)")
        if data.get("version") != 1:
            raise MappingError(f"stored mapping version {data.get('version')!r} is not supported (this code reads version 1)")
        shape = (len(data["bead_names"]), int(data["n_atoms"]))

        def matrix(d):
            return sp.csr_matrix((d["values"], (d["rows"], d["cols"])), shape=shape)

        return cls(
            matrix(data["coordinate_map"]), matrix(data["force_map"]),
            bead_names=data["bead_names"], bead_types=data["bead_types"], bead_masses=data["bead_masses"],
            atom_indices=data["atom_indices"], bead_bonds=[tuple(b) for b in data["bead_bonds"]], chains=data["chains"],
            atom_bonds=[tuple(b) for b in data["atom_bonds"]], constraints=[tuple(c) for c in data["constraints"]],
            massless=data.get("massless", []), box=data["box"], force_map_kind=data.get("force_map_kind", "custom"),
            molecule_names=data.get("molecule_names"),
        )

    def save(self, path: Union[str, Path]) -> None:
        """Write the mapping as JSON (store it next to, or inside, a model checkpoint), atomically."""
        from multiscale.atomic import atomic_write_json

        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Mapping":
        with open(path) as handle:
            return cls.from_dict(json.load(handle))

    def __repr__(self) -> str:
        return (f"Mapping({self.n_atoms} atoms -> {self.n_beads} beads, types {self.unique_types}, "
                f"{len(self.bead_bonds)} bonds, {len(self.chains)} chains, force map: {self.force_map_kind})")

