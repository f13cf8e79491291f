"""Radial distribution functions g_AB(r) of bead types (nm), and how far two of them differ."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import mdtraj as md
import numpy as np

from multiscale.cg.topology import BondGraph, pair_codes
from multiscale.cg.analysis.beads import _check_unitcell, _half_min_width, bead_types, check_same_topology


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

