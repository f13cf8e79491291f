"""Coarse-grained mappings: which atoms make which bead, written as data, and the linear maps
they define.

Units: positions in nm, forces in kJ/mol/nm, masses in amu (g/mol).

A :class:`MappingDefinition` (loadable from YAML, section ``cg_mapping``) combines three forms;
each residue name may be claimed by one of them only:

* ``residues`` — per-residue templates (:class:`ResidueTemplate`): residue name → beads, each with
  a name, a type, its atom names and weights ("mass": centre of mass, "geometry": centre of
  geometry, or an explicit list summing to 1), plus bead–bead ``bonds`` inside the residue and
  ``bonds_to_next`` to the beads of the next residue of the chain (used when that residue is
  covalently bonded to this one)::

      cg_mapping:
        residues:
          PC:
            beads:
              - {name: NC3, type: Q0, atoms: [N31, C32, C33, C34, C35], weights: mass}
              - {name: PO4, type: Qa, atoms: [P31, O32, O33, O34, O35], weights: geometry}
            bonds: [[NC3, PO4]]
            bonds_to_next: [[PO4, GL1]]

* ``polymers`` — k monomers per bead (:class:`PolymerRule`): along every chain made of the rule's
  residues (one residue = one monomer), each run of ``monomers_per_bead`` consecutive residues is
  one bead, consecutive beads are bonded, end beads may get their own type.
* ``molecules`` — one bead per small molecule (:class:`MoleculeRule`): per residue, or per
  covalently connected group of the rule's residues, e.g. one bead per water.

:func:`build_mapping` applies a definition to an OpenMM (or mdtraj) Topology and returns a
:class:`Mapping` holding M_x, M_f, the bead names/types/masses, the bead bond graph and chains.

Periodic boundaries. A centre of mass is only meaningful for a whole bead. OpenMM keeps the
coordinates it integrates unwrapped: ``State.getPositions()`` (without ``enforcePeriodicBox=True``)
returns every molecule whole if it started whole, and so do Modeller/PDBFile positions of
standard inputs. Beads inside one molecule can therefore be mapped with ``map_positions(x)``.
Beads made of several molecules (e.g. four waters per bead), or wrapped input (DCD frames written
with ``enforcePeriodicBox``), need ``map_positions(x, box)``: each atom is first shifted to the
periodic image nearest the bead's reference atom (its first atom of its own). That is exact as
long as each bead's atoms lie within half the smallest box width of that atom, which holds for
any sensible bead, and needs no bond-graph traversal.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
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
from multiscale.config import YamlConfig

__all__ = [
    "BeadDefinition",
    "Mapping",
    "MappingDefinition",
    "MappingError",
    "MoleculeRule",
    "PolymerRule",
    "ResidueTemplate",
    "WEIGHT_MODES",
    "build_mapping",
    "constraints_of",
    "masses_of",
]

#: Named weighting schemes of a bead's coordinate: centre of mass or centre of geometry.
WEIGHT_MODES = ("mass", "geometry")

class MappingError(ValueError):
    """A mapping definition that does not fit the topology, or an inconsistent mapping."""


def _check_mode(weights: str, where: str, allow_list: bool) -> None:
    if weights not in WEIGHT_MODES:
        extra = " or an explicit list of numbers summing to 1" if allow_list else ""
        raise ValueError(f"{where}: weights must be one of {WEIGHT_MODES}{extra}, got {weights!r}")


def _name_list(value, what: str, where: str) -> List[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: {what} must be a list of names, got {value!r}")
    return [str(v) for v in value]


def _pairs(value, where: str) -> List[List[str]]:
    out = []
    for pair in value or []:
        if isinstance(pair, str) or len(pair) != 2:
            raise ValueError(f"{where}: each bond is a pair of bead names like [B1, B2], got {pair!r}")
        out.append([str(pair[0]), str(pair[1])])
    return out


@dataclass
class BeadDefinition(YamlConfig):
    """One bead of a residue template.

    Attributes
    ----------
    name: bead name, unique within the residue (atom name of the bead in the CG topology).
    atoms: atom names of the residue that make the bead.
    type: bead type (the particle type a CG model sees); defaults to ``name``.
    weights: "mass" (centre of mass), "geometry" (centre of geometry), or one non-negative
        number per atom summing to 1 within 1e-6 (coordinate-map row M_x[I]; renormalised to
        an exact sum).
    """

    DESCRIPTION = "bead option"

    name: str
    atoms: List[str]
    type: Optional[str] = None
    weights: Union[str, List[float]] = "mass"

    def __post_init__(self) -> None:
        self.name = str(self.name)
        if not self.name:
            raise ValueError("a bead needs a non-empty name")
        where = f"bead {self.name!r}"
        self.type = self.name if self.type is None else str(self.type)
        if not self.type:
            raise ValueError(f"{where}: type must be a non-empty string")
        self.atoms = _name_list(self.atoms, "atoms", where)
        if not self.atoms:
            raise ValueError(f"{where} is empty (atoms: []); list the atom names it holds, or delete the bead")
        repeated = sorted({a for a in self.atoms if self.atoms.count(a) > 1})
        if repeated:
            raise ValueError(f"{where} lists atom(s) {repeated} more than once; list each atom once")
        if isinstance(self.weights, str):
            _check_mode(self.weights, where, allow_list=True)
            return
        try:
            weights = [float(w) for w in self.weights]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: weights must be 'mass', 'geometry' or a list of numbers, got {self.weights!r}") from None
        if len(weights) != len(self.atoms):
            raise ValueError(f"{where}: {len(weights)} weights for {len(self.atoms)} atoms {self.atoms}; give one weight per atom")
        if not all(np.isfinite(weights)):
            raise ValueError(f"{where}: weights contain NaN or Inf")
        negative = [a for a, w in zip(self.atoms, weights) if w < 0]
        if negative:
            raise ValueError(f"{where}: negative weight(s) for atom(s) {negative}; coordinate weights must be >= 0")
        total = sum(weights)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"{where}: weights sum to {total:.8g}, not 1, so the bead would not sit at a weighted mean of "
                f"its atoms; divide them by {total:.8g} or use 'mass'/'geometry'"
            )
        self.weights = [w / total for w in weights]  # exact row sums; the change is below 1e-6


@dataclass
class ResidueTemplate(YamlConfig):
    """The beads of one residue name.

    Attributes
    ----------
    beads: the beads (:class:`BeadDefinition` or dicts of their options).
    bonds: bead–bead bonds inside the residue, as pairs of bead names.
    bonds_to_next: bonds from a bead of this residue to a bead of the next residue of the chain,
        as [this-residue bead, next-residue bead]; applied when the next residue (topology order,
        same chain) is covalently bonded to this one, whatever rule maps that residue.
    """

    DESCRIPTION = "residue template option"

    beads: List[BeadDefinition]
    bonds: List[List[str]] = field(default_factory=list)
    bonds_to_next: List[List[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.beads, (list, tuple)) or not self.beads:
            raise ValueError("a residue template needs a non-empty list of beads")
        beads = []
        for k, bead in enumerate(self.beads):
            if isinstance(bead, BeadDefinition):
                beads.append(bead)
                continue
            try:
                beads.append(BeadDefinition.from_dict(bead))
            except (TypeError, ValueError) as err:
                raise ValueError(f"beads[{k}]: {err}") from None
        self.beads = beads
        names = [b.name for b in beads]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"bead name(s) {repeated} used more than once; bead names must be unique within a residue")
        self.bonds = _pairs(self.bonds, "bonds")
        self.bonds_to_next = _pairs(self.bonds_to_next, "bonds_to_next")
        for a, b in self.bonds:
            for n in (a, b):
                if n not in names:
                    raise ValueError(f"bond [{a}, {b}] names bead {n!r}, which is not among this residue's beads {names}")
            if a == b:
                raise ValueError(f"bond [{a}, {b}] joins a bead to itself")
        for a, _ in self.bonds_to_next:
            if a not in names:
                raise ValueError(f"bonds_to_next entry [{a}, ...]: the first name must be a bead of this residue {names}")


@dataclass
class PolymerRule(YamlConfig):
    """k monomers per bead along polymer chains.

    A chain is a set of residues named in ``residues`` that are covalently bonded to one another
    (the Topology must carry the inter-residue bonds), ordered by residue index, each residue bonded
    to the next. Every consecutive ``monomers_per_bead`` residues form one bead; consecutive beads
    are bonded.

    Attributes
    ----------
    residues: residue names of the monomers.
    monomers_per_bead: k ≥ 1.
    bead_type: type of the middle beads.
    end_bead_type: type of the first and last bead of each chain (default: ``bead_type``).
    remainder_bead_type: type of a short last bead (default: as any last bead).
    bead_name: name of every bead in the CG topology (default: the bead's type).
    weights: "mass" or "geometry".
    allow_remainder: a chain of n residues with n mod k = r ≠ 0 is refused unless this is True;
        then the last bead (highest residue indices) holds the remaining r < k monomers, so it is
        lighter than the others, and its bonds and angles have other statistics: give it its own
        ``remainder_bead_type`` when training.
    """

    DESCRIPTION = "polymer rule option"

    residues: List[str]
    monomers_per_bead: int
    bead_type: str = "M"
    end_bead_type: Optional[str] = None
    remainder_bead_type: Optional[str] = None
    bead_name: Optional[str] = None
    weights: str = "mass"
    allow_remainder: bool = False

    def __post_init__(self) -> None:
        self.residues = _name_list(self.residues, "residues", "polymer rule")
        if not self.residues:
            raise ValueError("polymer rule: residues is empty; name the monomer residues, e.g. [CH2, CH3]")
        if isinstance(self.monomers_per_bead, bool) or int(self.monomers_per_bead) != self.monomers_per_bead or self.monomers_per_bead < 1:
            raise ValueError(f"polymer rule: monomers_per_bead must be an integer >= 1, got {self.monomers_per_bead!r}")
        self.monomers_per_bead = int(self.monomers_per_bead)
        _check_mode(self.weights, "polymer rule", allow_list=False)
        for name in ("bead_type", "end_bead_type", "remainder_bead_type", "bead_name"):
            value = getattr(self, name)
            if value is not None and not str(value):
                raise ValueError(f"polymer rule: {name} must be a non-empty string")
        self.allow_remainder = bool(self.allow_remainder)


@dataclass
class MoleculeRule(YamlConfig):
    """One bead per small molecule.

    Attributes
    ----------
    residues: residue names it applies to, e.g. [HOH].
    bead_type: the bead type, e.g. W.
    bead_name: bead name in the CG topology (default: ``bead_type``).
    per: "residue" (one bead per residue) or "molecule" (one bead per covalently connected group
        of these residues).
    weights: "mass" or "geometry".
    """

    DESCRIPTION = "molecule rule option"

    residues: List[str]
    bead_type: str
    bead_name: Optional[str] = None
    per: str = "residue"
    weights: str = "mass"

    def __post_init__(self) -> None:
        self.residues = _name_list(self.residues, "residues", "molecule rule")
        if not self.residues:
            raise ValueError("molecule rule: residues is empty; name the residues, e.g. [HOH]")
        if self.per not in ("residue", "molecule"):
            raise ValueError(f"molecule rule: per must be 'residue' or 'molecule', got {self.per!r}")
        _check_mode(self.weights, "molecule rule", allow_list=False)
        if not str(self.bead_type):
            raise ValueError("molecule rule: bead_type must be a non-empty string")


@dataclass
class MappingDefinition(YamlConfig):
    """A CG mapping as data: residue templates, polymer rules and molecule rules (see the module
    docstring). A residue name may be claimed by one template or rule only."""

    SECTION = "cg_mapping"
    DESCRIPTION = "CG mapping option"

    residues: Dict[str, ResidueTemplate] = field(default_factory=dict)
    polymers: List[PolymerRule] = field(default_factory=list)
    molecules: List[MoleculeRule] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.residues, dict):
            raise ValueError("residues must map residue names to templates, e.g. {HOH: {beads: [...]}}")
        templates = {}
        for name, template in self.residues.items():
            try:
                templates[str(name)] = template if isinstance(template, ResidueTemplate) else ResidueTemplate.from_dict(template)
            except (TypeError, ValueError) as err:
                raise ValueError(f"residue template {name!r}: {err}") from None
        self.residues = templates
        self.polymers = [self._rule(PolymerRule, r, f"polymers[{k}]") for k, r in enumerate(self.polymers or [])]
        self.molecules = [self._rule(MoleculeRule, r, f"molecules[{k}]") for k, r in enumerate(self.molecules or [])]
        if not (self.residues or self.polymers or self.molecules):
            raise ValueError("the mapping definition is empty; give residues (templates), polymers or molecules")
        claimed: Dict[str, str] = {name: f"residue template {name!r}" for name in self.residues}
        for kind, rules in (("polymers", self.polymers), ("molecules", self.molecules)):
            for k, rule in enumerate(rules):
                for name in rule.residues:
                    if name in claimed:
                        raise ValueError(f"residue {name!r} is claimed by both {claimed[name]} and {kind}[{k}]; each residue name may have one rule")
                    claimed[name] = f"{kind}[{k}]"

    @staticmethod
    def _rule(cls, value, where):
        if isinstance(value, cls):
            return value
        try:
            return cls.from_dict(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None


# --------------------------------------------------------------------------------------------
# Helpers on OpenMM objects
# --------------------------------------------------------------------------------------------


def constraints_of(system) -> List[Tuple[int, int]]:
    """The constrained atom pairs (i, j) of an ``openmm.System`` (rigid water, HBonds, ...)."""
    return [tuple(int(x) for x in system.getConstraintParameters(k)[:2]) for k in range(system.getNumConstraints())]


def plain(quantity, unit_out: str) -> np.ndarray:
    """Plain float64 numbers in ``unit_out`` ("dalton", "nanometers") of an ``openmm.unit``
    Quantity as OpenMM returns them, converted by mdtraj's unit module: this layer reads OpenMM
    objects handed to it but imports no OpenMM. Plain numbers pass through (already in unit_out)."""
    if hasattr(quantity, "unit") and hasattr(quantity, "value_in_unit"):
        from mdtraj.utils import in_units_of

        values = np.asarray(quantity.value_in_unit(quantity.unit), dtype=np.float64)
        return np.asarray(in_units_of(values, quantity.unit.get_name(), unit_out), dtype=np.float64)
    return np.asarray(quantity, dtype=np.float64)


def masses_of(system) -> np.ndarray:
    """Particle masses of an ``openmm.System`` in amu, as an (N,) float64 array (0 for virtual sites)."""
    return np.array([float(plain(system.getParticleMass(k), "dalton")) for k in range(system.getNumParticles())])


def _as_openmm_topology(topology):
    if hasattr(topology, "to_openmm"):  # mdtraj.Topology
        return topology.to_openmm()
    if all(hasattr(topology, name) for name in ("atoms", "residues", "chains", "bonds", "getPeriodicBoxVectors")):
        return topology  # an openmm.app.Topology (duck-typed: read, not built, here)
    raise TypeError(f"expected an openmm.app.Topology or mdtraj.Topology, got {type(topology).__name__}")


def _residue_label(res) -> str:
    return f"residue {res.name} {res.id} (index {res.index}, chain {res.chain.id})"


def _atom_label(atom) -> str:
    return f"atom {atom.index} '{atom.name}' of residue {atom.residue.name} {atom.residue.id} (chain {atom.residue.chain.id})"


@dataclass
class _Bead:
    name: str
    type: str
    atoms: List[int]
    weights: Union[str, List[float]]
    origin: str
    residues: List[int]


# --------------------------------------------------------------------------------------------
# Mapping
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# build_mapping
# --------------------------------------------------------------------------------------------


def _components(n: int, edges: Iterable[Tuple[int, int]]) -> np.ndarray:
    from scipy.sparse.csgraph import connected_components

    edges = list(edges)
    if not edges:
        return np.arange(n)
    i, j = np.array(edges).T
    return connected_components(sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)[1]


def _without(atom_indices: Sequence[Sequence[int]], excluded: Iterable[int]) -> List[np.ndarray]:
    excluded = np.asarray(sorted(excluded), dtype=np.int64)
    return [np.asarray(a, dtype=np.int64)[~np.isin(a, excluded)] for a in atom_indices]


class _Labels:
    """Lazy list of labels for error messages (built only when one is needed)."""

    def __init__(self, make):
        self._make = make

    def __getitem__(self, k: int) -> str:
        return self._make(int(k))


def _overlap_matcher(allowed_overlaps):
    indices, names = set(), set()
    for entry in allowed_overlaps or ():
        if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            indices.add(int(entry))
        elif isinstance(entry, str) and entry.count(":") == 1:
            names.add(tuple(entry.split(":")))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            names.add((str(entry[0]), str(entry[1])))
        else:
            raise ValueError(f"allowed_overlaps entry {entry!r}: give an atom index, 'RESNAME:ATOMNAME' or (resname, atomname)")
    return lambda atom: atom.index in indices or (atom.residue.name, atom.name) in names


def build_mapping(
    topology,
    definition: Union[MappingDefinition, Dict[str, Any], str, Path],
    *,
    constraints=None,
    masses=None,
    allow_unmapped: bool = False,
    allowed_overlaps=None,
) -> Mapping:
    """Apply a mapping definition to a topology.

    Parameters
    ----------
    topology: ``openmm.app.Topology`` or ``mdtraj.Topology`` (converted with ``to_openmm()``).
    definition: :class:`MappingDefinition`, a dict of its options, or a YAML file path.
    constraints: constrained atom pairs, e.g. ``constraints_of(system)``, or the ``openmm.System``
        itself; the force map is then made to cancel the constraint forces that getForces() omits
        (or the mapping is refused with the reason when that is impossible).
    masses: (N,) atom masses in amu, or an ``openmm.System`` to take them from; default from the elements, with
        atoms without element (virtual sites, e.g. TIP4P's M) massless. Massless particles get
        weight 0 in M_x ("geometry" averages over the bead's massive atoms; explicit weights on
        them must be 0) and in M_f (their reported force is already on their parent atoms).
    allow_unmapped: leave atoms (and residues no rule claims, e.g. solvent) out of every bead
        instead of refusing; their forces are then ignored by the force map.
    allowed_overlaps: atoms that may belong to several beads, as atom indices,
        'RESNAME:ATOMNAME' strings or (resname, atomname) pairs. A shared atom counts with its full
        weight in each bead's coordinate and with 1/(number of its beads) of its mass in the bead
        masses; the force map is then the constraint-aware least-change map.
    """
    top = _as_openmm_topology(topology)
    if isinstance(definition, (str, Path)):
        definition = MappingDefinition.from_yaml(definition)
    elif isinstance(definition, dict):
        definition = MappingDefinition.from_dict(definition.get(MappingDefinition.SECTION, definition))
    elif not isinstance(definition, MappingDefinition):
        raise TypeError(f"definition must be a MappingDefinition, dict or YAML path, got {type(definition).__name__}")

    atoms = list(top.atoms())
    residues = list(top.residues())
    n_atoms = len(atoms)
    if hasattr(constraints, "getNumConstraints"):
        constraints = constraints_of(constraints)
    if hasattr(masses, "getParticleMass"):
        masses = masses_of(masses)
    if masses is None:
        mass = np.array([0.0 if a.element is None else float(plain(a.element.mass, "dalton")) for a in atoms])
    else:
        mass = np.asarray(masses, dtype=np.float64)
        if mass.shape != (n_atoms,) or not np.all(np.isfinite(mass)) or (mass < 0).any():
            raise ValueError(f"masses must be {n_atoms} non-negative finite values in amu, got shape {mass.shape}")
    atom_bonds = [(a.index, b.index) for a, b in top.bonds()]
    residue_bonds = {(min(a.residue.index, b.residue.index), max(a.residue.index, b.residue.index))
                     for a, b in top.bonds() if a.residue.index != b.residue.index}

    rule_of: Dict[str, Tuple[str, Any]] = {name: ("template", t) for name, t in definition.residues.items()}
    for rule in definition.polymers:
        rule_of.update({name: ("polymer", rule) for name in rule.residues})
    for rule in definition.molecules:
        rule_of.update({name: ("molecule", rule) for name in rule.residues})
    missing = [r for r in residues if r.name not in rule_of]
    if missing and not allow_unmapped:
        names = sorted({r.name for r in missing})
        raise MappingError(
            f"{_residue_label(missing[0])} has no template or rule ({len(missing)} residue(s) named {names} have none); "
            f"add a residue template, polymer or molecule rule for {names}, or pass allow_unmapped=True to leave them out"
        )

    beads: List[_Bead] = []

    def grouped(rule) -> List[List[int]]:
        """Residues of ``rule`` grouped into covalently connected sets (sorted by index)."""
        members = [r.index for r in residues if rule_of.get(r.name, (None, None))[1] is rule]
        local = {r: k for k, r in enumerate(members)}
        labels = _components(len(members), [(local[a], local[b]) for a, b in residue_bonds if a in local and b in local])
        groups: Dict[int, List[int]] = {}
        for r, lab in zip(members, labels):
            groups.setdefault(int(lab), []).append(r)
        return list(groups.values())

    def residue_atoms(indices: Sequence[int]) -> List[int]:
        return [a.index for r in indices for a in residues[r].atoms()]

    for rule in definition.polymers:
        k = rule.monomers_per_bead
        for chain in grouped(rule):
            for a, b in zip(chain, chain[1:]):
                if (a, b) not in residue_bonds:
                    raise MappingError(
                        f"polymer chain {[residues[r].name + residues[r].id for r in chain][:6]}...: {_residue_label(residues[a])} "
                        f"is not bonded to the next residue {_residue_label(residues[b])}; the polymer rule needs a linear "
                        "chain in topology order (renumber the residues along the chain)"
                    )
            n_res, remainder = len(chain), len(chain) % k
            if remainder and not rule.allow_remainder:
                raise MappingError(
                    f"polymer chain starting at {_residue_label(residues[chain[0]])} has {n_res} monomers, not a multiple "
                    f"of monomers_per_bead={k} (remainder {remainder}); set allow_remainder: true to make the last bead "
                    f"hold {remainder} monomer(s), or choose monomers_per_bead dividing {n_res}. (If these residues "
                    "belong to longer chains, the Topology lacks the bonds between them.)"
                )
            runs = [chain[s:s + k] for s in range(0, n_res, k)]
            for pos, run in enumerate(runs):
                end = pos == 0 or pos == len(runs) - 1
                bead_type = rule.end_bead_type if end and rule.end_bead_type else rule.bead_type
                if pos == len(runs) - 1 and len(run) < k and rule.remainder_bead_type:
                    bead_type = rule.remainder_bead_type
                beads.append(_Bead(rule.bead_name or bead_type, bead_type, residue_atoms(run), rule.weights,
                                   f"polymer bead {pos} of the chain at {_residue_label(residues[run[0]])}", list(run)))

    for rule in definition.molecules:
        groups = grouped(rule) if rule.per == "molecule" else [[r.index] for r in residues if rule_of.get(r.name, (None, None))[1] is rule]
        for group in groups:
            beads.append(_Bead(rule.bead_name or rule.bead_type, rule.bead_type, residue_atoms(group), rule.weights,
                               f"molecule bead of {_residue_label(residues[group[0]])}", list(group)))

    template_beads: Dict[int, Dict[str, int]] = {}
    for res in residues:
        kind, template = rule_of.get(res.name, (None, None))
        if kind != "template":
            continue
        by_name: Dict[str, List[int]] = {}
        for atom in res.atoms():
            by_name.setdefault(atom.name, []).append(atom.index)
        for bead in template.beads:
            indices = []
            for name in bead.atoms:
                found = by_name.get(name, [])
                if not found:
                    raise MappingError(
                        f"template {res.name!r} bead {bead.name!r} lists atom {name!r}, which {_residue_label(res)} lacks "
                        f"(it has {sorted(by_name)}); fix the atom name in the template or the topology"
                    )
                if len(found) > 1:
                    raise MappingError(f"{_residue_label(res)} has {len(found)} atoms named {name!r}; atom names must be unique within a residue for templates")
                indices.append(found[0])
            template_beads.setdefault(res.index, {})[bead.name] = len(beads)
            beads.append(_Bead(bead.name, bead.type, indices, bead.weights, f"bead {bead.name!r} of {_residue_label(res)}", [res.index]))

    # ---- per-residue bead lookup and bead bonds
    beads_of_residue: Dict[int, Dict[str, int]] = {}
    for k, bead in enumerate(beads):
        for r in bead.residues:
            beads_of_residue.setdefault(r, {}).setdefault(bead.name, k)
    bonds = set()
    for k in range(len(beads) - 1):  # consecutive beads of one polymer chain
        a, b = beads[k], beads[k + 1]
        ra, rb = a.residues[-1], b.residues[0]
        kind_a = rule_of.get(residues[ra].name, (None, None))
        kind_b = rule_of.get(residues[rb].name, (None, None))
        if kind_a[0] == "polymer" and kind_a[1] is kind_b[1] and (ra, rb) in residue_bonds:
            bonds.add((k, k + 1))
    for res in residues:
        kind, template = rule_of.get(res.name, (None, None))
        if kind != "template":
            continue
        own = template_beads.get(res.index, {})
        for x, y in template.bonds:
            bonds.add((own[x], own[y]))
        if template.bonds_to_next:
            chain_res = list(res.chain.residues())
            pos = next(p for p, r in enumerate(chain_res) if r is res)
            if pos + 1 < len(chain_res):
                nxt = chain_res[pos + 1]
                if (res.index, nxt.index) in residue_bonds:
                    available = beads_of_residue.get(nxt.index, {})
                    for x, y in template.bonds_to_next:
                        if y not in available:
                            raise MappingError(
                                f"template {res.name!r} bonds_to_next [{x}, {y}]: the next residue {_residue_label(nxt)} "
                                f"has no bead named {y!r} (its beads: {sorted(available)}); fix the bead name"
                            )
                        bonds.add((own[x], available[y]))

    # ---- validation over all beads
    owners: List[List[int]] = [[] for _ in range(n_atoms)]
    for k, bead in enumerate(beads):
        if not bead.atoms:
            raise MappingError(f"{bead.origin} (type {bead.type}) is empty: its residue(s) have no atoms; remove the residue or the rule")
        for a in bead.atoms:
            owners[a].append(k)
    allowed = _overlap_matcher(allowed_overlaps)
    for atom, holders in zip(atoms, owners):
        if len(holders) > 1 and not allowed(atom):
            raise MappingError(
                f"{_atom_label(atom)} is in {len(holders)} beads ({', '.join(beads[h].origin for h in holders)}); "
                f"remove it from all but one, or declare the overlap with allowed_overlaps=['{atom.residue.name}:{atom.name}'] "
                f"(or its index {atom.index})"
            )
    unmapped = [a for a, holders in zip(atoms, owners) if not holders]
    if unmapped and not allow_unmapped:
        raise MappingError(
            f"{len(unmapped)} atom(s) are in no bead, first {_atom_label(unmapped[0])}"
            + (f" (also {', '.join(repr(a.residue.name + ':' + a.name) for a in unmapped[1:4])})" if len(unmapped) > 1 else "")
            + "; add them to a bead of the residue template, or pass allow_unmapped=True to leave them out on purpose"
        )
    for bead in beads:
        if not any(len(owners[a]) == 1 for a in bead.atoms):
            raise MappingError(
                f"{bead.origin} has no atom of its own: all its atoms {[atoms[a].name for a in bead.atoms]} are shared with other "
                "beads. Each bead needs at least one atom that belongs to it alone (otherwise M_f M_xᵀ = I has no solution); "
                "give it an unshared atom or merge it with the bead it overlaps"
            )

    # ---- coordinate map rows and masses
    rows, cols, vals, bead_mass = [], [], [], []
    for k, bead in enumerate(beads):
        idx = np.array(bead.atoms)
        massive = mass[idx] > 0
        if not massive.any():
            raise MappingError(
                f"{bead.origin} holds only massless particles {[atoms[a].name for a in idx]} (atoms without element count as "
                "massless virtual sites); pass masses=masses_of(system) for a topology without elements, or add real atoms to the bead"
            )
        if isinstance(bead.weights, list):
            w = np.array(bead.weights)
            bad = idx[(~massive) & (w > 0)]
            if bad.size:
                raise MappingError(
                    f"{bead.origin} gives weight to the massless particle {_atom_label(atoms[bad[0]])}: a virtual site is not "
                    "an independent degree of freedom; give it weight 0"
                )
        elif bead.weights == "geometry":
            w = massive / massive.sum()
        else:
            w = mass[idx] / mass[idx].sum()
        rows.extend([k] * len(idx))
        cols.extend(idx.tolist())
        vals.extend(w.tolist())
        bead_mass.append(float(sum(mass[a] / len(owners[a]) for a in idx)))

    # ---- chains: molecules joined by covalent bonds or shared beads; renumber beads chain by chain
    n_beads = len(beads)
    edges = list(atom_bonds)
    for bead in beads:
        edges.extend((bead.atoms[0], a) for a in bead.atoms[1:])
    molecule = _components(n_atoms, edges)
    bead_molecule = [int(molecule[b.atoms[0]]) for b in beads]
    first_atom = {}
    for k, m in enumerate(bead_molecule):
        first_atom[m] = min(first_atom.get(m, n_atoms), min(beads[k].atoms))
    order = sorted(range(n_beads), key=lambda k: (first_atom[bead_molecule[k]], beads[k].residues[0], k))
    new_index = {old: new for new, old in enumerate(order)}
    chains: List[List[int]] = []
    last = None
    for old in order:
        if bead_molecule[old] != last:
            chains.append([])
            last = bead_molecule[old]
        chains[-1].append(new_index[old])
    m_x = sp.csr_matrix((vals, ([new_index[r] for r in rows], cols)), shape=(n_beads, n_atoms))
    constraint_pairs = [tuple(int(x) for x in c[:2]) for c in (constraints or [])]
    for i, j in constraint_pairs:
        if not (0 <= i < n_atoms and 0 <= j < n_atoms):
            raise MappingError(f"constraint ({i}, {j}) names an atom outside the topology's 0..{n_atoms - 1}; pass constraints of this topology's System")
    atom_indices = [beads[k].atoms for k in order]
    massless = [a for a in range(n_atoms) if not mass[a] > 0]
    force_map, kind = default_force_map(
        m_x, _without(atom_indices, massless), constraint_pairs,
        atom_labels=_Labels(lambda a: _atom_label(atoms[a])),
        bead_labels=_Labels(lambda k: f"{beads[order[k]].origin} (type {beads[order[k]].type})"),
    )
    return Mapping(
        m_x,
        force_map,
        bead_names=[beads[k].name for k in order],
        bead_types=[beads[k].type for k in order],
        bead_masses=[bead_mass[k] for k in order],
        atom_indices=atom_indices,
        bead_bonds=[(new_index[a], new_index[b]) for a, b in bonds],
        chains=chains,
        atom_bonds=atom_bonds,
        constraints=constraint_pairs,
        massless=massless,
        box=None if top.getPeriodicBoxVectors() is None else plain(top.getPeriodicBoxVectors(), "nanometers"),
        force_map_kind=kind,
    )
