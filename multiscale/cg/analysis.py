"""Validation of a coarse-grained (CG) model against the mapped reference.

Plain functions over ``mdtraj.Trajectory`` objects that return numpy arrays or floats, in the
style of mdtraj. Both trajectories describe the **same bead topology**: the mapped atomistic
reference (bead positions M_x r of every reference frame) and the CG simulation.

Units (OpenMM's): positions and lengths in nm, angles and dihedrals in rad, masses in amu
(dalton, g/mol), densities in g/cm³ (converted from amu/nm³ with
:data:`AMU_PER_NM3_TO_G_PER_CM3`), g(r) and Jensen–Shannon divergences dimensionless.

Conventions
-----------
* **Bead types.** By default the type of a bead is its atom name in the topology (the project's
  convention for element-None topologies, e.g. ``CH2``/``CH3`` in :mod:`systems.polyethylene`).
  Every function that groups by type takes ``types=``: one string per bead, which overrides the
  atom names. The topology of :meth:`multiscale.cg.Mapping.cg_topology` names atoms after the
  *beads* (and residues after the first 3 characters of the types), so pass
  ``types=mapping.bead_types`` there.
* **Bonded terms** come from the topology bonds: bonds i–j, angles i–j–k (two bonds sharing j),
  proper dihedrals i–j–k–l (a path of three bonds). A term's type tuple is the tuple of its bead
  types, read in the direction that sorts first (``(A, B)`` and ``(B, A)`` are one bond type;
  angles and dihedrals are unchanged by reversing the order of their beads).
* **Chains** are the topology chains; each chain must be connected by its bonds (one molecule)
  for :func:`make_chains_whole`, :func:`radius_of_gyration_per_chain` and
  :func:`end_to_end_distance`.
* **Periodic boundaries.** Bonded geometry and pair distances use the minimum image
  (``periodic=True`` in mdtraj). Chain properties use chains made whole by unwrapping along the
  bonds (:func:`make_chains_whole`), so wrapped coordinates (DCD frames written with
  ``enforcePeriodicBox``) give the same Rg and end-to-end distances as unwrapped ones.
* **Report keys.** In the JSON report, type tuples are joined with ``-`` (``"CH2-CH2-CH3"``).
"""

from __future__ import annotations

import io
import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Mapping as MappingABC, Optional, Sequence, Tuple, Union

import mdtraj as md
import numpy as np
from scipy.special import rel_entr

from multiscale.atomic import atomic_write_bytes
from multiscale.cg.topology import BondGraph, pair_codes

__all__ = [
    "AVOGADRO_CONSTANT_PER_MOL",
    "AMU_TO_G",
    "NM3_TO_CM3",
    "AMU_PER_NM3_TO_G_PER_CM3",
    "BONDED_KINDS",
    "DEFAULT_BONDED_BINS",
    "bead_types",
    "bonded_terms",
    "bonded_values",
    "bonded_distributions",
    "jensen_shannon",
    "compare_bonded",
    "rdf_pairs",
    "rdf",
    "rdf_difference",
    "compare_rdfs",
    "check_same_topology",
    "make_chains_whole",
    "radius_of_gyration_per_chain",
    "end_to_end_distance",
    "density",
    "block_sem",
    "validation_report",
]

# ----------------------------------------------------------------------------- constants

#: Avogadro constant in mol⁻¹: exact by definition in the SI since 20 May 2019 (26th CGPM;
#: CODATA 2018 value, the one OpenMM's ``openmm.unit.AVOGADRO_CONSTANT_NA`` uses).
AVOGADRO_CONSTANT_PER_MOL = 6.02214076e23
#: 1 amu (dalton) in g, taken as (1 g/mol) / N_A. Since 2019 the molar mass constant is
#: M_u = 0.99999999965(30) g/mol rather than exactly 1 g/mol, so this differs from the CODATA 2018
#: dalton (1.66053906660e-24 g) by 3.5e-10 relative, far below any simulated density's precision.
AMU_TO_G = 1.0 / AVOGADRO_CONSTANT_PER_MOL
#: 1 nm³ in cm³ (1 nm = 1e-7 cm).
NM3_TO_CM3 = 1e-21
#: 1 amu/nm³ in g/cm³ (= 1.66053906717e-3).
AMU_PER_NM3_TO_G_PER_CM3 = AMU_TO_G / NM3_TO_CM3

#: The bonded kinds, in report order.
BONDED_KINDS = ("bond", "angle", "dihedral")
#: Default number of histogram bins per bonded kind: bonds over the sampled range of each type
#: (nm), angles over [0, π] (2° bins), dihedrals over [−π, π] (4° bins).
DEFAULT_BONDED_BINS = {"bond": 100, "angle": 90, "dihedral": 90}
_FIXED_RANGES = {"angle": (0.0, math.pi), "dihedral": (-math.pi, math.pi)}

TypeKey = Tuple[str, ...]
Masses = Union[Sequence[float], np.ndarray, MappingABC[str, float]]

# ----------------------------------------------------------------------------- topology helpers


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


def bonded_terms(topology: md.Topology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds (n, 2), angles (n, 3) and proper dihedrals (n, 4) as bead-index arrays, from the
    topology bonds (:class:`multiscale.cg.topology.BondGraph`). Each term appears once (bonds
    i < j; angles i < k around the centre j; dihedrals once per central bond j < k and end pair
    i, l with i ≠ l)."""
    graph = BondGraph.from_mdtraj(topology)
    return graph.bonds, graph.angles(), graph.dihedrals()


def _type_key(names: Sequence[str]) -> TypeKey:
    forward = tuple(names)
    return min(forward, forward[::-1])


def _key_str(key: TypeKey) -> str:
    return "-".join(key)


def _terms(kind: str, given, derived: np.ndarray, n_atoms: int) -> np.ndarray:
    width = {"bond": 2, "angle": 3, "dihedral": 4}[kind]
    if given is None:
        return derived
    terms = np.asarray(given, dtype=np.int64)
    if terms.size == 0:
        return terms.reshape(0, width)
    if terms.ndim != 2 or terms.shape[1] != width:
        raise ValueError(f"{kind}s must be an (n, {width}) array of bead indices, got shape {terms.shape}")
    if terms.min() < 0 or terms.max() >= n_atoms:
        raise ValueError(f"{kind}s index beads outside 0..{n_atoms - 1}; pass indices of the bead topology")
    return terms


# ----------------------------------------------------------------------------- bonded distributions


def bonded_values(traj: md.Trajectory, bonds=None, angles=None, dihedrals=None, *,
                  types: Optional[Sequence[str]] = None) -> Dict[str, Dict[TypeKey, np.ndarray]]:
    """Sampled bond lengths (nm), angles (rad, in [0, π]) and dihedrals (rad, in [−π, π]) grouped
    by bead-type tuple: ``{"bond": {("A", "B"): values}, "angle": {...}, "dihedral": {...}}``,
    each ``values`` a 1-D array over all frames and all terms of that type.

    ``bonds``/``angles``/``dihedrals`` are (n, 2/3/4) bead-index arrays; ``None`` derives them
    from the topology (:func:`bonded_terms`); an empty array skips the kind. Geometry uses the
    minimum image (``periodic=True``) when the trajectory has a unit cell.
    """
    names = bead_types(traj.topology, types)
    derived = bonded_terms(traj.topology)
    compute = {"bond": md.compute_distances, "angle": md.compute_angles, "dihedral": md.compute_dihedrals}
    out: Dict[str, Dict[TypeKey, np.ndarray]] = {}
    for kind, given, auto in zip(BONDED_KINDS, (bonds, angles, dihedrals), derived):
        terms = _terms(kind, given, auto, traj.n_atoms)
        out[kind] = {}
        if len(terms) == 0 or traj.n_frames == 0:
            continue
        values = np.asarray(compute[kind](traj, terms, periodic=True), dtype=np.float64)  # (frames, terms)
        groups: Dict[TypeKey, List[int]] = {}
        for column, term in enumerate(terms):
            groups.setdefault(_type_key([names[i] for i in term]), []).append(column)
        for key in sorted(groups):
            out[kind][key] = values[:, groups[key]].ravel()
    return out


def _bins_for(kind: str, bins) -> Union[int, np.ndarray]:
    if bins is None:
        return DEFAULT_BONDED_BINS[kind]
    if isinstance(bins, MappingABC):
        return bins.get(kind, DEFAULT_BONDED_BINS[kind])
    return bins


def _edges(kind: str, bins, *samples: np.ndarray) -> np.ndarray:
    spec = _bins_for(kind, bins)
    if np.ndim(spec) == 1:
        edges = np.asarray(spec, dtype=np.float64)
        if edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bin edges for {kind}s must be a strictly increasing array of at least 2 values")
        return edges
    n = int(spec)
    if n < 1 or n != spec:
        raise ValueError(f"the number of {kind} bins must be a positive whole number, got {spec!r}")
    if kind in _FIXED_RANGES:
        lo, hi = _FIXED_RANGES[kind]
    else:
        data = [s for s in samples if s.size]
        lo = min(float(s.min()) for s in data) if data else 0.0
        hi = max(float(s.max()) for s in data) if data else 1.0
        if hi - lo < 1e-6:  # rigid (constrained) bonds: a narrow window around the fixed length
            lo, hi = lo - 0.005, hi + 0.005
    return np.linspace(lo, hi, n + 1)


def bonded_distributions(traj: md.Trajectory, bonds=None, angles=None, dihedrals=None, bins=None, *,
                         types: Optional[Sequence[str]] = None
                         ) -> Dict[str, Dict[TypeKey, Tuple[np.ndarray, np.ndarray]]]:
    """Normalised histograms of bond lengths, angles and dihedrals per bead-type tuple:
    ``{kind: {types: (density, edges)}}`` with ``density`` in 1/nm (bonds) or 1/rad (angles,
    dihedrals), integrating to 1 over ``edges`` (nm or rad).

    ``bins``: an int (bins for every kind), a dict ``{"bond": .., "angle": .., "dihedral": ..}`` of
    ints or edge arrays, or ``None`` for :data:`DEFAULT_BONDED_BINS`. Integer bins span the sampled
    range of each bond type, [0, π] for angles and [−π, π] for dihedrals; values outside explicit
    edges are left out. To compare two
    trajectories use :func:`compare_bonded`, which puts both on common edges.
    """
    values = bonded_values(traj, bonds, angles, dihedrals, types=types)
    out: Dict[str, Dict[TypeKey, Tuple[np.ndarray, np.ndarray]]] = {}
    for kind, per_type in values.items():
        out[kind] = {}
        for key, sample in per_type.items():
            edges = _edges(kind, bins, sample)
            hist, edges = np.histogram(sample, bins=edges, density=True)
            out[kind][key] = (hist, edges)
    return out


def jensen_shannon(p, q) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two histograms on the same bins.

    JSD(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = (P + Q)/2, KL in bits. ``p`` and ``q`` are
    non-negative counts, probabilities or densities on identical bins (each is normalised to sum
    to 1); empty bins contribute 0 (0·log 0 = 0). 0 means identical histograms, 1 disjoint support.
    This is the square of scipy's ``jensenshannon(p, q, base=2)``, which returns the distance.

    A finite-sample estimate is biased upwards: two independent samples of N values each from
    one distribution, spread over K bins, give JSD ≈ (K − 1)/(4 N ln 2) on average (more for
    time-correlated MD samples), so fewer bins or longer runs lower this noise floor.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"p and q must be histograms on the same bins, got {p.size} and {q.size} bins")
    for name, h in (("p", p), ("q", q)):
        if not np.all(np.isfinite(h)) or np.any(h < 0):
            raise ValueError(f"{name} must hold finite non-negative counts or probabilities")
        if h.sum() <= 0:
            raise ValueError(f"{name} is empty (all bins zero); histogram at least one sample on these bins")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    value = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / math.log(2.0)
    return float(min(max(value, 0.0), 1.0))


def compare_bonded(ref: md.Trajectory, cg: md.Trajectory, bonds=None, angles=None, dihedrals=None,
                   bins=None, *, types: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Jensen–Shannon divergences between the bonded distributions of ``ref`` and ``cg``.

    Both are histogrammed on common edges (integer bins of bond types span the union of both
    samples). Returns ``{"per_type": {kind: {types: jsd}}, "per_kind": {kind: mean jsd over its
    types (unweighted) or None}, "n_terms": {kind: {types: number of terms per frame}}}``; JSDs
    are base 2, in [0, 1]. A type present in only one trajectory is impossible (same topology).
    """
    check_same_topology(ref, cg)
    if ref.n_frames == 0 or cg.n_frames == 0:
        raise ValueError("both trajectories need at least one frame")
    samples = {"ref": bonded_values(ref, bonds, angles, dihedrals, types=types),
               "cg": bonded_values(cg, bonds, angles, dihedrals, types=types)}
    return _compare_bonded_values(samples["ref"], samples["cg"], ref.n_frames, bins)[0]


def _compare_bonded_values(ref_values, cg_values, n_ref_frames: int, bins):
    result: Dict[str, Any] = {"per_type": {}, "per_kind": {}, "n_terms": {}}
    histograms: Dict[str, Dict[TypeKey, Tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for kind in BONDED_KINDS:
        result["per_type"][kind], result["n_terms"][kind], histograms[kind] = {}, {}, {}
        for key in ref_values[kind]:
            a, b = ref_values[kind][key], cg_values[kind][key]
            edges = _edges(kind, bins, a, b)
            ha = np.histogram(a, bins=edges)[0].astype(np.float64)
            hb = np.histogram(b, bins=edges)[0].astype(np.float64)
            if ha.sum() == 0 or hb.sum() == 0:
                raise ValueError(
                    f"no {kind} of type {_key_str(key)} falls inside the bin edges "
                    f"[{edges[0]:.4g}, {edges[-1]:.4g}]; widen the edges passed in bins['{kind}']"
                )
            result["per_type"][kind][key] = jensen_shannon(ha, hb)
            result["n_terms"][kind][key] = int(a.size // max(n_ref_frames, 1))
            widths = np.diff(edges)
            histograms[kind][key] = (ha / (ha.sum() * widths), hb / (hb.sum() * widths), edges)
        values = list(result["per_type"][kind].values())
        result["per_kind"][kind] = float(np.mean(values)) if values else None
    return result, histograms


# ----------------------------------------------------------------------------- radial distribution


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


def _exclusion_filter(topology: md.Topology, exclude: Union[str, int]):
    """A function (pairs (n, 2), i < j) → boolean mask of the pairs to keep."""
    if exclude == "intramolecular":
        chain_of = np.array([atom.residue.chain.index for atom in topology.atoms], dtype=np.int64)
        return lambda pairs: chain_of[pairs[:, 0]] != chain_of[pairs[:, 1]]
    if isinstance(exclude, (int, np.integer)) and not isinstance(exclude, bool) and exclude >= 0:
        if exclude == 0:
            return lambda pairs: np.ones(len(pairs), dtype=bool)
        n_atoms = topology.n_atoms
        close = pair_codes(BondGraph.from_mdtraj(topology).within(int(exclude)), n_atoms)
        return lambda pairs: ~np.isin(pairs[:, 0] * n_atoms + pairs[:, 1], close, assume_unique=False)
    raise ValueError(f"exclude must be 'intramolecular' or a whole number of bonds >= 0, got {exclude!r}")


def _pair_blocks(topology: md.Topology, type_a: str, type_b: str, exclude: Union[str, int],
                 types: Optional[Sequence[str]], max_pairs: int):
    """Yield the pairs of :func:`rdf_pairs` in blocks of at most ~``max_pairs`` candidates, so
    that large systems never hold all N² pairs at once."""
    names = np.asarray(bead_types(topology, types))
    a = np.flatnonzero(names == str(type_a))
    b = np.flatnonzero(names == str(type_b))
    present = sorted(set(names.tolist()))
    for t, idx in ((type_a, a), (type_b, b)):
        if idx.size == 0:
            raise ValueError(f"no bead of type {t!r} in the topology; types present: {present}")
    keep = _exclusion_filter(topology, exclude)
    same = str(type_a) == str(type_b)
    rows = max(1, int(max_pairs) // max(b.size, 1))
    for r0 in range(0, a.size, rows):
        i = np.arange(r0, min(r0 + rows, a.size))
        if same:
            ii, jj = np.meshgrid(i, np.arange(a.size), indexing="ij")
            upper = jj > ii
            pairs = np.stack([a[ii[upper]], a[jj[upper]]], axis=1)
        else:
            pairs = np.sort(np.stack(np.meshgrid(a[i], b, indexing="ij"), axis=-1).reshape(-1, 2), axis=1)
        if len(pairs):
            pairs = pairs[keep(pairs)]
        if len(pairs):
            yield pairs


def rdf_pairs(topology: md.Topology, type_a: str, type_b: str, exclude: Union[str, int] = "intramolecular", *,
              types: Optional[Sequence[str]] = None) -> np.ndarray:
    """The (n, 2) bead pairs entering g_AB(r): one bead of type ``type_a`` and one of ``type_b``
    (each unordered pair once, written i < j), minus the excluded ones.

    ``exclude``: ``"intramolecular"`` drops every pair within one chain (intermolecular g(r), the
    default, as usually reported for polymer melts: intramolecular pairs are already covered by the
    bonded distributions and the chain sizes); an int n ≥ 0 drops pairs of one chain at most n bonds
    apart (2: 1–2 and 1–3 pairs, 3: also 1–4; 0: keep every pair).
    """
    blocks = list(_pair_blocks(topology, type_a, type_b, exclude, types, 10_000_000))
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), dtype=np.int64)


def rdf(traj: md.Trajectory, type_a: str, type_b: str, r_range: Optional[Tuple[float, float]] = None,
        bins: int = 100, *, exclude: Union[str, int] = "intramolecular", types: Optional[Sequence[str]] = None,
        max_distances: int = 10_000_000) -> Tuple[np.ndarray, np.ndarray]:
    """Radial distribution function g_AB(r) of bead types ``type_a`` and ``type_b``.

    Returns ``(r, g)``: bin centres (nm) and g(r) (dimensionless), computed with
    ``mdtraj.compute_rdf`` (minimum image) on the pairs of :func:`rdf_pairs` and normalised per
    pair: g(r) = ⟨count in shell⟩ / (n_pairs · ⟨1/V⟩ · shell volume), so g → 1 at large r for an
    uncorrelated system (for the default intermolecular pairs too, since only counted pairs enter
    the normalisation). ``r_range`` (nm) defaults to (0, min(1.5, half the smallest box width));
    r_max beyond half the smallest box width is refused (the minimum image would miss pairs).
    ``exclude``: see :func:`rdf_pairs`. Pairs and frames are processed in chunks of at most
    ``max_distances`` distances (~40 MB each) to bound memory; the cost is O(frames · pairs), so
    stride long trajectories of large systems.
    """
    _check_unitcell(traj, "rdf")
    limit = _half_min_width(traj)
    r_range = _check_r_range(r_range, limit)
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be a positive whole number, got {bins}")
    if traj.n_frames == 0:
        raise ValueError("the trajectory has no frames")
    inverse_volumes = 1.0 / np.asarray(traj.unitcell_volumes, dtype=np.float64)
    total = np.zeros(bins)
    n_pairs = 0
    r = None
    for pairs in _pair_blocks(traj.topology, type_a, type_b, exclude, types, max_distances):
        n_pairs += len(pairs)
        for p0 in range(0, len(pairs), max_distances):
            chunk = pairs[p0:p0 + max_distances]
            frame_chunk = max(1, max_distances // len(chunk))
            for f0 in range(0, traj.n_frames, frame_chunk):
                r, g = md.compute_rdf(traj[f0:f0 + frame_chunk], chunk, r_range=r_range, n_bins=bins, periodic=True)
                total += g * len(chunk) * inverse_volumes[f0:f0 + frame_chunk].sum()  # undo mdtraj's normalisation
    if n_pairs == 0:
        raise ValueError(
            f"no {type_a}-{type_b} pairs remain after exclude={exclude!r} (e.g. a single chain with "
            "intramolecular pairs excluded); pass exclude=2 or 3 to keep pairs further apart along the chain"
        )
    return np.asarray(r, dtype=np.float64), total / (n_pairs * inverse_volumes.sum())


def _check_r_range(r_range, limit: float) -> Tuple[float, float]:
    if r_range is None:
        return (0.0, min(1.5, limit))
    lo, hi = (float(x) for x in r_range)
    if not (0.0 <= lo < hi):
        raise ValueError(f"r_range must be (r_min, r_max) with 0 <= r_min < r_max in nm, got {r_range!r}")
    if hi > limit * (1 + 1e-9):
        raise ValueError(
            f"r_max = {hi:.4g} nm exceeds half the smallest box width ({limit:.4g} nm), beyond which the "
            f"minimum image misses pairs; pass r_range=({lo:.4g}, {limit:.4g}) or less"
        )
    return (lo, hi)


def rdf_difference(r, g_ref, g_cg) -> Dict[str, float]:
    """How far g_cg(r) is from g_ref(r) on the same uniform bins centred at ``r`` (nm).

    * ``abs_integral_ratio`` = ∫|g_cg − g_ref| dr / ∫ g_ref dr over the histogram range
      (dimensionless; 0 identical, 0.05 means the curves differ by 5 % of the reference's area);
    * ``rms`` = sqrt(mean over bins of (g_cg − g_ref)²) (dimensionless, in units of g).
    With uniform bins both are sums over bins, so the bin width cancels in the ratio.
    """
    r = np.asarray(r, dtype=np.float64)
    g_ref = np.asarray(g_ref, dtype=np.float64)
    g_cg = np.asarray(g_cg, dtype=np.float64)
    if not (r.shape == g_ref.shape == g_cg.shape) or r.ndim != 1 or r.size == 0:
        raise ValueError("r, g_ref and g_cg must be 1-D arrays of the same non-zero length (the same bins)")
    diff = g_cg - g_ref
    area = float(g_ref.sum())
    return {
        "abs_integral_ratio": float(np.abs(diff).sum() / area) if area > 0 else float("nan"),
        "rms": float(np.sqrt(np.mean(diff ** 2))),
    }


def _type_pairs(names: Sequence[str], type_pairs) -> List[Tuple[str, str]]:
    if type_pairs is None:
        unique = sorted(set(names))
        return [(a, b) for k, a in enumerate(unique) for b in unique[k:]]
    return [tuple(sorted((str(a), str(b)))) for a, b in type_pairs]


def _rdf_set(ref, cg, type_pairs, r_range, bins, exclude, types):
    _check_unitcell(ref, "the reference RDF")
    _check_unitcell(cg, "the CG RDF")
    r_range = _check_r_range(r_range, min(_half_min_width(ref), _half_min_width(cg)))
    names = bead_types(ref.topology, types)
    curves = {}
    for a, b in _type_pairs(names, type_pairs):
        if next(_pair_blocks(ref.topology, a, b, exclude, types, 1_000_000), None) is None:
            continue  # e.g. the end-bead pair of a single chain; nothing to compare
        r, g_ref = rdf(ref, a, b, r_range, bins, exclude=exclude, types=types)
        _, g_cg = rdf(cg, a, b, r_range, bins, exclude=exclude, types=types)
        curves[(a, b)] = (r, g_ref, g_cg)
    return curves, r_range


def compare_rdfs(ref: md.Trajectory, cg: md.Trajectory, type_pairs: Optional[Sequence[Tuple[str, str]]] = None,
                 r_range: Optional[Tuple[float, float]] = None, bins: int = 100, *,
                 exclude: Union[str, int] = "intramolecular",
                 types: Optional[Sequence[str]] = None) -> Dict[Tuple[str, str], Dict[str, float]]:
    """:func:`rdf_difference` of every bead-type pair: ``{(A, B): {"abs_integral_ratio", "rms"}}``.

    ``type_pairs`` defaults to every unordered pair of bead types (A ≤ B), skipping pairs with no
    beads left after ``exclude``. Both trajectories use the same r range (nm; default
    (0, min(1.5, half the smallest box width of either))) and bins.
    """
    check_same_topology(ref, cg)
    curves, _ = _rdf_set(ref, cg, type_pairs, r_range, bins, exclude, types)
    return {key: rdf_difference(r, g_ref, g_cg) for key, (r, g_ref, g_cg) in curves.items()}


# ----------------------------------------------------------------------------- chain properties


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


def _chain_indices(topology: md.Topology) -> List[np.ndarray]:
    return [np.array([atom.index for atom in chain.atoms], dtype=np.int64) for chain in topology.chains]


def make_chains_whole(traj: md.Trajectory) -> np.ndarray:
    """Positions (n_frames, n_atoms, 3) in nm with every chain whole.

    Each chain is unwrapped along a breadth-first spanning tree of its bonds rooted at its first
    bead: a bead is put at its bonded parent plus the minimum-image bond vector
    (``mdtraj.compute_displacements``), so no bond crosses the boundary. The first bead of each
    chain keeps its position. Without a unit cell the positions are returned unchanged. Requires
    every chain to be connected by its bonds and every bond shorter than half the smallest box width.
    """
    xyz = np.array(traj.xyz, dtype=np.float64)
    if traj.unitcell_vectors is None or traj.n_frames == 0:
        return xyz
    neighbors = BondGraph.from_mdtraj(traj.topology).neighbors
    parents: List[int] = []
    children: List[int] = []
    levels: List[int] = []
    for c, chain in enumerate(_chain_indices(traj.topology)):
        if chain.size == 0:
            continue
        members = set(chain.tolist())
        depth = {int(chain[0]): 0}
        queue = deque([int(chain[0])])
        while queue:
            atom = queue.popleft()
            for other in neighbors[atom]:
                if other not in members:
                    raise ValueError(
                        f"bead {atom} (chain {c}) is bonded to bead {other} of another chain; give each molecule one "
                        "chain in the topology (chains = molecules)"
                    )
                if other not in depth:
                    depth[other] = depth[atom] + 1
                    parents.append(atom)
                    children.append(other)
                    levels.append(depth[other])
                    queue.append(other)
        if len(depth) != chain.size:
            missing = sorted(members - set(depth))[:5]
            raise ValueError(
                f"chain {c} is not connected by bonds (beads {missing} are not reachable from bead {chain[0]}); "
                "a chain must be one molecule: add the missing bead bonds to the topology or put each molecule "
                "in its own chain"
            )
    if not children:
        return xyz
    parents_a, children_a, levels_a = (np.asarray(v, dtype=np.int64) for v in (parents, children, levels))
    vectors = np.asarray(md.compute_displacements(traj, np.stack([parents_a, children_a], axis=1), periodic=True),
                         dtype=np.float64)  # (frames, edges, 3), child − parent, minimum image
    for level in range(1, int(levels_a.max()) + 1):
        edges = np.flatnonzero(levels_a == level)
        xyz[:, children_a[edges]] = xyz[:, parents_a[edges]] + vectors[:, edges]
    return xyz


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


def radius_of_gyration_per_chain(traj: md.Trajectory, masses: Masses, *,
                                 types: Optional[Sequence[str]] = None) -> np.ndarray:
    """Mass-weighted radius of gyration (nm) of every chain in every frame, shape
    (n_frames, n_chains): Rg² = Σ m_i |r_i − r_cm|² / Σ m_i over the chain's beads, on chains made
    whole (:func:`make_chains_whole`). ``masses``: one mass (amu) per bead, or ``{type: amu}``
    (types as in :func:`bead_types`). A one-bead chain has Rg = 0.
    """
    m = _masses(traj.topology, masses, types)
    xyz = make_chains_whole(traj)
    chains = _chain_indices(traj.topology)
    out = np.zeros((traj.n_frames, len(chains)))
    for c, idx in enumerate(chains):
        if idx.size < 2:
            continue
        w = m[idx] / m[idx].sum()
        x = xyz[:, idx]
        centre = np.einsum("i,fij->fj", w, x)
        out[:, c] = np.sqrt(np.einsum("i,fi->f", w, ((x - centre[:, None]) ** 2).sum(-1)))
    return out


def end_to_end_distance(traj: md.Trajectory) -> np.ndarray:
    """Distance (nm) between the first and last bead (topology order) of every chain in every
    frame, shape (n_frames, n_chains), on chains made whole (:func:`make_chains_whole`), so
    distances longer than half the box are right. A one-bead chain gives 0."""
    xyz = make_chains_whole(traj)
    chains = _chain_indices(traj.topology)
    out = np.zeros((traj.n_frames, len(chains)))
    for c, idx in enumerate(chains):
        if idx.size >= 2:
            out[:, c] = np.linalg.norm(xyz[:, idx[-1]] - xyz[:, idx[0]], axis=-1)
    return out


def density(traj: md.Trajectory, masses_amu: Masses, *, types: Optional[Sequence[str]] = None) -> np.ndarray:
    """Mass density (g/cm³) of every frame, shape (n_frames,): total bead mass (amu) over the
    unit-cell volume (nm³), times :data:`AMU_PER_NM3_TO_G_PER_CM3`."""
    _check_unitcell(traj, "density")
    total = _masses(traj.topology, masses_amu, types).sum()
    return total / np.asarray(traj.unitcell_volumes, dtype=np.float64) * AMU_PER_NM3_TO_G_PER_CM3


def block_sem(series, n_blocks: int = 10) -> float:
    """Standard error of the mean of a time series by block averaging: the series is cut into
    ``min(n_blocks, len)`` equal consecutive blocks (the first len mod n_blocks samples are
    dropped) and SEM = std(block means, ddof=1) / sqrt(number of blocks). Blocks longer than the
    correlation time make this honest for correlated MD data; NaN for fewer than 2 samples."""
    x = np.asarray(series, dtype=np.float64).ravel()
    n = min(int(n_blocks), x.size)
    if n < 2:
        return float("nan")
    size = x.size // n
    means = x[x.size - n * size:].reshape(n, size).mean(axis=1)
    if np.ptp(means) <= 1e-12 * np.max(np.abs(means)):
        return 0.0  # a constant series (e.g. the density of an NVT run), up to rounding
    return float(means.std(ddof=1) / math.sqrt(n))


# ----------------------------------------------------------------------------- report


def _summary(values: np.ndarray, n_blocks: int) -> Dict[str, Any]:
    """values: (n_frames, n_chains)."""
    per_frame = values.mean(axis=1)
    return {
        "mean": float(per_frame.mean()),
        "sem": block_sem(per_frame, n_blocks),
        "root_mean_square": float(np.sqrt(np.mean(values ** 2))),
        "per_chain_mean": [float(v) for v in values.mean(axis=0)],
        "per_chain_sem": [block_sem(values[:, c], n_blocks) for c in range(values.shape[1])],
    }


def _relative(ref: float, cg: float, ref_sem: float = float("nan"),
              cg_sem: float = float("nan")) -> Tuple[float, float]:
    """100 (cg − ref)/ref and its propagated standard error (both in %)."""
    if ref == 0 or not np.isfinite(ref):
        return float("nan"), float("nan")
    value = 100.0 * (cg - ref) / ref
    sem = 100.0 * math.sqrt((cg_sem / ref) ** 2 + (cg * ref_sem / ref ** 2) ** 2)
    return float(value), float(sem)


def _compare_series(ref_values: np.ndarray, cg_values: np.ndarray, n_blocks: int) -> Dict[str, Any]:
    ref_s, cg_s = _summary(ref_values, n_blocks), _summary(cg_values, n_blocks)
    rel, rel_sem = _relative(ref_s["mean"], cg_s["mean"], ref_s["sem"], cg_s["sem"])
    per_chain = [_relative(r, c)[0] for r, c in zip(ref_s["per_chain_mean"], cg_s["per_chain_mean"])]
    return {"ref": ref_s, "cg": cg_s, "relative_difference_percent": rel,
            "relative_difference_percent_sem": rel_sem, "per_chain_relative_difference_percent": per_chain}


def _jsonable(value, where: str = "report"):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = _key_str(k) if isinstance(k, tuple) else str(k)
            out[key] = _jsonable(v, f"{where}[{key!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where} of type {type(value).__name__} is not JSON-serialisable; pass numbers, strings, "
                    "lists or dicts in extra")


def _figure(n_panels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, max(1, n_panels))
    rows = max(1, math.ceil(n_panels / cols))
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


_MAX_PANELS = 24


def _plot_bonded(kind: str, histograms, n_terms) -> Optional[bytes]:
    keys = sorted(histograms, key=lambda k: (-n_terms[k], k))[:_MAX_PANELS]
    if not keys:
        return None
    fig, axes = _figure(len(keys))
    scale = 1.0 if kind == "bond" else 180.0 / math.pi  # angles shown in degrees
    unit = "nm" if kind == "bond" else "deg"
    for ax, key in zip(axes, keys):
        h_ref, h_cg, edges = histograms[key]
        x = edges * scale
        ax.stairs(h_ref / scale, x, label="reference", color="k")
        ax.stairs(h_cg / scale, x, label="CG", color="tab:red")
        ax.set_title(_key_str(key), fontsize=9)
        ax.set_xlabel(f"{kind} ({unit})")
        ax.set_ylabel(f"density (1/{unit})")
    axes[0].legend(fontsize=8)
    if len(histograms) > len(keys):
        fig.suptitle(f"{len(keys)} most frequent of {len(histograms)} {kind} types")
    return _png(fig)


def _plot_rdfs(curves) -> Optional[bytes]:
    if not curves:
        return None
    keys = list(curves)[:_MAX_PANELS]
    fig, axes = _figure(len(keys))
    for ax, key in zip(axes, keys):
        r, g_ref, g_cg = curves[key]
        ax.plot(r, g_ref, color="k", label="reference")
        ax.plot(r, g_cg, color="tab:red", label="CG")
        ax.axhline(1.0, color="0.7", lw=0.8)
        ax.set_title(_key_str(key), fontsize=9)
        ax.set_xlabel("r (nm)")
        ax.set_ylabel("g(r)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _plot_chains(series: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Optional[bytes]:
    if not series:
        return None
    fig, axes = _figure(len(series))
    for ax, (label, (a, b)) in zip(axes, series.items()):
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, 41)
        ax.hist(a.ravel(), bins=edges, density=True, histtype="step", color="k", label="reference")
        ax.hist(b.ravel(), bins=edges, density=True, histtype="step", color="tab:red", label="CG")
        ax.set_xlabel(f"{label} (nm)")
        ax.set_ylabel("density (1/nm)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pm(stats: Dict[str, Any]) -> str:
    return f"{_fmt(stats['mean'])} ± {_fmt(stats['sem'], 2)}"


def _markdown(report: Dict[str, Any]) -> str:
    lines = ["# CG validation report", ""]
    meta = report["system"]
    lines += [f"{meta['n_beads']} beads in {meta['n_chains']} chains; bead types {', '.join(meta['bead_types'])}; "
              f"{meta['n_frames']['ref']} reference frames, {meta['n_frames']['cg']} CG frames. "
              "Uncertainties are standard errors of the mean from block averaging "
              f"({report['settings']['sem_blocks']} blocks).", ""]
    if report.get("speedup") is not None:
        lines += [f"**Speed-up (CG vs reference): {_fmt(report['speedup'])}×**", ""]
    lines += ["## Bonded distributions (Jensen–Shannon divergence, base 2: 0 identical, 1 disjoint)", "",
              "| kind | types | terms/frame | JSD |", "|---|---|---|---|"]
    for kind in BONDED_KINDS:
        for key, value in report["bonded"]["per_type"][kind].items():
            lines.append(f"| {kind} | {key} | {report['bonded']['n_terms'][kind][key]} | {_fmt(value)} |")
    lines += ["", "| kind | mean JSD |", "|---|---|"]
    lines += [f"| {kind} | {_fmt(v)} |" for kind, v in report["bonded"]["per_kind"].items()]
    lines.append("")
    rdfs = report["rdf"]
    lines.append("## Radial distribution functions")
    lines.append("")
    if rdfs.get("per_pair") is None:
        lines += [f"not computed: {rdfs.get('reason')}", ""]
    else:
        s = rdfs["settings"]
        lines += [f"r range {_fmt(s['r_range_nm'][0])}–{_fmt(s['r_range_nm'][1])} nm, {s['bins']} bins, "
                  f"excluded pairs: {s['exclude']}.", "",
                  "| pair | ∫\\|g_cg − g_ref\\| dr / ∫ g_ref dr | RMS(g_cg − g_ref) |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['abs_integral_ratio'])} | {_fmt(v['rms'])} |" for k, v in rdfs["per_pair"].items()]
        lines.append("")
    lines += ["## Chains and density", "", "| quantity | reference | CG | CG vs ref (%) |", "|---|---|---|---|"]
    for key, label in (("radius_of_gyration", "Rg (nm)"), ("end_to_end", "end-to-end distance (nm)")):
        block = report.get(key)
        if block is not None:
            lines.append(f"| {label} | {_pm(block['ref'])} | {_pm(block['cg'])} | "
                         f"{_fmt(block['relative_difference_percent'], 3)} ± "
                         f"{_fmt(block['relative_difference_percent_sem'], 2)} |")
    dens = report.get("density")
    if dens is not None:
        source = " (CG from a separate NPT run)" if dens.get("cg_source") == "density_traj" else ""
        lines.append(f"| density (g/cm³){source} | {_pm(dens['ref'])} | {_pm(dens['cg'])} | "
                     f"{_fmt(dens['relative_difference_percent'], 3)} ± "
                     f"{_fmt(dens['relative_difference_percent_sem'], 2)} |")
    lines.append("")
    if report.get("extra"):
        lines += ["## Extra", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in report["extra"].items()]
        lines.append("")
    if report.get("files"):
        lines += ["## Plots", ""] + [f"![{name}]({name})" for name in report["files"] if name.endswith(".png")]
        lines.append("")
    return "\n".join(lines)


def validation_report(ref: md.Trajectory, cg: md.Trajectory, masses: Masses, *, out_dir, speedup=None,
                      extra: Optional[Dict[str, Any]] = None, types: Optional[Sequence[str]] = None,
                      bonded_bins=None, rdf_range: Optional[Tuple[float, float]] = None, rdf_bins: int = 100,
                      rdf_exclude: Union[str, int] = "intramolecular", sem_blocks: int = 10,
                      density_traj: Optional[md.Trajectory] = None) -> Dict[str, Any]:
    """Compare a CG trajectory with the mapped reference and write ``out_dir``/report.json,
    report.md and PNG plots (each written atomically: temporary file + ``os.replace``).

    ``masses``: one mass (amu) per bead or ``{type: amu}``. ``speedup``: optional positive number
    (dimensionless, e.g. CG ns/day ÷ reference ns/day; stored as given). ``extra``: optional
    JSON-serialisable dict stored under ``"extra"``. The other keywords are passed on:
    ``types`` (:func:`bead_types`), ``bonded_bins`` (:func:`bonded_distributions`), ``rdf_range``
    (nm), ``rdf_bins``, ``rdf_exclude`` (:func:`rdf_pairs`), ``sem_blocks`` (:func:`block_sem`).
    ``density_traj``: the CG trajectory the density is taken from, when it is not ``cg`` (same
    topology). A structural run at the reference density (NVT) says nothing about the CG model's
    own density; pass a constant-pressure (NPT) run of the same model here.

    Returns the report (the dict written to report.json; type tuples joined with ``-``):

    * ``bonded``: :func:`compare_bonded` (JSD per type and per kind, terms per frame);
    * ``rdf``: ``per_pair`` :func:`rdf_difference` of every type pair and ``settings``; or
      ``per_pair: None`` and a ``reason`` when a trajectory has no unit cell;
    * ``radius_of_gyration`` and ``end_to_end`` (nm), over the chains of ≥ 2 beads listed in
      ``system.polymer_chains`` (topology chain indices; ``None`` if there are none; per-chain
      lists follow that order):
      for ``ref`` and ``cg`` the ``mean`` over chains and frames with its block ``sem``, the
      ``root_mean_square``, ``per_chain_mean``/``per_chain_sem``; ``relative_difference_percent``
      = 100 (cg − ref)/ref of the means with its ``..._sem`` (SEMs propagated as independent), and
      per chain;
    * ``density`` (g/cm³): ``ref``/``cg`` mean ± sem and the relative difference (``None`` without
      a unit cell), with ``cg_source`` ("cg" or "density_traj") and ``cg_frames``;
    * ``speedup``, ``extra``, ``system`` (sizes, types, frames), ``settings`` and ``files``.
    NaN values (e.g. an SEM from one frame) are written as null.
    """
    check_same_topology(ref, cg)
    if density_traj is not None:
        check_same_topology(ref, density_traj)
        if density_traj.n_frames == 0:
            raise ValueError("density_traj needs at least one frame")
    if ref.n_frames == 0 or cg.n_frames == 0:
        raise ValueError("both trajectories need at least one frame")
    if speedup is not None and not (isinstance(speedup, (int, float, np.number)) and math.isfinite(speedup)
                                    and speedup > 0):
        raise ValueError(f"speedup must be a positive number (CG rate / reference rate), got {speedup!r}")
    if extra is not None:
        if not isinstance(extra, MappingABC):
            raise TypeError(f"extra must be a dict of JSON-serialisable values, got {type(extra).__name__}")
        _jsonable(dict(extra), "extra")  # refuse unserialisable values before any work
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = bead_types(ref.topology, types)
    _masses(ref.topology, masses, types)  # refuse bad masses before any work

    bonded, histograms = _compare_bonded_values(bonded_values(ref, types=types), bonded_values(cg, types=types),
                                                ref.n_frames, bonded_bins)
    periodic = ref.unitcell_vectors is not None and cg.unitcell_vectors is not None
    if periodic:
        curves, used_range = _rdf_set(ref, cg, None, rdf_range, rdf_bins, rdf_exclude, types)
        rdf_block = {"per_pair": {k: rdf_difference(*v) for k, v in curves.items()},
                     "settings": {"r_range_nm": list(used_range), "bins": int(rdf_bins), "exclude": rdf_exclude,
                                  "normalisation": "per counted pair: g -> 1 at large r for uncorrelated beads"}}
    else:
        curves = {}
        rdf_block = {"per_pair": None, "reason": "a trajectory has no unit cell (RDFs need a periodic box)"}

    chains = [c for c, idx in enumerate(_chain_indices(ref.topology)) if idx.size >= 2]
    chain_series: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    report: Dict[str, Any] = {
        "system": {"n_beads": ref.n_atoms, "n_chains": ref.topology.n_chains, "polymer_chains": chains,
                   "bead_types": sorted(set(names)), "n_frames": {"ref": ref.n_frames, "cg": cg.n_frames}},
        "bonded": bonded,
        "rdf": rdf_block,
    }
    if chains:
        rg = (radius_of_gyration_per_chain(ref, masses, types=types)[:, chains],
              radius_of_gyration_per_chain(cg, masses, types=types)[:, chains])
        ee = (end_to_end_distance(ref)[:, chains], end_to_end_distance(cg)[:, chains])
        report["radius_of_gyration"] = _compare_series(*rg, sem_blocks)
        report["end_to_end"] = _compare_series(*ee, sem_blocks)
        chain_series = {"radius of gyration": rg, "end-to-end distance": ee}
    else:
        report["radius_of_gyration"] = report["end_to_end"] = None
    dens_cg_traj = cg if density_traj is None else density_traj
    if periodic and dens_cg_traj.unitcell_vectors is not None:
        d_ref, d_cg = density(ref, masses, types=types), density(dens_cg_traj, masses, types=types)
        stats_ref = {"mean": float(d_ref.mean()), "sem": block_sem(d_ref, sem_blocks)}
        stats_cg = {"mean": float(d_cg.mean()), "sem": block_sem(d_cg, sem_blocks)}
        rel, rel_sem = _relative(stats_ref["mean"], stats_cg["mean"], stats_ref["sem"], stats_cg["sem"])
        report["density"] = {"ref": stats_ref, "cg": stats_cg, "relative_difference_percent": rel,
                             "relative_difference_percent_sem": rel_sem,
                             "cg_source": "cg" if density_traj is None else "density_traj",
                             "cg_frames": int(dens_cg_traj.n_frames)}
    else:
        report["density"] = None
    report["speedup"] = None if speedup is None else float(speedup)
    report["extra"] = dict(extra) if extra is not None else None
    bins_used = {k: _bins_for(k, bonded_bins) for k in BONDED_KINDS}
    report["settings"] = {
        "bonded_bins": {k: int(v) if np.ndim(v) == 0 else "edges given" for k, v in bins_used.items()},
        "sem_blocks": int(sem_blocks),
        "units": {"length": "nm", "angle": "rad", "density": "g/cm^3", "mass": "amu"},
    }

    plots = {f"bonded_{kind}.png": _plot_bonded(kind, histograms[kind], bonded["n_terms"][kind])
             for kind in BONDED_KINDS}
    plots["rdf.png"] = _plot_rdfs(curves)
    plots["chains.png"] = _plot_chains(chain_series)
    plots = {name: data for name, data in plots.items() if data is not None}
    report["files"] = ["report.json", "report.md", *plots]
    report = _jsonable(report)
    for name, data in plots.items():
        atomic_write_bytes(out / name, data)
    atomic_write_bytes(out / "report.md", _markdown(report).encode("utf-8"))
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    return report
