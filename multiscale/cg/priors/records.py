"""Fitted prior records: one bond, angle, dihedral or repulsive prior per canonical bead-type
tuple, and :class:`Priors`, the set of them (stored as JSON). Units: nm, rad, kJ/mol, K."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


TypeKey = Tuple[str, ...]

_EXCLUSIONS = {"1-2": 1, "1-3": 2, "1-4": 3}
_REPULSIVE_FORMS = ("r12", "wca")
_UNITS = {"bond": ("nm", "kJ/mol/nm^2"), "angle": ("rad", "kJ/mol/rad^2")}


def canonical_key(types: Sequence[str]) -> TypeKey:
    """The canonical type tuple: the smaller (lexicographically) of the tuple and its reverse.

    Bonds (A, B) ≡ (B, A), angles (A, B, C) ≡ (C, B, A), dihedrals (A, B, C, D) ≡ (D, C, B, A),
    non-bonded pairs (A, B) ≡ (B, A). Bond lengths, angles and dihedral angles are all invariant
    under reversing the index order, so both orders share one prior.
    """
    forward = tuple(str(t) for t in types)
    return min(forward, forward[::-1])


def _label(kind: str, types: Sequence[str]) -> str:
    return f"{kind} type ({', '.join(types)})"


@dataclass
class BondPrior:
    """U(r) = ½ k (r − r0)²; k in kJ mol⁻¹ nm⁻², r0 in nm."""

    types: TypeKey
    k: float
    r0: float
    n_samples: int = 0

    def energy(self, r: np.ndarray) -> np.ndarray:
        """Energy in kJ/mol at distances ``r`` (nm)."""
        return 0.5 * self.k * (np.asarray(r, dtype=float) - self.r0) ** 2


@dataclass
class AnglePrior:
    """U(θ) = ½ k (θ − θ0)²; k in kJ mol⁻¹ rad⁻², theta0 in rad."""

    types: TypeKey
    k: float
    theta0: float
    n_samples: int = 0

    def energy(self, theta: np.ndarray) -> np.ndarray:
        """Energy in kJ/mol at angles ``theta`` (rad)."""
        return 0.5 * self.k * (np.asarray(theta, dtype=float) - self.theta0) ** 2


@dataclass
class DihedralPrior:
    """U(φ) = Σ k_n [1 + cos(n φ − phase_n)] (OpenMM PeriodicTorsionForce); terms (n, phase rad, k kJ/mol)."""

    types: TypeKey
    terms: List[Tuple[int, float, float]]
    n_samples: int = 0

    def energy(self, phi: np.ndarray) -> np.ndarray:
        """Energy in kJ/mol at dihedral angles ``phi`` (rad)."""
        phi = np.asarray(phi, dtype=float)
        total = np.zeros_like(phi)
        for n, phase, k in self.terms:
            total = total + k * (1.0 + np.cos(n * phi - phase))
        return total


@dataclass
class RepulsivePrior:
    """Purely repulsive pair prior of form "r12" or "wca" (module docstring); sigma nm, epsilon kJ/mol."""

    types: TypeKey
    sigma: float
    epsilon: float
    n_contacts: int = 0

    def energy(self, r: np.ndarray, form: str, cutoff_nm: float) -> np.ndarray:
        """Energy in kJ/mol at distances ``r`` (nm) for ``form`` with the cutoff ``cutoff_nm`` (nm)."""
        r = np.asarray(r, dtype=float)
        x = self.sigma / r
        if form == "r12":
            value = self.epsilon * (x**12 - (self.sigma / cutoff_nm) ** 12)
            return np.where(r < cutoff_nm, value, 0.0)
        if form == "wca":
            value = 4.0 * self.epsilon * (x**12 - x**6) + self.epsilon
            return np.where(r < 2.0 ** (1.0 / 6.0) * self.sigma, value, 0.0)
        raise ValueError(f"unknown repulsive form {form!r}; expected one of {_REPULSIVE_FORMS}")


@dataclass
class Priors:
    """All fitted priors of one CG model (kJ/mol, nm, rad), keyed by canonical type tuples.

    ``temperature_K`` (K) is the temperature of the fit; ``exclusion`` the bonded-separation rule
    of the non-bonded prior; ``repulsive_form`` its functional form; ``cutoff_nm`` (nm) the cutoff
    the contacts were searched within. ``to_dict``/``from_dict`` give a JSON-safe round trip.
    """

    temperature_K: float
    exclusion: str = "1-3"
    repulsive_form: str = "r12"
    cutoff_nm: float = 1.0
    bonds: Dict[TypeKey, BondPrior] = field(default_factory=dict)
    angles: Dict[TypeKey, AnglePrior] = field(default_factory=dict)
    dihedrals: Dict[TypeKey, DihedralPrior] = field(default_factory=dict)
    repulsive: Dict[TypeKey, RepulsivePrior] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.exclusion not in _EXCLUSIONS:
            raise ValueError(f"exclusion must be one of {sorted(_EXCLUSIONS)}, got {self.exclusion!r}")
        if self.repulsive_form not in _REPULSIVE_FORMS:
            raise ValueError(f"repulsive_form must be one of {_REPULSIVE_FORMS}, got {self.repulsive_form!r}")
        for table in (self.bonds, self.angles, self.dihedrals, self.repulsive):
            for key in list(table):
                canonical = canonical_key(key)
                if canonical != key:
                    table[canonical] = table.pop(key)
                table[canonical].types = canonical

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-safe dict (lists, floats, ints, str)."""
        return {
            "units": "nm, rad, kJ/mol, K; U = 1/2 k (x - x0)^2",
            "temperature_K": float(self.temperature_K),
            "exclusion": self.exclusion,
            "repulsive_form": self.repulsive_form,
            "cutoff_nm": float(self.cutoff_nm),
            "bonds": [
                {"types": list(p.types), "k": float(p.k), "r0": float(p.r0), "n_samples": int(p.n_samples)}
                for p in self.bonds.values()
            ],
            "angles": [
                {"types": list(p.types), "k": float(p.k), "theta0": float(p.theta0), "n_samples": int(p.n_samples)}
                for p in self.angles.values()
            ],
            "dihedrals": [
                {
                    "types": list(p.types),
                    "terms": [[int(n), float(phase), float(k)] for n, phase, k in p.terms],
                    "n_samples": int(p.n_samples),
                }
                for p in self.dihedrals.values()
            ],
            "repulsive": [
                {"types": list(p.types), "sigma": float(p.sigma), "epsilon": float(p.epsilon),
                 "n_contacts": int(p.n_contacts)}
                for p in self.repulsive.values()
            ],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Priors":
        """Inverse of :meth:`to_dict`; refuses unknown keys."""
        known = {"units", "temperature_K", "exclusion", "repulsive_form", "cutoff_nm",
                 "bonds", "angles", "dihedrals", "repulsive"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown prior field(s) {unknown}; known fields are {sorted(known)}")
        if "temperature_K" not in data:
            raise ValueError("priors lack 'temperature_K'")

        def key(entry: Dict[str, Any], width: int, what: str) -> TypeKey:
            types = tuple(str(t) for t in entry["types"])
            if len(types) != width:
                raise ValueError(f"{what} prior types {list(types)} must name {width} bead types")
            return canonical_key(types)

        bonds = {}
        for e in data.get("bonds", []):
            k = key(e, 2, "bond")
            bonds[k] = BondPrior(k, float(e["k"]), float(e["r0"]), int(e.get("n_samples", 0)))
        angles = {}
        for e in data.get("angles", []):
            k = key(e, 3, "angle")
            angles[k] = AnglePrior(k, float(e["k"]), float(e["theta0"]), int(e.get("n_samples", 0)))
        dihedrals = {}
        for e in data.get("dihedrals", []):
            k = key(e, 4, "dihedral")
            terms = [(int(n), float(ph), float(kk)) for n, ph, kk in e["terms"]]
            dihedrals[k] = DihedralPrior(k, terms, int(e.get("n_samples", 0)))
        repulsive = {}
        for e in data.get("repulsive", []):
            k = key(e, 2, "repulsive")
            repulsive[k] = RepulsivePrior(k, float(e["sigma"]), float(e["epsilon"]), int(e.get("n_contacts", 0)))
        return cls(
            temperature_K=float(data["temperature_K"]),
            exclusion=str(data.get("exclusion", "1-3")),
            repulsive_form=str(data.get("repulsive_form", "r12")),
            cutoff_nm=float(data.get("cutoff_nm", 1.0)),
            bonds=bonds, angles=angles, dihedrals=dihedrals, repulsive=repulsive,
        )


