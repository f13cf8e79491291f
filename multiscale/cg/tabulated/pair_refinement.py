"""Iterative Boltzmann inversion of the pair tables (Reith, Pütz & Müller-Plathe 2003; VOTCA's
csg_inverse): after a CG run in the reference's box, each pair table moves by
ΔU(r) = kBT ln[n_cg(r)/n_ref(r)], n the pair counts per frame (:func:`~multiscale.cg.analysis.
pair_counts`), so that the bead packing becomes the reference's.

Why force matching needs it for a solvent-free bilayer: the mapped forces are ~99 % the water's
kicks, so the pair tables come out right in shape but not in the packing they produce; the DMPC
quick patch's CG core came out ~20 % too dense (its thickness −16 % at the reference's area) and
no intermolecular ramp restored it. The counts carry what the forces hide.

``smoothing_nm`` > 0 smooths each step over the knots with a Gaussian of that width (VOTCA's
``post_update smooth`` does the same for its IBI steps), so that the inversion cannot build
features narrower than the width. Tried on the one DMPC quick run whose bilayer froze at zero
tension. Its unsmoothed steps had built a narrow −1.8 kJ/mol well into the tail–tail (C–C) table
at 0.54 nm, the tails' close-packing distance, where its force-matched table had none. A narrow
tail attraction makes a solvent-free lipid model gel (Cooke, Kremer & Deserno, Phys. Rev. E 72,
011506 (2005)). With steps smoothed over 0.08 nm, six rounds left the pair counts 18 % off
(38 % unsmoothed), and the area controller settled inside its bound. But the bilayer still froze
at zero tension (area −12.8 %, tail P₂ 0.77 against 0.48). So the option is off by default.

``trust="both"`` (the default): only bins with at least ``min_count`` pairs in both runs are
trusted: ΔU is taken on the span from
the first trusted bin to the cutoff (the table's force at the cutoff stays 0, so ΔU is referenced
there), and its force enters at the trusted knots only. Below the trusted span (contacts too rare
to count) the table and its wall are left as they are. ``trust="either"``: a bin counts when
either run has ``min_count`` pairs there, the empty side at its floor of half a pair, so that
contacts the CG model makes and the reference (almost) never does are pushed apart too; each
knot's ΔU is then clipped to ±``max_step_kt`` kBT before damping.

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
#: the largest |ΔU| (kBT) of one step at a knot with ``trust="either"``, before damping: a bin
#: counted in one run and (nearly) empty in the other has a ratio set by the empty run's floor
MAX_STEP_KT = 3.0


def gaussian_smooth(x: np.ndarray, values: np.ndarray, width: float) -> np.ndarray:
    """``values`` on the grid ``x`` averaged with Gaussian weights exp(−½ (Δx / width)²), each
    point's weights normalised over the grid (so a constant stays constant up to the ends)."""
    weights = np.exp(-0.5 * ((x[:, None] - x[None, :]) / width) ** 2)
    return (weights @ values) / weights.sum(axis=1)


def refine_pairs(model: TabulatedModel, reference: PairCounts, cg: PairCounts, *, temperature_K: float,
                 damping: float = 0.25, min_count: int = MIN_PAIR_COUNT, smoothing_nm: float = 0.0,
                 trust: str = "both", max_step_kt: float = MAX_STEP_KT) -> TabulatedModel:
    """A copy of ``model`` whose pair tables carry ``damping`` × the inversion step above, from
    the pair counts of the mapped ``reference`` and of a ``cg`` run of ``model`` in the same box,
    smoothed over the knots by a Gaussian of width ``smoothing_nm`` (0: not smoothed).
    ``fit["pair_refinements"]`` counts the steps and records each table's largest |ΔU| (kJ/mol)
    and the mean |n_cg − n_ref| / n_ref over its trusted bins (0: the packing is the reference's)."""
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count!r}")
    if trust not in ("both", "either"):
        raise ValueError(f"trust must be 'both' or 'either', got {trust!r}")
    if not max_step_kt > 0:
        raise ValueError(f"max_step_kt must be > 0 (kBT), got {max_step_kt!r}")
    if not 0.0 <= smoothing_nm < 0.5:
        raise ValueError(f"smoothing_nm must be a width in nm in [0, 0.5), got {smoothing_nm!r}")
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
        if trust == "both":
            trusted = (raw_ref >= min_count) & (raw_cg >= min_count)
        else:
            trusted = (raw_ref >= min_count) | (raw_cg >= min_count)
        if trusted.sum() < 3:
            continue
        first = int(np.flatnonzero(trusted)[0])
        span = slice(first, len(q))
        floor_ref = 0.5 / (reference.frames * reference.spacing)
        floor_cg = 0.5 / (cg.frames * cg.spacing)
        delta_u = np.zeros_like(q)
        ratio = np.log(np.maximum(n_cg[span], floor_cg) / np.maximum(n_ref[span], floor_ref))
        if trust == "either":  # a floor's ratio is as large as the other run's count makes it
            ratio = np.clip(ratio, -max_step_kt, max_step_kt)
        delta_u[span] = kT(temperature_K) * ratio
        delta_g = np.zeros_like(q)
        delta_g[span] = -np.gradient(delta_u[span], q[span])
        delta_g[~trusted] = 0.0
        delta_g[-1] = 0.0  # no force at the cutoff
        if smoothing_nm > 0:
            delta_g = gaussian_smooth(q, delta_g, smoothing_nm)
            delta_g[~trusted] = 0.0  # below the trusted span the table stays as it is
            delta_g[-1] = 0.0
        out.pairs[key] = Table("pair", q, table.force + damping * delta_g, table.wall, samples=table.samples)
        name = "-".join(key)
        shifts[name] = float(np.max(np.abs(delta_u[trusted] - delta_u[trusted][-1])))
        both = (raw_ref >= min_count) & (raw_cg >= min_count)  # where the relative deviation is defined
        if both.any():
            deviations[name] = float(np.mean(np.abs(n_cg[both] - n_ref[both]) / n_ref[both]))
    done = int(out.fit.get("pair_refinements", {}).get("count", 0)) + 1
    out.fit = {**out.fit, "pair_refinements": {"count": done, "max_abs_delta_u_kj_mol": shifts,
                                               "mean_relative_count_deviation": deviations}}
    return out
