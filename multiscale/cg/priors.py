"""Prior potentials for coarse-grained (CG) models, fitted by Boltzmann inversion with Jacobians.

A CG network learns the *difference* between the mapped reference forces and a physical prior.
The prior keeps bonded beads at sensible distances and angles, and keeps non-bonded beads from
overlapping in regions the training data never visited (where the network is unconstrained).

Inputs are plain arrays, so this module does not depend on the mapping code:

- ``positions``: CG bead positions, shape (T, n_beads, 3) (or (n_beads, 3) for one frame), nm.
- ``boxes``: periodic cells, shape (T, 3, 3) or (3, 3), rows are the cell vectors a, b, c in nm
  (OpenMM's convention, OpenMM's reduced triclinic form); ``None`` for open boundaries.
- ``bonds`` (i, j), ``angles`` (i, j, k) with j the vertex, ``dihedrals`` (i, j, k, l): bead indices.
- ``bead_types``: one type name (str) per bead.
- ``temperature_K``: temperature of the reference ensemble in K.

Units everywhere: nm, rad, kJ/mol, K. Force constants: kJ mol⁻¹ nm⁻² (bonds), kJ mol⁻¹ rad⁻²
(angles). Every harmonic prior uses OpenMM's convention U = ½ k (x − x₀)².

Fitting rules (one prior per canonical bead-type tuple; bonds of types (A, B) and (B, A) share one)
-------------------------------------------------------------------------------------------------
**Bonds and angles: weighted least-squares parabola on the Jacobian-corrected free energy.**
Samples are histogrammed (``bins`` bins between the ``tail_quantile`` and 1 − ``tail_quantile``
quantiles; for angles that reach within 0.05 rad of π the range is closed at π, and so it is for
angles reaching within 0.2 rad of π when the few samples above their maximum are explained by the
sin θ Jacobian alone, see ``expected_angles_beyond_max``). The free energy
of bin b is ``F_b = −kBT ln[n_b / (N w_b J̄_b)]`` with the bin-averaged Jacobian J̄_b of
J(r) = r² (bonds) or J(θ) = sin θ (angles), so ``F`` is the Boltzmann inversion
U(r) = −kBT ln[P(r)/r²] and U(θ) = −kBT ln[P(θ)/sin θ] (up to a constant). Starting at the lowest
bin, the *well* is the contiguous run of occupied bins with F ≤ F_min + ``fit_window_kT``·kBT.
A parabola a x² + b x + c is fitted to F over the well with weights n_b (the inverse variance of
ln n_b for Poisson counts); k = 2a and x₀ is its vertex. This fits the well itself (not the tails
of a possibly anharmonic distribution), and it is robust for angles near 180°, where the
reweighting by 1/sin θ that a moment-based fit would need diverges.

The fit is refused (ValueError naming the type tuple and the offending number) when: any sample is
NaN/inf; fewer than ``min_samples`` samples; all samples identical; the well is open (F stays within
the window up to an edge of the sampled range: a flat, repulsive or unbound distribution; the edge at
θ = π is a geometric bound and counts as closed for angles); the well spans fewer than
``min_well_bins`` bins; the fitted k is not positive or is below ``min_bond_k`` / ``min_angle_k``;
the vertex lies outside the well. For an angle whose free energy falls all the way to θ = π (vertex
beyond π, or no minimum inside [0, π]), the parabola is refitted with θ0 = π fixed: the
least-squares fit constrained to the domain.

**Dihedrals (optional): Fourier series of PeriodicTorsionForce terms.** No Jacobian (the dihedral
measure is uniform). The histogram on [−π, π) with ``dihedral_bins`` bins gives
F_b = −kBT ln[n_b/(N w)]; a weighted (n_b) linear least-squares fit of
c + Σₙ (aₙ cos nφ + bₙ sin nφ) over the occupied bins, n in ``dihedral_periodicities``, is rewritten
as Σₙ kₙ [1 + cos(nφ − δₙ)] with kₙ = hypot(aₙ, bₙ) ≥ 0, δₙ = atan2(bₙ, aₙ) (the constant is
dropped). Dihedral angles follow the IUPAC convention used by OpenMM (cis = 0, trans = ±π).

**Repulsive non-bonded prior.** Pairs of beads not excluded by ``exclusion`` ("1-2", "1-3" or
"1-4": beads separated by at most 1, 2 or 3 bonds are excluded) interact through a purely
repulsive pair potential (energy ≥ 0, monotone decreasing, force never attractive), so all
attraction is left to the network:

- ``"r12"``: U(r) = ε[(σ/r)¹² − (σ/r_c)¹²] for r < r_c, 0 beyond (shifted to vanish at the cutoff);
- ``"wca"``: U(r) = 4ε[(σ/r)¹² − (σ/r)⁶] + ε for r < 2^(1/6) σ, 0 beyond.

ε = ``repulsive_epsilon_kT``·kBT. σ rule: for every frame and every bead i of type A, take the
distance to its nearest non-excluded bead of type B within ``nonbonded_cutoff_nm`` (minimum
image); pool these nearest-neighbour distances over frames and beads (both directions, A→B and
B→A); σ_AB is their ``repulsive_quantile`` quantile (numpy's default linear interpolation).
Nearest-neighbour distances, unlike all pair distances, do not depend on the box size or the
cutoff. (Computed from all non-excluded pairs for small systems, with vesin's cell list for large
ones; :func:`contact_distances`.) In OpenMM the "r12" shift uses the cutoff given to
:func:`multiscale.openmm.priors.priors_to_openmm`. At r = σ the prior is about ε (exactly ε for "wca", ε minus a tiny shift for "r12"), so it
is ≲ kBT over the sampled contacts and grows steeply where the data have no samples. Refused when a
type pair that occurs among non-excluded pairs has fewer than ``min_contacts`` contacts, or when
σ < ``min_sigma_nm`` (overlapping beads point to a mapping error).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from multiscale.cg.topology import BondGraph
from multiscale.config import YamlConfig
from multiscale.units import kT as _kT

TypeKey = Tuple[str, ...]

_EXCLUSIONS = {"1-2": 1, "1-3": 2, "1-4": 3}
_REPULSIVE_FORMS = ("r12", "wca")
#: Angles whose samples come within this distance of π (rad) have their histogram closed at π.
_PI_TOLERANCE = 0.05
#: ... and so do angles reaching within _PI_REACH rad of π whose missing samples above their maximum
#: are explained by the sin θ Jacobian alone (fewer than _PI_EXPECTED_BEYOND expected there at the
#: free energy of the top _PI_EDGE_WINDOW rad): short samples of a soft, near-linear angle.
_PI_REACH = 0.2
_PI_EXPECTED_BEYOND = 3.0
_PI_EDGE_WINDOW = 0.1
_UNITS = {"bond": ("nm", "kJ/mol/nm^2"), "angle": ("rad", "kJ/mol/rad^2")}


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class PriorConfig(YamlConfig):
    """Options of the prior fits (see the module docstring for the rules).

    Attributes
    ----------
    bins: histogram bins for bond and angle distributions.
    dihedral_bins: histogram bins on [−π, π) for dihedrals.
    fit_window_kT: the harmonic fit uses the well up to this many kBT above its minimum.
    tail_quantile: bond/angle histograms span the [q, 1 − q] quantiles of the samples.
    min_samples: fewest samples per type tuple for a bonded fit.
    min_well_bins: fewest histogram bins inside the fitted well.
    min_bond_k: smallest accepted bond force constant, kJ mol⁻¹ nm⁻².
    min_angle_k: smallest accepted angle force constant, kJ mol⁻¹ rad⁻².
    use_dihedrals: fit PeriodicTorsionForce priors to the dihedrals.
    dihedral_periodicities: periodicities n of the torsion Fourier series.
    use_repulsive: fit the repulsive non-bonded prior.
    repulsive_form: "r12" (shifted ε(σ/r)¹²) or "wca" (Weeks–Chandler–Andersen).
    repulsive_quantile: σ is this quantile of the nearest-neighbour contact distances.
    repulsive_epsilon_kT: ε in units of kBT.
    min_sigma_nm: smallest accepted σ, nm.
    min_contacts: fewest contact distances per non-bonded type pair.
    nonbonded_cutoff_nm: contacts are searched within this distance, nm.
    exclusion: "1-2", "1-3" or "1-4": bonded separations excluded from the non-bonded prior.
    """

    SECTION = "priors"
    DESCRIPTION = "prior option"

    bins: int = 100
    dihedral_bins: int = 72
    fit_window_kT: float = 3.0
    tail_quantile: float = 1e-4
    min_samples: int = 500
    min_well_bins: int = 5
    min_bond_k: float = 10.0
    min_angle_k: float = 1.0
    use_dihedrals: bool = False
    dihedral_periodicities: List[int] = field(default_factory=lambda: [1, 2, 3])
    use_repulsive: bool = True
    repulsive_form: str = "r12"
    repulsive_quantile: float = 0.01
    repulsive_epsilon_kT: float = 1.0
    min_sigma_nm: float = 0.1
    min_contacts: int = 50
    nonbonded_cutoff_nm: float = 1.0
    exclusion: str = "1-3"

    def __post_init__(self) -> None:
        for name in ("bins", "dihedral_bins", "min_samples", "min_well_bins", "min_contacts"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
            setattr(self, name, int(getattr(self, name)))
        if not self.fit_window_kT > 0:
            raise ValueError(f"fit_window_kT must be > 0 (in kBT), got {self.fit_window_kT!r}")
        if not 0.0 <= self.tail_quantile < 0.25:
            raise ValueError(f"tail_quantile must lie in [0, 0.25), got {self.tail_quantile!r}")
        if not 0.0 <= self.repulsive_quantile < 1.0:
            raise ValueError(f"repulsive_quantile must lie in [0, 1), got {self.repulsive_quantile!r}")
        if not self.repulsive_epsilon_kT > 0:
            raise ValueError(f"repulsive_epsilon_kT must be > 0, got {self.repulsive_epsilon_kT!r}")
        if self.repulsive_form not in _REPULSIVE_FORMS:
            raise ValueError(f"repulsive_form must be one of {_REPULSIVE_FORMS}, got {self.repulsive_form!r}")
        if self.exclusion not in _EXCLUSIONS:
            raise ValueError(f"exclusion must be one of {sorted(_EXCLUSIONS)}, got {self.exclusion!r}")
        if not self.nonbonded_cutoff_nm > 0:
            raise ValueError(f"nonbonded_cutoff_nm must be a positive distance in nm, got {self.nonbonded_cutoff_nm!r}")
        if self.nonbonded_cutoff_nm > 5.0:
            raise ValueError(
                f"nonbonded_cutoff_nm={self.nonbonded_cutoff_nm} is implausibly large; distances are in nm, not Å"
            )
        if self.min_bond_k < 0 or self.min_angle_k < 0 or self.min_sigma_nm < 0:
            raise ValueError("min_bond_k, min_angle_k and min_sigma_nm must be >= 0")
        periods = [int(n) for n in self.dihedral_periodicities]
        if not periods or min(periods) < 1 or len(set(periods)) != len(periods):
            raise ValueError(
                f"dihedral_periodicities must be distinct positive integers, got {self.dihedral_periodicities!r}"
            )
        self.dihedral_periodicities = periods


# ----------------------------------------------------------------------------------------------
# fitted parameters
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------


# geometry (minimum image, bond lengths, angles, dihedrals) lives in multiscale.cg.geometry;
# these names stay importable from here
from multiscale.cg.geometry import (  # noqa: E402,F401
    _as_boxes,
    _as_frames,
    _as_index,
    _displacements,
    bond_angles,
    bond_lengths,
    dihedral_angles,
    minimum_image,
    pair_distances,
)


def excluded_pairs(n_beads: int, bonds: Any, exclusion: str = "1-3") -> np.ndarray:
    """Bead pairs (i < j) within the bonded separation of ``exclusion``, shape (P, 2).

    "1-2": bonded pairs; "1-3": also pairs two bonds apart; "1-4": also pairs three bonds apart.
    """
    if exclusion not in _EXCLUSIONS:
        raise ValueError(f"exclusion must be one of {sorted(_EXCLUSIONS)}, got {exclusion!r}")
    return BondGraph(n_beads, _as_index(bonds, 2, "bonds", n_beads)).within(_EXCLUSIONS[exclusion])


def nonbonded_pairs(n_beads: int, bonds: Any, exclusion: str = "1-3") -> np.ndarray:
    """All bead pairs (i < j) not excluded by ``exclusion`` (see :func:`excluded_pairs`), shape (P, 2)."""
    excluded = excluded_pairs(n_beads, bonds, exclusion)
    keep = np.ones((n_beads, n_beads), dtype=bool)
    keep[np.tril_indices(n_beads)] = False
    keep[excluded[:, 0], excluded[:, 1]] = False
    i, j = np.nonzero(keep)
    return np.stack([i, j], axis=1).astype(np.int64)


def _type_codes(bead_types: Sequence[str], n_beads: int) -> Tuple[List[str], np.ndarray]:
    names = [str(t) for t in bead_types]
    if len(names) != n_beads:
        raise ValueError(f"bead_types has {len(names)} entries but there are {n_beads} beads")
    unique = sorted(set(names))
    lookup = {t: c for c, t in enumerate(unique)}
    return unique, np.array([lookup[t] for t in names], dtype=np.int64)


def nonbonded_type_pairs(bead_types: Sequence[str], bonds: Any, exclusion: str = "1-3") -> Dict[TypeKey, int]:
    """Number of non-excluded bead pairs per canonical type pair (only pairs that occur)."""
    unique, codes = _type_codes(bead_types, len(bead_types))
    counts = np.bincount(codes, minlength=len(unique))
    total: Dict[TypeKey, int] = {}
    for a in range(len(unique)):
        for b in range(a, len(unique)):
            n = counts[a] * (counts[a] - 1) // 2 if a == b else counts[a] * counts[b]
            total[(unique[a], unique[b])] = int(n)
    for i, j in excluded_pairs(len(codes), bonds, exclusion).tolist():
        total[canonical_key((unique[codes[i]], unique[codes[j]]))] -= 1
    return {k: v for k, v in total.items() if v > 0}


def contact_distances(
    positions: np.ndarray,
    bead_types: Sequence[str],
    bonds: Any,
    boxes: Optional[np.ndarray] = None,
    *,
    exclusion: str = "1-3",
    cutoff_nm: float = 1.0,
    method: str = "auto",
) -> Dict[TypeKey, np.ndarray]:
    """Nearest-neighbour contact distances (nm) per canonical type pair (A, B).

    For every frame and every bead i of type A: the minimum-image distance to the nearest bead of
    type B that is not i and not excluded from i by ``exclusion``, if it is below ``cutoff_nm``.
    The pooled values of A→B and B→A form the (A, B) entry.

    ``method``: "pairs" (all non-excluded pairs, vectorised over frames; O(T n²)), "cells" (vesin's
    O(n) cell list, one frame at a time) or "auto" ("pairs" while T·n²/2 ≤ 2·10⁷). Same result.
    """
    x = _as_frames(positions)
    n_frames, n_beads, _ = x.shape
    box = _as_boxes(boxes, n_frames)
    unique, codes = _type_codes(bead_types, n_beads)
    n_types = len(unique)
    if method == "auto":
        method = "pairs" if n_frames * n_beads * (n_beads - 1) // 2 <= 20_000_000 else "cells"
    if method not in ("pairs", "cells"):
        raise ValueError(f"method must be 'auto', 'pairs' or 'cells', got {method!r}")
    best = np.full((n_frames, n_beads, n_types), np.inf)
    if method == "pairs":
        pairs = nonbonded_pairs(n_beads, bonds, exclusion)
        chunk = max(1, 5_000_000 // max(len(pairs), 1))
        frame_index = np.arange(n_frames)[:, None]
        for start in range(0, n_frames, chunk):
            stop = min(n_frames, start + chunk)
            d = pair_distances(x[start:stop], pairs, None if box is None else box[start:stop])
            d = np.where(d < cutoff_nm, d, np.inf)
            rows = frame_index[: stop - start] + start
            for a, b in ((0, 1), (1, 0)):
                cols = np.broadcast_to(pairs[:, a], d.shape)
                kinds = np.broadcast_to(codes[pairs[:, b]], d.shape)
                np.minimum.at(best, (np.broadcast_to(rows, d.shape), cols, kinds), d)
        return _pool_contacts(best, unique, codes)

    import torch
    import vesin_torch

    excluded = excluded_pairs(n_beads, bonds, exclusion)
    excluded_keys = np.sort(excluded[:, 0] * n_beads + excluded[:, 1])
    search = vesin_torch.NeighborList(cutoff=float(cutoff_nm), full_list=True)
    for t in range(n_frames):
        points = torch.tensor(x[t], dtype=torch.float64)
        if box is None:
            i, j, d = search.compute(points=points, box=torch.zeros(3, 3, dtype=points.dtype),
                                     periodic=False, quantities="ijd", copy=True)
        else:
            cell = torch.tensor(box[t], dtype=torch.float64)
            i, j, d = search.compute(points=points, box=cell, periodic=True, quantities="ijd", copy=True)
        i, j, d = i.numpy().astype(np.int64), j.numpy().astype(np.int64), d.numpy()
        keep = (i != j) & (d < cutoff_nm)
        pair_key = np.minimum(i, j) * n_beads + np.maximum(i, j)
        if len(excluded_keys):
            keep &= ~np.isin(pair_key, excluded_keys)
        np.minimum.at(best[t], (i[keep], codes[j[keep]]), d[keep])
    return _pool_contacts(best, unique, codes)


def _pool_contacts(best: np.ndarray, unique: List[str], codes: np.ndarray) -> Dict[TypeKey, np.ndarray]:
    """Pool best[t, i, b] (nearest type-b neighbour of bead i, inf if none) per canonical type pair."""
    n_types = len(unique)
    out: Dict[TypeKey, List[np.ndarray]] = defaultdict(list)
    for a in range(n_types):
        rows = best[:, codes == a, :]
        for b in range(n_types):
            values = rows[:, :, b].ravel()
            values = values[np.isfinite(values)]
            if values.size:
                out[canonical_key((unique[a], unique[b]))].append(values)
    return {k: np.concatenate(v) for k, v in out.items()}


# ----------------------------------------------------------------------------------------------
# samples per type
# ----------------------------------------------------------------------------------------------


@dataclass
class PriorSamples:
    """Samples per canonical type tuple: bonds (nm), angles (rad), dihedrals (rad), contacts (nm).

    ``nonbonded_counts``: number of non-excluded bead pairs per type pair (pairs that need a
    repulsive prior); ``exclusion`` and ``cutoff_nm`` (nm) record how contacts were collected.
    """

    bonds: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    angles: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    dihedrals: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    contacts: Dict[TypeKey, np.ndarray] = field(default_factory=dict)
    nonbonded_counts: Dict[TypeKey, int] = field(default_factory=dict)
    exclusion: str = "1-3"
    cutoff_nm: float = 1.0


def _group(values: np.ndarray, index: np.ndarray, names: List[str]) -> Dict[TypeKey, np.ndarray]:
    groups: Dict[TypeKey, List[int]] = defaultdict(list)
    for m, row in enumerate(index.tolist()):
        groups[canonical_key([names[i] for i in row])].append(m)
    return {k: values[:, cols].ravel() for k, cols in groups.items()}


def collect_samples(
    positions: np.ndarray,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    boxes: Optional[np.ndarray] = None,
    config: Optional[PriorConfig] = None,
) -> PriorSamples:
    """Measure bonds, angles, dihedrals (if ``config.use_dihedrals``) and contacts (if
    ``config.use_repulsive``) of a CG trajectory and group them by canonical type tuple."""
    config = config or PriorConfig()
    x = _as_frames(positions)
    names = [str(t) for t in bead_types]
    _type_codes(names, x.shape[1])
    bond_idx = _as_index(bonds, 2, "bonds", x.shape[1])
    angle_idx = _as_index(angles, 3, "angles", x.shape[1])
    dihedral_idx = _as_index(dihedrals, 4, "dihedrals", x.shape[1])
    samples = PriorSamples(exclusion=config.exclusion, cutoff_nm=config.nonbonded_cutoff_nm)
    samples.bonds = _group(bond_lengths(x, bond_idx, boxes), bond_idx, names)
    samples.angles = _group(bond_angles(x, angle_idx, boxes), angle_idx, names)
    if config.use_dihedrals:
        samples.dihedrals = _group(dihedral_angles(x, dihedral_idx, boxes), dihedral_idx, names)
    if config.use_repulsive:
        samples.nonbonded_counts = nonbonded_type_pairs(names, bond_idx, config.exclusion)
        if samples.nonbonded_counts:
            samples.contacts = contact_distances(
                x, names, bond_idx, boxes, exclusion=config.exclusion, cutoff_nm=config.nonbonded_cutoff_nm
            )
    return samples


# ----------------------------------------------------------------------------------------------
# Boltzmann inversion and fits
# ----------------------------------------------------------------------------------------------


@dataclass
class Inversion:
    """A Boltzmann-inverted histogram: bin ``edges`` and ``centers`` (nm or rad), ``counts``, and
    ``free_energy`` (kJ/mol, minimum 0, NaN in empty bins)."""

    edges: np.ndarray
    centers: np.ndarray
    counts: np.ndarray
    free_energy: np.ndarray


def _bin_jacobian(kind: str, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bin average of the Jacobian: r² for bonds/contacts, sin θ for angles, 1 for dihedrals."""
    if kind in ("bond", "contact"):
        return (hi**3 - lo**3) / (3.0 * (hi - lo))
    if kind == "angle":
        return (np.cos(lo) - np.cos(hi)) / (hi - lo)
    if kind == "dihedral":
        return np.ones_like(lo)
    raise ValueError(f"unknown kind {kind!r}; expected 'bond', 'angle', 'dihedral' or 'contact'")


def boltzmann_inversion(
    samples: np.ndarray, kind: str, temperature_K: float, bins: int, value_range: Tuple[float, float]
) -> Inversion:
    """F(x) = −kBT ln[P(x)/J(x)] on a ``bins``-bin histogram over ``value_range``.

    J = r² (kind "bond"/"contact", x in nm), sin θ ("angle", rad), 1 ("dihedral", rad), averaged
    over each bin. Samples outside the range are ignored (they change F only by a constant).
    """
    x = np.asarray(samples, dtype=float).ravel()
    counts, edges = np.histogram(x, bins=int(bins), range=value_range)
    lo, hi = edges[:-1], edges[1:]
    jac = _bin_jacobian(kind, lo, hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        density = counts / (max(x.size, 1) * (hi - lo) * jac)
        free = np.where(counts > 0, -_kT(temperature_K) * np.log(density), np.nan)
    if np.any(counts > 0):
        free = free - np.nanmin(free)
    return Inversion(edges, 0.5 * (lo + hi), counts, free)


def _check_samples(samples: np.ndarray, label: str, minimum: int, unit: str) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(
            f"{label}: {bad} of {x.size} samples are NaN or infinite; remove the corrupted frames "
            "(check positions and boxes) before fitting priors"
        )
    if x.size < minimum:
        raise ValueError(
            f"{label}: only {x.size} samples, at least {minimum} are needed for a Boltzmann inversion; "
            "supply more frames (or lower PriorConfig.min_samples/min_contacts)"
        )
    if x.size and np.ptp(x) <= 0.0:
        raise ValueError(
            f"{label}: all {x.size} samples equal {x[0]:.6g} {unit}, the histogram is empty but for one bin; "
            "the geometry never fluctuates (constrained or mis-mapped beads); check the mapping and index lists"
        )
    return x


def expected_angles_beyond_max(x: np.ndarray, window: float = _PI_EDGE_WINDOW) -> float:
    """How many samples one would expect between the largest sampled angle and π if the free
    energy stayed at its value near that largest angle (rad in, a count out).

    Near π the Jacobian sin θ starves the histogram: with a flat free energy the expected count in
    [θ_max, π] is (n/w)/sin θ_e · (1 + cos θ_max), where n samples lie in the top ``window`` rad
    below θ_max (centre θ_e). A small value means the missing samples near π are explained by the
    geometry alone, so the well may be treated as bounded at π.
    """
    top = float(x.max())
    if top >= math.pi:
        return 0.0
    n = int(np.count_nonzero(x >= top - window))
    centre = top - 0.5 * window
    if math.sin(centre) <= 0.0:
        return 0.0
    return n / window / math.sin(centre) * (1.0 + math.cos(top))


def _harmonic_range(x: np.ndarray, kind: str, tail: float) -> Tuple[float, float, bool]:
    lo, hi = (float(q) for q in np.quantile(x, [tail, 1.0 - tail]))
    closed_at_pi = kind == "angle" and (
        float(x.max()) >= math.pi - _PI_TOLERANCE
        or (float(x.max()) >= math.pi - _PI_REACH and expected_angles_beyond_max(x) < _PI_EXPECTED_BEYOND)
    )
    if closed_at_pi:
        hi = math.pi
    if not hi > lo:
        lo, hi = float(x.min()), float(x.max())
    return lo, hi, closed_at_pi


def fit_harmonic(
    samples: np.ndarray,
    kind: str,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?"),
) -> Tuple[float, float]:
    """Fit ½k(x − x0)² to the well of −kBT ln[P(x)/J(x)]; returns (k, x0).

    ``kind`` "bond" (x = r in nm, J = r², k in kJ mol⁻¹ nm⁻²) or "angle" (x = θ in rad,
    J = sin θ, k in kJ mol⁻¹ rad⁻²). Rule and refusals: module docstring. ``types`` only names the
    type tuple in error messages.
    """
    if kind not in _UNITS:
        raise ValueError(f"kind must be 'bond' or 'angle', got {kind!r}")
    config = config or PriorConfig()
    unit, kunit = _UNITS[kind]
    label = _label(kind, types)
    x = _check_samples(samples, label, config.min_samples, unit)
    lo, hi, closed_at_pi = _harmonic_range(x, kind, config.tail_quantile)
    inv = boltzmann_inversion(x, kind, temperature_K, config.bins, (lo, hi))
    free, counts, centers, edges = inv.free_energy, inv.counts, inv.centers, inv.edges
    occupied = counts > 0
    reliable = counts >= 5
    pick = reliable if reliable.any() else occupied
    i0 = int(np.argmin(np.where(pick, free, np.inf)))
    window = config.fit_window_kT * _kT(temperature_K)
    left = i0
    while left > 0 and occupied[left - 1] and free[left - 1] - free[i0] <= window:
        left -= 1
    right = i0
    last = len(counts) - 1
    while right < last and occupied[right + 1] and free[right + 1] - free[i0] <= window:
        right += 1
    open_sides = []
    if left == 0:
        open_sides.append(f"lower edge {lo:.4g} {unit}")
    if right == last and not closed_at_pi:
        open_sides.append(f"upper edge {hi:.4g} {unit}")
    if open_sides:
        raise ValueError(
            f"{label}: no closed well: the Jacobian-corrected free energy stays within "
            f"{config.fit_window_kT:g} kBT of its minimum (at {centers[i0]:.4g} {unit}) up to the "
            f"{' and the '.join(open_sides)} of the sampled range; the distribution is flat, repulsive "
            "or unbound, which a harmonic prior cannot describe. Check the mapping and the bond/angle "
            "list, sample longer, or widen the data (fit_window_kT)"
        )
    n_bins = right - left + 1
    if n_bins < config.min_well_bins:
        raise ValueError(
            f"{label}: the well spans only {n_bins} histogram bins (need {config.min_well_bins}); "
            "supply more samples, or increase PriorConfig.bins"
        )
    sel = slice(left, right + 1)
    dx = centers[sel] - centers[i0]
    weights = np.sqrt(counts[sel].astype(float))
    design = np.stack([dx**2, dx, np.ones_like(dx)], axis=1)
    coef, *_ = np.linalg.lstsq(design * weights[:, None], free[sel] * weights, rcond=None)
    a, b, _ = (float(c) for c in coef)
    k = 2.0 * a
    if not np.isfinite(k) or not np.isfinite(b):
        raise ValueError(f"{label}: the parabola fit returned NaN (k={k}); check the samples")
    at_pi = False
    if closed_at_pi and (k <= 0.0 or centers[i0] - b / (2.0 * a) > math.pi):
        # The free energy falls all the way to the geometric bound θ = π (a near-linear angle): the
        # least-squares parabola with its vertex inside the domain has the vertex on the bound, so
        # refit F = a (θ − π)² + c with θ0 = π fixed.
        dpi = centers[sel] - math.pi
        design_pi = np.stack([dpi**2, np.ones_like(dpi)], axis=1)
        coef_pi, *_ = np.linalg.lstsq(design_pi * weights[:, None], free[sel] * weights, rcond=None)
        k, at_pi = 2.0 * float(coef_pi[0]), True
    if k <= 0.0:
        raise ValueError(
            f"{label}: fitted force constant k = {k:.4g} {kunit} is not positive: the free energy has no "
            "minimum here; check the mapping and the bond/angle list"
        )
    if k < (config.min_bond_k if kind == "bond" else config.min_angle_k):
        floor = config.min_bond_k if kind == "bond" else config.min_angle_k
        raise ValueError(
            f"{label}: fitted force constant k = {k:.4g} {kunit} is below the floor {floor:g} {kunit} "
            f"(harmonic width sqrt(kBT/k) = {math.sqrt(_kT(temperature_K) / k):.3g} {unit}); the distribution "
            "is too broad for a harmonic prior; check the mapping, or lower PriorConfig.min_bond_k/min_angle_k"
        )
    x0 = math.pi if at_pi else centers[i0] - b / (2.0 * a)
    # At θ = π the well is cut by geometry; the vertex of a one-sided fit may land a little beyond π
    # (then clipped to π), by at most a quarter of the well's width.
    upper = edges[right + 1] + (0.25 * (edges[right + 1] - edges[left]) if closed_at_pi else 0.0)
    if not edges[left] <= x0 <= upper:
        raise ValueError(
            f"{label}: fitted minimum x0 = {x0:.4g} {unit} lies outside the fitted well "
            f"[{edges[left]:.4g}, {edges[right + 1]:.4g}] {unit}: the free energy is not parabolic near its "
            "minimum; increase the samples or PriorConfig.bins, or change fit_window_kT"
        )
    if kind == "angle":
        x0 = min(x0, math.pi)
    return float(k), float(x0)


def fit_torsion(
    samples: np.ndarray,
    temperature_K: float,
    config: Optional[PriorConfig] = None,
    types: Sequence[str] = ("?", "?", "?", "?"),
) -> List[Tuple[int, float, float]]:
    """Fit Σₙ kₙ[1 + cos(nφ − δₙ)] to −kBT ln P(φ) (no Jacobian); returns [(n, δₙ rad, kₙ kJ/mol)].

    Weighted linear least squares over the occupied bins of a ``config.dihedral_bins`` histogram on
    [−π, π); n runs over ``config.dihedral_periodicities``. The additive constant is dropped.
    """
    config = config or PriorConfig()
    label = _label("dihedral", types)
    x = _check_samples(samples, label, config.min_samples, "rad")
    x = np.mod(x + math.pi, 2.0 * math.pi) - math.pi
    inv = boltzmann_inversion(x, "dihedral", temperature_K, config.dihedral_bins, (-math.pi, math.pi))
    occupied = inv.counts > 0
    periods = config.dihedral_periodicities
    n_unknown = 2 * len(periods) + 1
    if occupied.sum() < n_unknown + 2:
        raise ValueError(
            f"{label}: only {int(occupied.sum())} occupied histogram bins for {n_unknown} Fourier coefficients; "
            "supply more samples or increase PriorConfig.dihedral_bins"
        )
    phi = inv.centers[occupied]
    columns = [np.ones_like(phi)]
    for n in periods:
        columns += [np.cos(n * phi), np.sin(n * phi)]
    design = np.stack(columns, axis=1)
    weights = np.sqrt(inv.counts[occupied].astype(float))
    coef, *_ = np.linalg.lstsq(design * weights[:, None], inv.free_energy[occupied] * weights, rcond=None)
    if not np.all(np.isfinite(coef)):
        raise ValueError(f"{label}: the Fourier fit returned NaN; check the samples")
    terms = []
    for m, n in enumerate(periods):
        a, b = float(coef[1 + 2 * m]), float(coef[2 + 2 * m])
        terms.append((int(n), math.atan2(b, a), math.hypot(a, b)))
    return terms


def repulsive_sigma(
    contacts: np.ndarray, config: Optional[PriorConfig] = None, types: Sequence[str] = ("?", "?")
) -> float:
    """σ (nm) of the repulsive prior: the ``config.repulsive_quantile`` quantile of the contacts.

    Refused below ``config.min_contacts`` contacts or when σ < ``config.min_sigma_nm``.
    """
    config = config or PriorConfig()
    label = _label("non-bonded", types)
    x = np.asarray(contacts, dtype=float).ravel()
    if x.size < config.min_contacts:
        raise ValueError(
            f"{label}: only {x.size} close contacts within {config.nonbonded_cutoff_nm:g} nm "
            f"(need {config.min_contacts}) to place the repulsive prior; supply more frames, raise "
            "PriorConfig.nonbonded_cutoff_nm, or lower PriorConfig.min_contacts"
        )
    bad = int(np.sum(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{label}: {bad} of {x.size} contact distances are NaN or infinite; check positions and boxes")
    sigma = float(np.quantile(x, config.repulsive_quantile))
    if sigma < config.min_sigma_nm:
        raise ValueError(
            f"{label}: repulsive sigma = {sigma:.4g} nm (the {config.repulsive_quantile:g} quantile of the "
            f"contacts) is below the floor {config.min_sigma_nm:g} nm: beads overlap in the data, which points "
            "to a mapping error (two beads on the same atoms?) or a wrong exclusion rule"
        )
    return sigma


def fit_priors_from_samples(
    samples: PriorSamples, temperature_K: float, config: Optional[PriorConfig] = None
) -> Priors:
    """Fit every prior to ``samples`` (from :func:`collect_samples`) at ``temperature_K`` (K).

    All refusals are gathered and raised together as one ValueError, one line per type tuple.
    """
    config = config or PriorConfig()
    if not temperature_K > 0:
        raise ValueError(f"temperature_K must be > 0 K, got {temperature_K!r}")
    priors = Priors(temperature_K=float(temperature_K), exclusion=samples.exclusion,
                    repulsive_form=config.repulsive_form, cutoff_nm=float(samples.cutoff_nm))
    problems: List[str] = []
    for key, values in sorted(samples.bonds.items()):
        try:
            k, r0 = fit_harmonic(values, "bond", temperature_K, config, key)
            priors.bonds[key] = BondPrior(key, k, r0, int(np.size(values)))
        except ValueError as err:
            problems.append(str(err))
    for key, values in sorted(samples.angles.items()):
        try:
            k, theta0 = fit_harmonic(values, "angle", temperature_K, config, key)
            priors.angles[key] = AnglePrior(key, k, theta0, int(np.size(values)))
        except ValueError as err:
            problems.append(str(err))
    if config.use_dihedrals:
        for key, values in sorted(samples.dihedrals.items()):
            try:
                terms = fit_torsion(values, temperature_K, config, key)
                priors.dihedrals[key] = DihedralPrior(key, terms, int(np.size(values)))
            except ValueError as err:
                problems.append(str(err))
    if config.use_repulsive:
        epsilon = config.repulsive_epsilon_kT * _kT(temperature_K)
        for key in sorted(samples.nonbonded_counts):
            values = samples.contacts.get(key, np.zeros(0))
            try:
                sigma = repulsive_sigma(values, config, key)
                priors.repulsive[key] = RepulsivePrior(key, sigma, epsilon, int(np.size(values)))
            except ValueError as err:
                problems.append(str(err))
    if problems:
        raise ValueError(f"{len(problems)} prior fit(s) refused:\n" + "\n".join(problems))
    return priors


def fit_priors(
    positions: np.ndarray,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    temperature_K: float,
    boxes: Optional[np.ndarray] = None,
    config: Optional[PriorConfig] = None,
) -> Priors:
    """Collect samples from a CG trajectory (positions nm, boxes nm) and fit all priors at ``temperature_K``."""
    config = config or PriorConfig()
    samples = collect_samples(positions, bead_types, bonds, angles, dihedrals, boxes=boxes, config=config)
    return fit_priors_from_samples(samples, temperature_K, config)


# ----------------------------------------------------------------------------------------------
# diagnostics
# ----------------------------------------------------------------------------------------------


def plot_priors(
    priors: Priors, data: PriorSamples, path: Union[str, Path], config: Optional[PriorConfig] = None
) -> Path:
    """Write a PNG grid to ``path``: per type tuple, the Jacobian-corrected Boltzmann-inverted free
    energy of ``data`` (kJ/mol, points) with the fitted prior over it (line).

    Bonds and angles: −kBT ln[P/J] against ½k(x − x0)² (both 0 at their minimum). Dihedrals:
    −kBT ln P(φ) against the torsion series, aligned by their count-weighted means. Repulsion:
    −kBT ln[P_nn(r)/r²] of the nearest-neighbour contact distances against the prior, σ dashed.
    Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = config or PriorConfig()
    temperature = priors.temperature_K
    kbt = _kT(temperature)
    panels = []
    for key, p in sorted(priors.bonds.items()):
        panels.append(("bond", key, p, data.bonds.get(key)))
    for key, p in sorted(priors.angles.items()):
        panels.append(("angle", key, p, data.angles.get(key)))
    for key, p in sorted(priors.dihedrals.items()):
        panels.append(("dihedral", key, p, data.dihedrals.get(key)))
    for key, p in sorted(priors.repulsive.items()):
        panels.append(("contact", key, p, data.contacts.get(key)))
    if not panels:
        raise ValueError("no priors to plot; fit some first")
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (kind, key, prior, values) in zip(axes.ravel(), panels):
        title = f"{kind} {'-'.join(key)}"
        if kind in ("bond", "angle"):
            unit = _UNITS[kind][0]
            if values is not None and np.size(values) > 1 and np.ptp(values) > 0:
                lo, hi, _ = _harmonic_range(np.asarray(values, float), kind, config.tail_quantile)
                inv = boltzmann_inversion(values, kind, temperature, config.bins, (lo, hi))
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI data")
                grid = np.linspace(lo, hi, 200)
            else:
                x0 = prior.r0 if kind == "bond" else prior.theta0
                width = 3.0 * math.sqrt(kbt / prior.k)
                grid = np.linspace(x0 - width, x0 + width, 200)
            ax.plot(grid, prior.energy(grid), "-", label="prior")
            x0 = prior.r0 if kind == "bond" else prior.theta0
            title += f"\nk={prior.k:.4g}, x0={x0:.4g}"
            ax.set_xlabel(f"{'r' if kind == 'bond' else 'θ'} ({unit})")
        elif kind == "dihedral":
            grid = np.linspace(-math.pi, math.pi, 361)
            curve = prior.energy(grid)
            if values is not None and np.size(values) > 1:
                inv = boltzmann_inversion(values, "dihedral", temperature, config.dihedral_bins, (-math.pi, math.pi))
                occ = inv.counts > 0
                shift = np.average(inv.free_energy[occ] - prior.energy(inv.centers[occ]), weights=inv.counts[occ])
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI data")
                curve = curve + shift
            ax.plot(grid, curve, "-", label="prior")
            ax.set_xlabel("φ (rad)")
        else:
            cutoff = priors.cutoff_nm
            hi = cutoff
            if values is not None and np.size(values) > 1 and np.ptp(values) > 0:
                hi = float(np.max(values))
                inv = boltzmann_inversion(values, "contact", temperature, config.bins, (float(np.min(values)), hi))
                ax.plot(inv.centers, inv.free_energy, ".", ms=3, label="BI contacts")
            grid = np.linspace(0.8 * prior.sigma, hi, 200)
            ax.plot(grid, prior.energy(grid, priors.repulsive_form, cutoff), "-", label="prior")
            ax.axvline(prior.sigma, ls="--", lw=0.8, color="gray")
            ax.set_ylim(-0.5 * kbt, 10.0 * kbt)
            title += f"\nσ={prior.sigma:.4g} nm"
            ax.set_xlabel("r (nm)")
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("kJ/mol")
        ax.legend(fontsize=6)
    fig.suptitle(f"CG priors at {temperature:g} K (kBT = {kbt:.3g} kJ/mol)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
