"""Which bead pairs the repulsive prior acts on (not excluded by the bond graph), and the
nearest-neighbour contact distances per type pair that set its sigma (nm). The search over pairs
uses :mod:`multiscale.neighbors` for large systems, the one owner of "who is near whom"."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from multiscale.cg.topology import BondGraph
from multiscale.cg.geometry import (
    _as_boxes,
    _as_frames,
    _as_index,
    pair_distances,
)
from multiscale.neighbors import pairs_within
from multiscale.cg.priors.records import _EXCLUSIONS, TypeKey, canonical_key

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

    ``method``: "pairs" (all non-excluded pairs, vectorised over frames; O(T n²)), "cells" (the O(n)
    cell list of :mod:`multiscale.neighbors`, one frame at a time) or "auto" ("pairs" while T·n²/2 ≤ 2·10⁷). Same result.
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

    excluded = excluded_pairs(n_beads, bonds, exclusion)
    excluded_keys = np.sort(excluded[:, 0] * n_beads + excluded[:, 1])
    for t in range(n_frames):
        i, j, d = pairs_within(x[t], None if box is None else box[t], float(cutoff_nm))
        pair_key = np.minimum(i, j) * n_beads + np.maximum(i, j)
        keep = ~np.isin(pair_key, excluded_keys) if len(excluded_keys) else np.ones(len(i), dtype=bool)
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


