"""Iterative Boltzmann refinement of the bonded tables (Reith, Pütz & Müller-Plathe 2003): after a
CG run, each bond, angle and chain-pair (1-5, 1-6, … distance) table moves by ΔU(q) = kBT ln[P_cg(q)/P_ref(q)], so that where the CG
model samples a value too often its energy rises there. The Jacobians (r², sin θ) cancel in the
ratio. It corrects what the non-bonded tables (and the ramps added after the fit) do to the
intramolecular distributions, which the Boltzmann-inverted or force-matched tables ignore.

Optionally the combined bending–torsion terms too: their energy is sin³θ₁ sin³θ₂ Σ aₙ cos nφ, so
the torsional ΔU(φ) (periodic densities) is projected on cos nφ and divided by the reference's
mean bending weight ⟨sin³θ₁⟩⟨sin³θ₂⟩ (the two angles taken as independent; floored at
:data:`MIN_BENDING_WEIGHT`): an approximate Newton step that the next round corrects.

Units: nm, rad, kJ/mol, K.
"""

from __future__ import annotations

import copy
from typing import Dict, Mapping

import numpy as np

from multiscale.cg.priors.records import TypeKey, canonical_key
from multiscale.cg.tabulated.kernel_density import kernel_density
from multiscale.cg.tabulated.tables import Table, TabulatedModel
from multiscale.units import kT

#: where either density is below this fraction of its peak, ΔU is not trusted and left at 0
MIN_RELATIVE_DENSITY = 0.02
#: chain-pair tables (1-5, 1-6, … distances) are refined only where both densities exceed this
#: fraction of their peaks. Their distributions' tails are the chain's fully stretched and fully
#: folded shapes, which the bond, angle and bending–torsion terms bound: with the bonded floor
#: (2 %), six rounds in the polyethylene quick job deepened a well at the 1-5 pair's stretched end
#: by ~12 kJ/mol, the angle refinement pulled the other way, and the chains came out 9.5 % too
#: large (Rg).
CHAIN_PAIR_MIN_RELATIVE_DENSITY = 0.15
#: points of the periodic grid on which torsional densities are compared (5°)
DIHEDRAL_GRID_POINTS = 72
#: floor of the mean bending weight ⟨sin³θ₁⟩⟨sin³θ₂⟩ that the torsional step is divided by. The
#: weight is a mean: where the bead angles open towards 90° the term weighs up to 1/weight more.
#: In polyethylene bead chains (weight ~0.07–0.1) three full steps took a₁ from −3…−8 to −17…−21
#: kJ/mol, and in one run of two that pulled the bead angles towards 100° (angle JSD 0.025,
#: chains 7 % small); with the floor a step is at most 4× the projected ΔU.
MIN_BENDING_WEIGHT = 0.25


def refine_bonded(model: TabulatedModel, reference: Mapping[str, Mapping[TypeKey, np.ndarray]],
                  cg: Mapping[str, Mapping[TypeKey, np.ndarray]], *, temperature_K: float,
                  damping: float = 1.0, dihedrals: bool = False) -> TabulatedModel:
    """A copy of ``model`` whose bond, angle and chain-pair tables (and bending–torsion
    coefficients, with ``dihedrals``) carry ``damping`` × the refinement above.
    ``reference`` and ``cg``: sampled values per kind ("bond", "angle", "dihedral") and type tuple, as
    :func:`multiscale.cg.analysis.bonded_values` returns them, and under "chain_pair" per
    (bonds apart, types) as :func:`multiscale.cg.analysis.chain_pair_values` does (a table
    without samples on both sides is left as it is). ``fit["bonded_refinements"]``
    counts the refinements and records each table's JSD-like change."""
    if not 0.0 < damping <= 1.0:
        raise ValueError(f"damping must be in (0, 1], got {damping!r}")
    out = copy.deepcopy(model)
    shifts: Dict[str, float] = {}
    for kind, tables in (("bond", out.bonds), ("angle", out.angles), ("chain_pair", out.chain_pairs)):
        for key, table in tables.items():
            ref_values = reference.get(kind, {}).get(key)
            cg_values = cg.get(kind, {}).get(key)
            if ref_values is None or cg_values is None or len(ref_values) == 0 or len(cg_values) == 0:
                continue
            q = table.knots
            spacing = float(np.min(np.diff(q)))
            p_ref, p_cg = kernel_density(q, ref_values, spacing), kernel_density(q, cg_values, spacing)
            floor = CHAIN_PAIR_MIN_RELATIVE_DENSITY if kind == "chain_pair" else MIN_RELATIVE_DENSITY
            trusted = (p_ref > floor * p_ref.max()) & (p_cg > floor * p_cg.max())
            if trusted.sum() < 3:
                continue
            # ΔU on the span of trusted knots (densities floored there), its force inside the
            # trusted knots only: no jump at the span's edges enters the gradient
            first, last = np.flatnonzero(trusted)[[0, -1]]
            span = slice(first, last + 1)
            floor_ref, floor_cg = floor * p_ref.max(), floor * p_cg.max()
            delta_u = np.zeros_like(q)
            delta_u[span] = kT(temperature_K) * np.log(np.maximum(p_cg[span], floor_cg) / np.maximum(p_ref[span], floor_ref))
            delta_g = np.zeros_like(q)
            delta_g[span] = -np.gradient(delta_u[span], q[span])
            delta_g[~trusted] = 0.0
            # a new Table, so that its invariants hold again (an angle table's zero force at π)
            tables[key] = Table(table.kind, table.knots, table.force + damping * delta_g, table.wall, samples=table.samples)
            shifts["-".join((kind,) + tuple(str(k) for k in key))] = float(np.max(np.abs(delta_u[trusted])))
    if dihedrals:
        for key, coefficients in out.dihedrals.items():
            delta = _torsion_shift(key, reference, cg, temperature_K)
            if delta is not None:
                change, largest = delta
                out.dihedrals[key] = np.asarray(coefficients, dtype=np.float64) + damping * change[:len(coefficients)]
                shifts["-".join(("dihedral",) + tuple(key))] = largest
    done = int(out.fit.get("bonded_refinements", {}).get("count", 0)) + 1
    out.fit = {**out.fit, "bonded_refinements": {"count": done, "max_abs_delta_u_kj_mol": shifts}}
    return out


def _torsion_shift(key: TypeKey, reference, cg, temperature_K: float):
    """(Δaₙ for n = 0…, largest |ΔU(φ)| kJ/mol) of one bending–torsion type, or None without
    samples. Δa₀ is 0 (a constant)."""
    ref_values = reference.get("dihedral", {}).get(key)
    cg_values = cg.get("dihedral", {}).get(key)
    if ref_values is None or cg_values is None or len(ref_values) == 0 or len(cg_values) == 0:
        return None
    phi = np.linspace(-np.pi, np.pi, DIHEDRAL_GRID_POINTS, endpoint=False)
    spacing = 2 * np.pi / DIHEDRAL_GRID_POINTS

    def periodic_density(values):
        values = np.asarray(values, dtype=np.float64).ravel()
        return kernel_density(phi, np.concatenate([values - 2 * np.pi, values, values + 2 * np.pi]), spacing)

    p_ref, p_cg = periodic_density(ref_values), periodic_density(cg_values)
    delta_u = kT(temperature_K) * np.log(np.maximum(p_cg, MIN_RELATIVE_DENSITY * p_cg.max())
                                         / np.maximum(p_ref, MIN_RELATIVE_DENSITY * p_ref.max()))
    delta_u -= delta_u.mean()
    weight = 1.0
    for angle in (key[:3], key[1:]):
        theta = reference.get("angle", {}).get(canonical_key(angle))
        if theta is not None and len(theta):
            weight *= float(np.mean(np.sin(np.asarray(theta)) ** 3))
    weight = max(weight, MIN_BENDING_WEIGHT)
    orders = np.arange(DIHEDRAL_GRID_POINTS // 2)
    change = np.array([0.0] + [2.0 * np.mean(delta_u * np.cos(n * phi)) / weight for n in orders[1:]])
    return change, float(np.max(np.abs(delta_u)))
