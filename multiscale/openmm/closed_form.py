"""The tabulated (MS-CG) CG model as closed-form OpenMM forces: each table projected onto a
polynomial (:func:`multiscale.cg.tabulated.closed_form.closed_form`), the form OpenMM's CPU
kernels evaluate 4-5 times faster than a tabulated function (``bench_cg.py --kernels``).

* pairs: one CustomNonbondedForce, U = Σₘ cₘ(tᵢ, tⱼ) yᵐ, y = (r − centre) × scale, with the
  type pair's coefficients mixed from per-bead one-hot type flags (oₐ = 1 for the bead's type):
  cₘ = Σ_{a ≤ b} C_{ab,m} w_{ab}, w_{aa} = oₐ₁ oₐ₂, w_{ab} = oₐ₁ o_b₂ + o_b₁ oₐ₂. A coefficient
  picked by a Discrete2DFunction instead cost 6.3 ms per call for this job's 192 beads (a lookup per
  coefficient per pair), the mixed flags 0.29 ms. The cost grows with the square of the number of
  bead types: the form suits few types (a polymer's ends and middles), not a lipid's ten.
  Below each type pair's range its wall; at the cutoff U = dU/dr = 0 exactly; the model's
  intermolecular ramps as in :mod:`multiscale.openmm.tabulated` (folded into the polynomials, or
  adjustable through the same global parameters);
* bonds: a CustomBondForce, angles: a CustomAngleForce (a polynomial in cos θ), per-term
  coefficients, the tables' walls beyond each polynomial's range; chain pairs as bonds, without
  periodic images;
* bending–torsion terms as in the tabulated form (they are expressions already).

Force names and global parameters are those of :mod:`multiscale.openmm.tabulated`, so that code
that finds a force by name, or sets a ramp, works on either form. Units: nm, rad, kJ/mol.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np
import openmm
from numpy.polynomial import Polynomial

from multiscale.cg.geometry import _as_index
from multiscale.cg.priors.contacts import excluded_pairs
from multiscale.cg.priors.records import canonical_key
from multiscale.cg.tabulated.closed_form import ClosedForm, closed_form
from multiscale.cg.tabulated.tables import TabulatedModel
from multiscale.openmm.tabulated import (CHAIN_PAIR_FORCE, INTERMOLECULAR_ALL_PAIRS, INTERMOLECULAR_SCALE,
                                         _intramolecular_ramp_correction, _num, bending_torsion_force, chain_pair_groups,
                                         grouped_terms)
from multiscale.units import KB_KJ_PER_MOL_K


def _horner(prefix: str, degree: int, variable: str = "y") -> str:
    text = f"{prefix}{degree}"
    for m in range(degree - 1, -1, -1):
        text = f"{prefix}{m}+{variable}*({text})"
    return text


def _recentred(form: ClosedForm, centre: float, scale: float) -> np.ndarray:
    """``form``'s power coefficients in y' = (v − centre) × scale instead of its own y."""
    # y = (centre − form.centre) × form.scale + (form.scale / scale) × y'
    inner = Polynomial([(centre - form.centre) * form.scale, form.scale / scale])
    return Polynomial(form.power)(inner).coef


def _bonded_force(kind: str, groups: Dict, forms: Dict[Any, ClosedForm], periodic: bool):
    degree = max(forms[key].degree for key in groups)
    q, y = ("r", "y=(r-c)*k") if kind == "bond" else ("theta", "y=(cos(theta)-c)*k")
    energy = (f"select(step(lo-{q}), ulo+glo*(lo-{q})+hw*(lo-{q})^2, "
              f"select(step({q}-hi), uhi-ghi*({q}-hi)+hw*({q}-hi)^2, {_horner('b', degree)})); {y}")
    force = openmm.CustomBondForce(energy) if kind == "bond" else openmm.CustomAngleForce(energy)
    force.setName(f"cg_tabulated_{kind}s")
    names = ["lo", "hi", "ulo", "glo", "uhi", "ghi", "hw", "c", "k"] + [f"b{m}" for m in range(degree + 1)]
    for name in names:
        (force.addPerBondParameter if kind == "bond" else force.addPerAngleParameter)(name)
    for key, rows in sorted(groups.items()):
        f = forms[key]
        # an angle form open above (the straight angle) never reaches its upper wall: θ ≤ π < 4
        hi = 4.0 if f.open_above else f.hi
        power = np.concatenate([f.power, np.zeros(degree + 1 - len(f.power))])
        parameters = [f.lo, hi, f.u_lo, f.g_lo, f.u_hi, f.g_hi, 0.5 * f.wall, f.centre, f.scale] + power.tolist()
        for row in rows:
            if kind == "bond":
                force.addBond(int(row[0]), int(row[1]), [float(p) for p in parameters])
            else:
                force.addAngle(int(row[0]), int(row[1]), int(row[2]), [float(p) for p in parameters])
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force


def _mixed(values: Dict[tuple, float], unique: Sequence[str]) -> str:
    """Σ_{a ≤ b} value(a, b) w_{ab} as an expression of the one-hot flags' pair weights."""
    terms = []
    for a in range(len(unique)):
        for b in range(a, len(unique)):
            v = values.get((unique[a], unique[b]), 0.0)
            if v != 0.0:
                terms.append(f"{_num(v)}*w{a}_{b}")
    return "(" + ("+".join(terms) if terms else "0") + ")"


def closed_form_forces(model: TabulatedModel, bead_types: Sequence[str], bonds: Any, angles: Any = (),
                       dihedrals: Any = (), *, periodic: bool, adjustable_ramps: bool = False) -> List[Any]:
    """The OpenMM forces of ``model`` in closed form on beads of ``bead_types`` with the given
    bonded terms (arguments as :func:`multiscale.openmm.tabulated.tabulated_forces`)."""
    names = [str(t) for t in bead_types]
    n = len(names)
    kt = KB_KJ_PER_MOL_K * float(model.temperature_K)
    bond_idx = _as_index(bonds, 2, "bonds", n)
    angle_idx = _as_index(angles, 3, "angles", n)
    dihedral_idx = _as_index(dihedrals, 4, "dihedrals", n)
    forces: List[Any] = []
    for kind, index, tables in (("bond", bond_idx, model.bonds), ("angle", angle_idx, model.angles)):
        groups = grouped_terms(names, index, kind, tables)
        if groups:
            forms = {key: closed_form(tables[key], kt) for key in groups}
            forces.append(_bonded_force(kind, groups, forms, periodic))
    groups = chain_pair_groups(model, names, bond_idx)
    if groups:
        # distances along the chain: the beads' own coordinates, no periodic images (as in the tabulated form)
        force = _bonded_force("bond", groups, {key: closed_form(model.chain_pairs[key], kt) for key in groups}, False)
        force.setName(CHAIN_PAIR_FORCE)
        forces.append(force)
    torsions = bending_torsion_force(model, names, dihedral_idx, periodic)
    if torsions is not None:
        forces.append(torsions)
    if not model.pairs:
        return forces

    unique = sorted(set(names))
    pairs = [(unique[a], unique[b]) for a in range(len(unique)) for b in range(a, len(unique))]
    missing = [p for p in pairs if canonical_key(p) not in model.pairs]
    if missing:
        raise ValueError(f"the tabulated model has no pair table for bead types {canonical_key(missing[0])}; "
                         "refit it on data where such pairs come within the cutoff")
    ramps = np.zeros((len(unique), len(unique)))
    for key, value in model.intermolecular.items():
        if key[0] in unique and key[1] in unique:
            a, b = unique.index(key[0]), unique.index(key[1])
            ramps[a, b] = ramps[b, a] = float(value)
    rc = float(model.cutoff_nm)
    forms = {}
    for p in pairs:
        form = closed_form(model.pairs[canonical_key(p)], kt)
        if not adjustable_ramps:  # fixed ramps folded into the polynomials, as into the tables
            form = form.with_ramp(ramps[unique.index(p[0]), unique.index(p[1])], rc)
        forms[p] = form
    # one variable y for all type pairs, over the widest range
    lo = min(f.lo for f in forms.values())
    centre, scale = 0.5 * (lo + rc), 2.0 / (rc - lo)
    power = {p: _recentred(f, centre, scale) for p, f in forms.items()}
    degree = max(len(c) for c in power.values()) - 1
    definitions = [f"c{m}={_mixed({p: (c[m] if m < len(c) else 0.0) for p, c in power.items()}, unique)}"
                   for m in range(degree + 1)]
    for name, value in (("lo", "lo"), ("ulo", "u_lo"), ("glo", "g_lo")):
        definitions.append(f"{name}={_mixed({p: getattr(f, value) for p, f in forms.items()}, unique)}")
    definitions.append(f"hw={_mixed({p: 0.5 * f.wall for p, f in forms.items()}, unique)}")
    for a in range(len(unique)):
        for b in range(a, len(unique)):
            definitions.append(f"w{a}_{b}=o{a}1*o{a}2" if a == b else f"w{a}_{b}=o{a}1*o{b}2+o{b}1*o{a}2")
    ramp = ""
    if adjustable_ramps:
        values = {p: ramps[unique.index(p[0]), unique.index(p[1])] for p in pairs}
        ramp = f"+({INTERMOLECULAR_SCALE}*{_mixed(values, unique)}+{INTERMOLECULAR_ALL_PAIRS})*(1-r/{_num(rc)})"
    energy = (f"select(step(lo-r), ulo+glo*(lo-r)+hw*(lo-r)^2, {_horner('c', degree)}){ramp}; "
              f"y=(r-{_num(centre)})*{_num(scale)}; " + "; ".join(definitions))
    force = openmm.CustomNonbondedForce(energy)
    force.setName("cg_tabulated_pairs")
    for a in range(len(unique)):
        force.addPerParticleParameter(f"o{a}")
    if adjustable_ramps:
        force.addGlobalParameter(INTERMOLECULAR_SCALE, 1.0)
        force.addGlobalParameter(INTERMOLECULAR_ALL_PAIRS, 0.0)
    for t in names:
        force.addParticle([1.0 if t == u else 0.0 for u in unique])
    for i, j in excluded_pairs(n, bond_idx, model.exclusion).tolist():
        force.addExclusion(int(i), int(j))
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                             else openmm.CustomNonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(rc)
    force.setUseLongRangeCorrection(False)
    forces.append(force)
    if adjustable_ramps or np.any(ramps != 0.0):
        forces.append(_intramolecular_ramp_correction(model, names, unique, ramps, bond_idx, periodic,
                                                      adjustable=adjustable_ramps))
    return forces
