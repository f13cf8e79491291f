"""Mapping definitions as data (YAML section ``cg_mapping``): beads of residue templates, k
monomers per bead of a polymer, one bead per molecule; checked on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np

from multiscale.config import YamlConfig


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

