"""Iterative Boltzmann inversion of the pair tables (Reith, Pütz & Müller-Plathe 2003; VOTCA's
csg_inverse): after a CG run in the reference's box, each pair table moves by
ΔU(r) = kBT ln[n_cg(r)/n_ref(r)], n the pair counts per frame (:func:`~multiscale.cg.analysis.
pair_counts`), so that the bead packing becomes the reference's.

Why force matching needs it for a solvent-free bilayer: the mapped forces are ~99 % the water's
kicks, so the pair tables come out right in shape but not in the packing they produce; the DMPC
quick patch's CG core came out ~20 % too dense (its thickness −16 % at the reference's area) and
no intermolecular ramp restored it. The counts carry what the forces hide.

Only bins with at least ``min_count`` pairs in both runs are trusted: ΔU is taken on the span from
the first trusted bin to the cutoff (the table's force at the cutoff stays 0, so ΔU is referenced
there), and its force enters at the trusted knots only. Below the trusted span (contacts too rare
to count) the table and its wall are left as they are.

Units: nm, kJ/mol, K.
"""

from __future__ import annotations

import copy
from typing import Dict

import numpy as np

from multiscale.cg.analysis.pair_counts import PairCounts
from multiscale.cg.tabulated.tables import Table, TabulatedModel
from multiscale.units import kT

#: the fewest pairs in a bin, in each of the two runs, for its ratio to count (relative error of
#: a count of 30 is ~18 %, 0.18 kBT in ΔU)
MIN_PAIR_COUNT = 30


def refine_pairs(model: TabulatedModel, reference: PairCounts, cg: PairCounts, *, temperature_K: float,
                 damping: float = 0.25, min_count: int = MIN_PAIR_COUNT) -> TabulatedModel:
    """A copy of ``model`` whose pair tables carry ``damping`` × the inversion step above, from
    the pair counts of the mapped ``reference`` and of a ``cg`` run of ``model`` in the same box.
    ``fit["pair_refinements"]`` counts the steps and records each table's largest |ΔU| (kJ/mol)
    and the mean |n_cg − n_ref| / n_ref over its trusted bins (0: the packing is the reference's)."""
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}")
    out = copy.deepcopy(model)
    shifts: Dict[str, float] = {}
    deviations: Dict[str, float] = {}
    for key, table in out.pairs.items():
        q = table.knots

        def on_knots(counts: PairCounts):
            # counts per nm at the knots, and the raw counts per bin there (for the trust test)
            raw = np.interp(q, counts.r, counts.counts.get(key, np.zeros_like(counts.r)), left=0.0, right=0.0)
            return raw / (counts.frames * counts.spacing), raw

        n_ref, raw_ref = on_knots(reference)
        n_cg, raw_cg = on_knots(cg)
        trusted = (raw_ref >= min_count) & (raw_cg >= min_count)
        if trusted.sum() < 3:
            continue
        first = int(np.flatnonzero(trusted)[0])
        span = slice(first, len(q))
        floor_ref = 0.5 / (reference.frames * reference.spacing)
        floor_cg = 0.5 / (cg.frames * cg.spacing)
        delta_u = np.zeros_like(q)
        delta_u[span] = kT(temperature_K) * np.log(np.maximum(n_cg[span], floor_cg) / np.maximum(n_ref[span], floor_ref))
        delta_g = np.zeros_like(q)
        delta_g[span] = -np.gradient(delta_u[span], q[span])
        delta_g[~trusted] = 0.0
        delta_g[-1] = 0.0  # no force at the cutoff
        out.pairs[key] = Table("pair", q, table.force + damping * delta_g, table.wall, samples=table.samples)
        name = "-".join(key)
        shifts[name] = float(np.max(np.abs(delta_u[trusted] - delta_u[trusted][-1])))
        deviations[name] = float(np.mean(np.abs(n_cg[trusted] - n_ref[trusted]) / n_ref[trusted]))
    done = int(out.fit.get("pair_refinements", {}).get("count", 0)) + 1
    out.fit = {**out.fit, "pair_refinements": {"count": done, "max_abs_delta_u_kj_mol": shifts,
                                               "mean_relative_count_deviation": deviations}}
    return out
