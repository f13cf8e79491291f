"""Pair-distance counts per bead-type pair: how many bead pairs per frame fall in each distance
bin, over the pairs a tabulated model's pair tables act on (every pair not excluded by the
bonded separation). Iterative Boltzmann inversion of the pair tables
(:func:`multiscale.cg.tabulated.refine_pairs`) takes the ratio of a CG run's counts to the mapped
reference's: in the same box both are g(r) up to the same factor, so no normalisation (bulk
density, box volume, the vacuum above a solvent-free bilayer) enters.

Units: nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import TypeKey, _type_key, bead_types


@dataclass(frozen=True)
class PairCounts:
    """``counts[type pair]``: the number of pairs in each bin centred on ``r`` (nm), summed over
    ``frames`` frames; ``spacing`` is the bin width (nm)."""

    r: np.ndarray
    spacing: float
    counts: Dict[TypeKey, np.ndarray]
    frames: int

    def per_frame(self, key: TypeKey) -> np.ndarray:
        """Mean number of pairs of type ``key`` per frame in each bin (zeros for a pair type never
        within the range)."""
        return self.counts.get(key, np.zeros_like(self.r)) / self.frames


def pair_counts(traj: md.Trajectory, bonds: Any, *, cutoff_nm: float, spacing_nm: float, exclusion: str = "1-3",
                types: Optional[Sequence[str]] = None) -> PairCounts:
    """Counts of the non-excluded bead pairs (``exclusion`` of the bead ``bonds``, as the pair
    tables use) per type pair, in bins of width ``spacing_nm`` centred on cutoff − m·spacing
    (m = 0, 1, …, the knots of the tables a fit with that cutoff and spacing makes), minimum image
    in the trajectory's cell (none: open boundaries)."""
    from multiscale.cg.priors.contacts import excluded_pairs
    from multiscale.neighbors import pairs_within

    if not (0.0 < spacing_nm <= 0.25 * cutoff_nm):
        raise ValueError(f"need 0 < spacing_nm <= cutoff_nm / 4 (nm), got spacing {spacing_nm}, cutoff {cutoff_nm}")
    if traj.n_frames == 0:
        raise ValueError("no frames to count pairs in")
    names = bead_types(traj.topology, types)
    n = traj.n_atoms
    unique = sorted(set(names))
    code = np.array([unique.index(t) for t in names], dtype=np.int64)
    excluded = excluded_pairs(n, bonds, exclusion)
    excluded_codes = np.sort(excluded[:, 0] * n + excluded[:, 1]) if len(excluded) else np.zeros(0, dtype=np.int64)
    m = int(np.floor(cutoff_nm / spacing_nm + 1e-9))
    r = cutoff_nm - spacing_nm * np.arange(m)[::-1]
    edges = np.concatenate([r - 0.5 * spacing_nm, [cutoff_nm + 0.5 * spacing_nm]])
    totals = np.zeros((len(unique) * len(unique), len(r)))
    for t in range(traj.n_frames):
        box = None if traj.unitcell_vectors is None else traj.unitcell_vectors[t].astype(np.float64)
        i, j, d = pairs_within(traj.xyz[t].astype(np.float64), box, cutoff_nm)
        keep = i < j
        if excluded_codes.size:
            codes = i * n + j
            at = np.clip(np.searchsorted(excluded_codes, codes), 0, excluded_codes.size - 1)
            keep &= excluded_codes[at] != codes
        i, j, d = i[keep], j[keep], d[keep]
        a, b = np.minimum(code[i], code[j]), np.maximum(code[i], code[j])
        column = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(r) - 1)
        np.add.at(totals, (a * len(unique) + b, column), 1.0)
    counts = {}
    for a in range(len(unique)):
        for b in range(a, len(unique)):
            row = totals[a * len(unique) + b]
            if row.any():
                counts[_type_key([unique[a], unique[b]])] = row
    return PairCounts(r, float(spacing_nm), counts, int(traj.n_frames))
