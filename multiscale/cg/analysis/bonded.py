"""Bonded distributions (bond lengths nm, angles and dihedrals rad) per bead-type tuple, and their
Jensen–Shannon comparison between two trajectories."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping as MappingABC, Optional, Sequence, Tuple, Union

import mdtraj as md
import numpy as np

from multiscale.cg.topology import BondGraph
from multiscale.cg.analysis.beads import TypeKey, _key_str, _type_key, bead_types, check_same_topology
from multiscale.cg.analysis.divergence import jensen_shannon


#: The bonded kinds, in report order.
BONDED_KINDS = ("bond", "angle", "dihedral")
#: Default number of histogram bins per bonded kind: bonds over the sampled range of each type
#: (nm), angles over [0, π] (2° bins), dihedrals over [−π, π] (4° bins).
DEFAULT_BONDED_BINS = {"bond": 100, "angle": 90, "dihedral": 90}
_FIXED_RANGES = {"angle": (0.0, math.pi), "dihedral": (-math.pi, math.pi)}


def bonded_terms(topology: md.Topology) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bonds (n, 2), angles (n, 3) and proper dihedrals (n, 4) as bead-index arrays, from the
    topology bonds (:class:`multiscale.cg.topology.BondGraph`). Each term appears once (bonds
    i < j; angles i < k around the centre j; dihedrals once per central bond j < k and end pair
    i, l with i ≠ l)."""
    graph = BondGraph.from_mdtraj(topology)
    return graph.bonds, graph.angles(), graph.dihedrals()


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


def compare_bonded(ref: md.Trajectory, cg: md.Trajectory, bonds=None, angles=None, dihedrals=None,
                   bins=None, *, types: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Jensen–Shannon divergences between the bonded distributions of ``ref`` and ``cg``.

    Both are histogrammed on common edges (integer bins of bond types span the union of both
    samples). Returns ``{"per_type": {kind: {types: jsd}}, "per_kind": {kind: mean jsd over its
    types (unweighted) or None}, "n_terms": {kind: {types: number of terms per frame}}}``; JSDs
    are base 2, in [0, 1]. A type present in only one trajectory is impossible (same topology).
    ``"reference_halves"`` ``{kind: {types: jsd}}`` is the divergence between the reference's
    first and second halves of frames on the same edges: the sampling-noise floor of each JSD (a
    histogram of a few thousand correlated values disagrees with itself; None for one frame).
    """
    check_same_topology(ref, cg)
    if ref.n_frames == 0 or cg.n_frames == 0:
        raise ValueError("both trajectories need at least one frame")
    samples = {"ref": bonded_values(ref, bonds, angles, dihedrals, types=types),
               "cg": bonded_values(cg, bonds, angles, dihedrals, types=types)}
    return _compare_bonded_values(samples["ref"], samples["cg"], ref.n_frames, bins)[0]


def _compare_bonded_values(ref_values, cg_values, n_ref_frames: int, bins):
    result: Dict[str, Any] = {"per_type": {}, "per_kind": {}, "n_terms": {}, "reference_halves": {}}
    half_frames = n_ref_frames // 2
    histograms: Dict[str, Dict[TypeKey, Tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for kind in BONDED_KINDS:
        result["per_type"][kind], result["n_terms"][kind], histograms[kind] = {}, {}, {}
        result["reference_halves"][kind] = {}
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
            # values are frame-major (bonded_values), so the first half of frames is a prefix
            split = half_frames * result["n_terms"][kind][key]
            first, second = (np.histogram(part, bins=edges)[0].astype(np.float64) for part in (a[:split], a[split:2 * split]))
            result["reference_halves"][kind][key] = (jensen_shannon(first, second) if first.sum() > 0 and second.sum() > 0
                                                     else None)
            widths = np.diff(edges)
            histograms[kind][key] = (ha / (ha.sum() * widths), hb / (hb.sum() * widths), edges)
        values = list(result["per_type"][kind].values())
        result["per_kind"][kind] = float(np.mean(values)) if values else None
    return result, histograms

