"""The fitted tabulated model as plain data: force tables per type tuple and the coefficients of
the combined bending–torsion terms, with the energies integrated from the forces, JSON I/O, and
evaluation in numpy (what the OpenMM layer samples into its tabulated functions).

A :class:`Table` holds g(q) = −dU/dq at its knots (piecewise linear in between) for one pair,
bond or angle type. Outside the knots it continues with a wall that pushes back into the
sampled range, rising quadratically with stiffness ``wall`` (kJ/mol per unit²): a force-matched
table knows nothing where the reference never went, and beads must not collapse there. Pair
tables end at the cutoff with g = 0 and U = 0.

Units: nm, rad, kJ/mol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from multiscale.atomic import atomic_write_json
from multiscale.cg.priors.records import TypeKey, canonical_key

KINDS = ("pair", "bond", "angle")
#: (bonds apart, type a, type b) of a chain-pair table (:attr:`TabulatedModel.chain_pairs`)
ChainPairKey = Tuple[int, str, str]
#: knot spacing (nm) of a chain-pair table: its distributions are broad (a 1-6 bead distance spans
#: ~2 nm), and a refinement round samples ~10³ of them, so finer knots would only resolve noise
#: (the kernel density is 1.5 knots wide)
CHAIN_PAIR_SPACING_NM = 0.04
#: how far (nm) a chain-pair table reaches beyond the reference's sampled distances
CHAIN_PAIR_MARGIN_NM = 0.1
#: an angle table whose last knot is within this of π (rad) ends at the straight angle
STRAIGHT_ANGLE_TOLERANCE = 1e-6


@dataclass
class Table:
    """g(q) = −dU/dq of one interaction type on ``knots`` (nm or rad), with the walls beyond.

    An angle table that ends at π has zero force there (set on construction): U(θ) of a bead
    angle is a smooth function of the beads' positions only if dU/dθ = 0 at the straight angle;
    otherwise the force flips direction as a chain passes through it (a cusp: one fitted table
    ended with 33 kJ/mol/rad, and ``multiscale validate`` failed its gradient check on a CG
    snapshot with a bead angle at 179.99°). By symmetry the mean force there is zero, so this only
    removes the fit's noise at its last knot."""

    kind: str
    knots: np.ndarray
    force: np.ndarray
    wall: float
    samples: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"table kind must be one of {KINDS}, got {self.kind!r}")
        self.knots = np.asarray(self.knots, dtype=np.float64)
        self.force = np.asarray(self.force, dtype=np.float64)
        if self.knots.ndim != 1 or self.knots.shape != self.force.shape or len(self.knots) < 2:
            raise ValueError("a table needs matching 1-D knots and forces (at least 2)")
        if np.any(np.diff(self.knots) <= 0) or not np.all(np.isfinite(self.force)):
            raise ValueError("table knots must increase and forces be finite")
        if self.kind == "pair" and self.force[-1] != 0.0:
            raise ValueError("a pair table must end at the cutoff with zero force")
        if self.ends_straight and self.force[-1] != 0.0:
            self.force = self.force.copy()
            self.force[-1] = 0.0

    @property
    def domain(self) -> Tuple[float, float]:
        """Where the table is defined: pairs (0, cutoff], bonds (0, ∞), angles [0, π]."""
        if self.kind == "pair":
            return 0.0, float(self.knots[-1])
        if self.kind == "bond":
            return 0.0, np.inf
        return 0.0, np.pi

    def _energy_at_knots(self) -> np.ndarray:
        # exact integral of the piecewise-linear force: U_k − U_{k+1} = h (g_k + g_{k+1}) / 2
        steps = 0.5 * np.diff(self.knots) * (self.force[:-1] + self.force[1:])
        u = np.concatenate([np.cumsum(steps[::-1])[::-1], [0.0]])  # U(last knot) = 0
        if self.kind != "pair":
            u = u - u.min()
        return u

    @property
    def ends_straight(self) -> bool:
        """An angle table that reaches π: beyond it, U and g are mirrored (U(π + x) = U(π − x)),
        so that a spline through the table (OpenMM's) is smooth through the straight angle."""
        return self.kind == "angle" and bool(self.knots[-1] >= np.pi - STRAIGHT_ANGLE_TOLERANCE)

    def force_at(self, q) -> np.ndarray:
        """g(q) = −dU/dq (kJ/mol per nm or rad)."""
        q = np.asarray(q, dtype=np.float64)
        k0, k1 = self.knots[0], self.knots[-1]
        sign = 1.0
        if self.ends_straight:  # g(π + x) = −g(π − x)
            sign = np.where(q > k1, -1.0, 1.0)
            q = np.where(q > k1, 2.0 * k1 - q, q)
        g = np.interp(q, self.knots, self.force)
        g = np.where(q < k0, self.force[0] + self.wall * (k0 - q), g)
        if self.kind == "pair":
            return np.where(q >= k1, 0.0, g)
        return sign * np.where(q > k1, self.force[-1] - self.wall * (q - k1), g)

    def energy_at(self, q) -> np.ndarray:
        """U(q) (kJ/mol): pairs 0 at the cutoff, bonds and angles 0 at the tabulated minimum."""
        q = np.asarray(q, dtype=np.float64)
        u_knots = self._energy_at_knots()
        k0, k1 = self.knots[0], self.knots[-1]
        if self.ends_straight:  # U(π + x) = U(π − x)
            q = np.where(q > k1, 2.0 * k1 - q, q)
        # inside: U(q) = U_k − ∫_{q_k}^{q} g, with g linear on [q_k, q_k+1]
        idx = np.clip(np.searchsorted(self.knots, q, side="right") - 1, 0, len(self.knots) - 2)
        h = self.knots[idx + 1] - self.knots[idx]
        t = np.clip(q - self.knots[idx], 0.0, h)
        slope = (self.force[idx + 1] - self.force[idx]) / h
        inside = u_knots[idx] - (self.force[idx] * t + 0.5 * slope * t * t)
        below = u_knots[0] + self.force[0] * (k0 - q) + 0.5 * self.wall * (k0 - q) ** 2
        above = u_knots[-1] - self.force[-1] * (q - k1) + 0.5 * self.wall * (q - k1) ** 2
        u = np.where(q < k0, below, inside)
        if self.kind == "pair":
            return np.where(q >= k1, 0.0, u)
        return np.where(q > k1, above, u)

    def to_dict(self) -> Dict:
        return {"kind": self.kind, "knots": self.knots.tolist(), "force": self.force.tolist(), "wall": self.wall,
                "samples": int(self.samples)}

    @classmethod
    def from_dict(cls, data: Dict) -> "Table":
        return cls(data["kind"], np.asarray(data["knots"]), np.asarray(data["force"]), float(data["wall"]),
                   int(data.get("samples", 0)))


@dataclass
class TabulatedModel:
    """A force-matched CG model of tabulated pair, bond and angle potentials and combined
    bending–torsion terms U = sin³θ₁ sin³θ₂ Σₙ aₙ cos nφ (Bulacu et al., JCTC 9, 3282 (2013):
    smooth, finite forces when a bead angle reaches 180°, where a plain torsion diverges).

    ``pairs``/``bonds``/``angles``: canonical type tuple → :class:`Table`; ``dihedrals``: canonical
    type tuple → (a₀..a_order) kJ/mol. ``exclusion``: bonded separations without pair terms;
    ``cutoff_nm``: end of the pair tables; ``fit``: diagnostics of the fit (JSON-able).
    ``intermolecular``: canonical type pair → A (kJ/mol) of a ramp U = A (1 − r/r_c) that acts
    between beads of different molecules only (molecules: the connected parts of the bond graph),
    on top of the pair table; see :meth:`with_pair_ramp`.
    ``chain_pairs``: (s, type a, type b) → a "bond" :class:`Table` on the distance of every bead
    pair of one molecule whose shortest bond path is s bonds long (the 1-5 pairs for s = 4), on
    top of the pair table: a correction that iterative Boltzmann refinement sets to the mapped
    reference's distribution (:meth:`with_chain_pairs`, :func:`~multiscale.cg.tabulated.refine_bonded`).
    """

    pairs: Dict[TypeKey, Table]
    bonds: Dict[TypeKey, Table]
    angles: Dict[TypeKey, Table]
    dihedrals: Dict[TypeKey, np.ndarray]
    exclusion: str
    cutoff_nm: float
    temperature_K: float
    fit: Dict = field(default_factory=dict)
    intermolecular: Dict[TypeKey, float] = field(default_factory=dict)
    chain_pairs: Dict[ChainPairKey, Table] = field(default_factory=dict)

    def pair(self, a: str, b: str) -> Table:
        key = canonical_key((a, b))
        if key not in self.pairs:
            raise KeyError(f"no pair table for bead types {key}; the model was fitted on pairs {sorted(self.pairs)}")
        return self.pairs[key]

    def with_pair_ramp(self, A_kj_mol: float, pairs=None, intermolecular: bool = False) -> "TabulatedModel":
        """A copy with a ramp U += A (1 − r/r_c), i.e. g += A/r_c inside the cutoff, on the type
        pairs ``pairs`` (e.g. [("C", "NC"), ("C", "PO")]; default: all): A < 0 attracts, a pressure
        correction. Plain ramps go into the pair tables (the last segment goes linearly to 0 at
        r_c) and act on every non-excluded pair; ``intermolecular=True`` ramps act between
        molecules only (:attr:`intermolecular`), so that they leave each molecule's own
        conformations, and its bonded distributions, alone. Ramps add up; ``fit["pair_ramps"]``
        lists them."""
        import copy

        keys = sorted(self.pairs) if pairs is None else [canonical_key(list(p)) for p in pairs]
        missing = [k for k in keys if k not in self.pairs]
        if missing:
            raise ValueError(f"no pair table for type pair(s) {missing}; the model has {sorted(self.pairs)}")
        out = copy.deepcopy(self)
        for key in keys:
            if intermolecular:
                out.intermolecular[key] = out.intermolecular.get(key, 0.0) + float(A_kj_mol)
            else:
                out.pairs[key].force[:-1] += float(A_kj_mol) / self.cutoff_nm
        ramps = list(out.fit.get("pair_ramps", [])) + [{"A_kj_mol": float(A_kj_mol), "pairs": [list(k) for k in keys],
                                                       "intermolecular": bool(intermolecular)}]
        out.fit = {**out.fit, "pair_ramps": ramps}
        if pairs is None and not intermolecular:
            out.fit["pair_ramp_kj_mol"] = float(A_kj_mol) + float(self.fit.get("pair_ramp_kj_mol", 0.0))
        return out

    def with_chain_pairs(self, reference: Mapping[ChainPairKey, np.ndarray],
                         spacing_nm: float = CHAIN_PAIR_SPACING_NM) -> "TabulatedModel":
        """A copy with a zero chain-pair table (:attr:`chain_pairs`) for each key of ``reference``
        (sampled distances, nm, as :func:`~multiscale.cg.analysis.chain_pair_values` returns them)
        that has none yet: knots every ``spacing_nm`` from :data:`CHAIN_PAIR_MARGIN_NM` below the
        shortest sampled distance to as far above the longest, and no wall (the correction is 0
        and flat wherever the reference never went; the pair table and the bonded terms confine
        the chain there)."""
        import copy

        if not spacing_nm > 0:
            raise ValueError(f"spacing_nm must be > 0, got {spacing_nm!r}")
        out = copy.deepcopy(self)
        for key, values in sorted(reference.items()):
            s, a, b = int(key[0]), str(key[1]), str(key[2])
            key = (s,) + canonical_key((a, b))
            values = np.asarray(values, dtype=np.float64).ravel()
            if key in out.chain_pairs or values.size == 0:
                continue
            lo = max(float(values.min()) - CHAIN_PAIR_MARGIN_NM, spacing_nm)
            hi = float(values.max()) + CHAIN_PAIR_MARGIN_NM
            knots = lo + spacing_nm * np.arange(int(np.ceil((hi - lo) / spacing_nm)) + 1)
            out.chain_pairs[key] = Table("bond", knots, np.zeros_like(knots), 0.0, samples=int(values.size))
        return out

    def to_dict(self) -> Dict:
        def tables(d):
            return [{"types": list(k), **t.to_dict()} for k, t in sorted(d.items())]

        return {
            "format": "multiscale.tabulated/1",
            "exclusion": self.exclusion, "cutoff_nm": self.cutoff_nm, "temperature_K": self.temperature_K,
            "pairs": tables(self.pairs), "bonds": tables(self.bonds), "angles": tables(self.angles),
            "dihedrals": [{"types": list(k), "cos_coefficients_kj_mol": np.asarray(v).tolist()}
                          for k, v in sorted(self.dihedrals.items())],
            "fit": self.fit,
            "intermolecular_ramps": [{"types": list(k), "A_kj_mol": float(a)} for k, a in sorted(self.intermolecular.items())],
            "chain_pairs": [{"bonds_apart": int(k[0]), "types": list(k[1:]), **t.to_dict()}
                            for k, t in sorted(self.chain_pairs.items())],
        }

    @classmethod
    def from_dict(cls, data: Dict) -> "TabulatedModel":
        if data.get("format") != "multiscale.tabulated/1":
            raise ValueError(f"not a multiscale tabulated model (format {data.get('format')!r}); "
                             "write one with TabulatedModel.save")

        def tables(rows: List[Dict]) -> Dict[TypeKey, Table]:
            return {tuple(r["types"]): Table.from_dict(r) for r in rows}

        return cls(tables(data["pairs"]), tables(data["bonds"]), tables(data["angles"]),
                   {tuple(r["types"]): np.asarray(r["cos_coefficients_kj_mol"], dtype=float) for r in data["dihedrals"]},
                   data["exclusion"], float(data["cutoff_nm"]), float(data["temperature_K"]), data.get("fit", {}),
                   {tuple(r["types"]): float(r["A_kj_mol"]) for r in data.get("intermolecular_ramps", [])},
                   {(int(r["bonds_apart"]),) + tuple(r["types"]): Table.from_dict(r) for r in data.get("chain_pairs", [])})

    def save(self, path: Union[str, Path]) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TabulatedModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tabulated model at {path}; fit one with multiscale.cg.tabulated.fit_tabulated")
        return cls.from_dict(json.loads(path.read_text()))


def dihedral_energy(theta1, theta2, phi, coefficients: Sequence[float]) -> np.ndarray:
    """sin³θ₁ sin³θ₂ Σₙ aₙ cos nφ (kJ/mol), the combined bending–torsion energy."""
    a = np.asarray(coefficients, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    series = sum(a[n] * np.cos(n * phi) for n in range(len(a)))
    return np.sin(theta1) ** 3 * np.sin(theta2) ** 3 * series
