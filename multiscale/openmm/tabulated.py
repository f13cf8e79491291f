"""The tabulated (MS-CG) CG model as native OpenMM forces, built from the plain data of
:class:`~multiscale.cg.tabulated.TabulatedModel`.

* pairs: one CustomNonbondedForce with one table lookup per pair: the energies of every type
  pair, walls included, on one r grid (``table_spacing_nm``) from :data:`PAIR_TABLE_START` × the
  closest knot to the cutoff, in one Continuous1DFunction (several type pairs: their tables end
  to end, each picked by an offset from a Discrete2DFunction of the bead types); exclusions as in
  the fit; no long-range correction (the tables end at the cutoff with U = 0 and g = 0); the
  model's intermolecular ramps folded into the tables, or, ``adjustable_ramps``, in the nonbonded
  expression times the global parameter :data:`INTERMOLECULAR_SCALE`, plus an all-pair ramp of
  height :data:`INTERMOLECULAR_ALL_PAIRS` (a controller's run), and taken back off each molecule's
  own pairs by "cg_tabulated_intramolecular_ramps" (a CustomBondForce);
* bonds and angles: a CustomCompoundBondForce each (OpenMM's CustomBondForce/CustomAngleForce
  take no tabulated functions), the types' tables end to end in one Continuous1DFunction of the
  distance or angle, each term at its table's offset (a per-term parameter);
* chain pairs (the 1-5, 1-6, … bead distances of a molecule, :attr:`TabulatedModel.chain_pairs`):
  a CustomCompoundBondForce as for bonds, named :data:`CHAIN_PAIR_FORCE`, on the beads'
  coordinates without periodic images (a 1-6 distance may exceed half the box; OpenMM keeps a
  molecule whole once it is, :func:`multiscale.openmm.molecules.whole_positions`);
* combined bending–torsion terms: one CustomCompoundBondForce,
  sin³θ₁ sin³θ₂ Σₙ aₙ cos nφ with per-term coefficients, written in the beads' coordinates
  (7x cheaper on the CPU than with angle functions; molecules must be whole, as OpenMM keeps them).

Outside a bond or angle table's knots its walls (:class:`~multiscale.cg.tabulated.Table`) are
analytic expressions with per-term parameters (a Continuous1DFunction is 0 outside its range). Names:
"cg_tabulated_pairs", "cg_tabulated_bonds", "cg_tabulated_angles", "cg_tabulated_torsions".

Units: nm, rad, kJ/mol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Sequence, Tuple

import numpy as np
import openmm

from multiscale.cg.geometry import _as_index
from multiscale.cg.priors.contacts import excluded_pairs
from multiscale.cg.priors.records import canonical_key
from multiscale.cg.tabulated.tables import TabulatedModel


#: global parameter of "cg_tabulated_pairs" (default 1) that multiplies every intermolecular
#: ramp: ``Context.setParameter`` changes them during a run (a ramp set by feedback) without
#: rebuilding the System; present only with ``adjustable_ramps``
INTERMOLECULAR_SCALE = "cg_intermolecular_ramp_scale"
#: global parameter of "cg_tabulated_pairs" with ``adjustable_ramps`` (default 0, kJ/mol): a ramp
#: A (1 − r/r_c) on every pair of beads of different molecules, on top of the model's own
INTERMOLECULAR_ALL_PAIRS = "cg_intermolecular_all_pair_ramp"

#: how a tabulated model becomes OpenMM forces: its tables as tabulated functions, or each table
#: projected onto a polynomial (:mod:`multiscale.openmm.closed_form`)
FORMS = ("tables", "closed")

#: pair tables start at this fraction of the closest fitted knot (their wall is tens of kBT high
#: there; closer pairs would see U = 0, but never get there)
PAIR_TABLE_START = 0.3


def molecule_indices(n: int, bonds) -> np.ndarray:
    """(n,) index of each bead's molecule: the connected parts of the bond graph (scipy numbers
    them in the order of their first bead)."""
    from multiscale.cg.mapping.build import _components

    return np.asarray(_components(n, np.asarray(bonds, dtype=np.int64).reshape(-1, 2).tolist()), dtype=np.int64)


def _intramolecular_ramp_correction(model: TabulatedModel, names, unique, ramps, bond_idx, periodic: bool,
                                    adjustable: bool = False):
    """−A(t_i, t_j) (1 − r/r_c) on every non-excluded pair within a molecule whose types carry an
    intermolecular ramp: what makes the ramps in the pair force intermolecular. ``adjustable``:
    −(s A(t_i, t_j) + B) (1 − r/r_c) on every non-excluded pair within a molecule, s and B the
    global parameters :data:`INTERMOLECULAR_SCALE` and :data:`INTERMOLECULAR_ALL_PAIRS`."""
    n = len(names)
    molecules = molecule_indices(n, bond_idx)
    excluded = {tuple(p) for p in excluded_pairs(n, bond_idx, model.exclusion).tolist()}
    codes = np.array([unique.index(t) for t in names])
    height = f"({INTERMOLECULAR_SCALE}*a+{INTERMOLECULAR_ALL_PAIRS})" if adjustable else "a"
    force = openmm.CustomBondForce(f"-{height}*(1-r/{_num(model.cutoff_nm)})*step({_num(model.cutoff_nm)}-r)")
    force.setName(INTRAMOLECULAR_RAMP_FORCE)
    force.addPerBondParameter("a")
    if adjustable:
        force.addGlobalParameter(INTERMOLECULAR_SCALE, 1.0)
        force.addGlobalParameter(INTERMOLECULAR_ALL_PAIRS, 0.0)
    for m in np.unique(molecules):
        members = np.flatnonzero(molecules == m)
        for x, i in enumerate(members):
            for j in members[x + 1:]:
                a = ramps[codes[i], codes[j]]
                if (adjustable or a != 0.0) and (int(i), int(j)) not in excluded:
                    force.addBond(int(i), int(j), [float(a)])
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    return force


def _num(value: float) -> str:
    return repr(float(value))


def _bipartite_ramps(ramps: np.ndarray):
    """(A, h, t) when every nonzero entry of the symmetric type-pair matrix ``ramps`` is one height
    A on the pairs between two disjoint type sets, h and t their 0/1 indicators per type (a
    head–tail ramp); all zero: (0, 0, 0); otherwise None."""
    nonzero = ramps != 0.0
    zeros = np.zeros(len(ramps))
    if not nonzero.any():
        return 0.0, zeros, zeros
    values = np.unique(ramps[nonzero])
    if len(values) != 1:
        return None
    a0 = int(np.argwhere(nonzero)[0][0])
    t = nonzero[a0].astype(float)
    h = nonzero[int(np.flatnonzero(t)[0])].astype(float)
    if np.any(h * t) or not np.array_equal(nonzero, (np.outer(h, t) + np.outer(t, h)) > 0):
        return None
    return float(values[0]), h, t


#: knots each table is sampled beyond its own range when tables are laid end to end in one
#: Continuous1DFunction (:func:`_concatenated`): the natural spline's answer to the step between
#: two tables decays by 2 − √3 per knot, so 20 knots leave < 4e-12 of it inside either table (a
#: blend across the gap instead bent the spline within 15 knots of a pair table's cutoff and moved
#: the model's pressure by 2 %)
CONCATENATION_PAD = 20


def _concatenated(segments: Sequence[Tuple[Callable[[np.ndarray], np.ndarray], float, int]], spacing: float):
    """One Continuous1DFunction holding several tables end to end: one cubic-spline lookup per
    term, where a select() over per-type functions evaluated every type's spline (Lepton computes
    every branch; 6 angle types cost 2 ms a step for 320 angles), and a Continuous2DFunction over
    (r, table index) a bicubic lookup per pair. ``segments``: (energy function, first point,
    number of points) of each table, sampled every ``spacing`` and :data:`CONCATENATION_PAD`
    points beyond either end (walls, or 0 past a pair table's cutoff).

    Returns (function, starts): table k's energy at first_k + i × spacing is the function at
    starts[k] + i × spacing."""
    values, starts = [], []
    pad = CONCATENATION_PAD
    for energy, first, count in segments:
        grid = first + spacing * np.arange(-pad, count + pad)
        starts.append((len(values) + pad) * spacing)
        values.extend(np.asarray(energy(grid), dtype=float).tolist())
    return openmm.Continuous1DFunction(values, 0.0, (len(values) - 1) * spacing), starts


def grouped_terms(names: Sequence[str], index: np.ndarray, kind: str, tables) -> dict:
    """The rows of ``index`` (bonded terms) grouped by their canonical type key; a key without a
    table is refused."""
    groups: dict = {}
    for row in index.tolist():
        key = canonical_key([names[i] for i in row])
        if key not in tables:
            raise ValueError(f"the tabulated model has no {kind} table for types {key} (it has {sorted(tables)}); "
                             "refit it on data containing this term")
        groups.setdefault(key, []).append(row)
    return groups


#: name of the chain-pair force (:attr:`TabulatedModel.chain_pairs`), in either form
CHAIN_PAIR_FORCE = "cg_tabulated_chain_pairs"
#: the name of the force that takes the intermolecular ramps back off a molecule's own pairs
INTRAMOLECULAR_RAMP_FORCE = "cg_tabulated_intramolecular_ramps"


def chain_pair_groups(model: TabulatedModel, names: Sequence[str], bond_idx: np.ndarray) -> dict:
    """The bead pairs of each chain-pair table of ``model``: (s, type a, type b) → rows (i, j) of
    the pairs whose shortest bond path is s bonds long; a pair at a separation the model tabulates
    whose types have no table is refused."""
    if not model.chain_pairs:
        return {}
    from multiscale.cg.topology import BondGraph

    graph = BondGraph(len(names), bond_idx)
    groups: dict = {}
    for s in sorted({key[0] for key in model.chain_pairs}):
        for i, j in graph.separated(s).tolist():
            key = (s,) + canonical_key((names[i], names[j]))
            if key not in model.chain_pairs:
                raise ValueError(f"the tabulated model has no chain-pair table for beads {key[1:]} {s} bonds apart (it has "
                                 f"{sorted(model.chain_pairs)}); refine it on a reference with such chains")
            groups.setdefault(key, []).append([i, j])
    return groups


#: the bending–torsion expression's guard (nm⁸) against 0/0 when three beads are exactly
#: collinear (|b₁ × b₂|² |b₂ × b₃|² = 0, or a rounding error below it, clipped to 0); typical
#: values are ~10⁻³ nm⁸, so it changes nothing else
COLLINEAR_GUARD_NM8 = 1e-24


def bending_torsion_expression(order: int) -> str:
    """sin³θ₁ sin³θ₂ Σₘ bₘ cosᵐφ of the beads p1..p4 as an expression of their coordinates.

    Written with the bond vectors a, b, c rather than OpenMM's angle() and dihedral(): with
    n₁ = |a × b|² = |a|²|b|² − (a·b)², n₂ = |b × c|² likewise,
    sin²θ₁ sin²θ₂ = n₁ n₂ / (|a|² |b|⁴ |c|²) and cos φ = ((a·b)(b·c) − (a·c)|b|²) / √(n₁ n₂),
    so (sin²θ₁ sin²θ₂)^1.5 has a finite derivative where a bead angle is straight. OpenMM's CPU
    platform runs every custom bonded force through its reference kernels; there, 96 terms cost
    0.12 ms per call in this form against 0.86 ms with three angle functions (0.50 without
    periodic images). Coordinates are not wrapped: the beads of a term must be one periodic image
    apart at most, as OpenMM keeps them once a molecule is whole
    (:func:`multiscale.openmm.molecules.whole_positions`)."""
    horner = f"b{order - 1}"
    for m in range(order - 2, -1, -1):
        horner = f"b{m}+c*({horner})"
    return (f"w^1.5*({horner}); w=n1*n2/(aa*bb*bb*cc); c=(ab*bc-ac*bb)/sqrt(n1*n2+{COLLINEAR_GUARD_NM8:g}); "
            "n1=max(0,aa*bb-ab^2); n2=max(0,bb*cc-bc^2); "
            "aa=ax*ax+ay*ay+az*az; bb=bx*bx+by*by+bz*bz; cc=cx*cx+cy*cy+cz*cz; "
            "ab=ax*bx+ay*by+az*bz; bc=bx*cx+by*cy+bz*cz; ac=ax*cx+ay*cy+az*cz; "
            "ax=x2-x1; ay=y2-y1; az=z2-z1; bx=x3-x2; by=y3-y2; bz=z3-z2; cx=x4-x3; cy=y4-y3; cz=z4-z3")


def bending_torsion_force(model: TabulatedModel, names: Sequence[str], dihedral_idx: np.ndarray, periodic: bool):
    """The combined bending–torsion terms "cg_tabulated_torsions" (a CustomCompoundBondForce of
    the beads' coordinates, :func:`bending_torsion_expression`), or None without dihedrals.
    ``periodic`` is accepted for symmetry with the other terms: the expression needs no images."""
    groups = grouped_terms(names, dihedral_idx, "dihedral", model.dihedrals)
    if not groups:
        return None
    # Σ aₙ cos nφ = Σ bₘ cᵐ with c = cos φ (Chebyshev to power basis), evaluated by Horner's rule
    from numpy.polynomial.chebyshev import cheb2poly

    order = len(next(iter(model.dihedrals.values())))
    force = openmm.CustomCompoundBondForce(4, bending_torsion_expression(order))
    force.setName("cg_tabulated_torsions")
    for m in range(order):
        force.addPerBondParameter(f"b{m}")
    for key, rows in sorted(groups.items()):
        power = cheb2poly(np.asarray(model.dihedrals[key], dtype=float))
        power = np.concatenate([power, np.zeros(order - len(power))])
        for row in rows:
            force.addBond([int(i) for i in row], [float(b) for b in power])
    return force


def tabulated_forces(model: TabulatedModel, bead_types: Sequence[str], bonds: Any, angles: Any = (), dihedrals: Any = (),
                     *, periodic: bool, table_spacing_nm: float = 0.0005, table_spacing_rad: float = 0.002,
                     adjustable_ramps: bool = False, form: str = "tables") -> List[Any]:
    """The OpenMM forces of ``model`` on beads of ``bead_types`` with the given bonded terms.
    ``adjustable_ramps``: the model's intermolecular ramps times a global parameter
    (:data:`INTERMOLECULAR_SCALE`, 1 by default) plus an all-pair intermolecular ramp
    (:data:`INTERMOLECULAR_ALL_PAIRS`, 0 by default) that a Context may change (slower per step).
    ``form``: "tables" (tabulated functions, exact) or "closed" (each table projected onto a
    polynomial, 3-5 times cheaper per call on the CPU: :mod:`multiscale.openmm.closed_form`)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if form == "closed":
        from multiscale.openmm.closed_form import closed_form_forces

        return closed_form_forces(model, bead_types, bonds, angles, dihedrals, periodic=periodic,
                                  adjustable_ramps=adjustable_ramps)
    names = [str(t) for t in bead_types]
    n = len(names)
    bond_idx = _as_index(bonds, 2, "bonds", n)
    angle_idx = _as_index(angles, 3, "angles", n)
    dihedral_idx = _as_index(dihedrals, 4, "dihedrals", n)
    forces: List[Any] = []

    for kind, index, tables, q, spacing in (("bond", bond_idx, model.bonds, "distance(p1,p2)", table_spacing_nm),
                                            ("angle", angle_idx, model.angles, "angle(p1,p2,p3)", table_spacing_rad),
                                            ("chain_pair", None, model.chain_pairs, "distance(p1,p2)", table_spacing_nm)):
        if kind == "chain_pair":
            groups = chain_pair_groups(model, names, bond_idx)
            width, name, uses_periodic = 2, CHAIN_PAIR_FORCE, False
        else:
            groups = grouped_terms(names, index, kind, tables)
            width, name, uses_periodic = index.shape[1], f"cg_tabulated_{kind}s", bool(periodic)
        if not groups:
            continue
        # one force for all types: one lookup in the types' tables laid end to end, at the term's
        # own offset; outside a table's knots its analytic walls, from per-term parameters
        keys = sorted(groups)
        segments, ranges = [], []
        for key in keys:
            table = tables[key]
            lo, hi = float(table.knots[0]), float(table.knots[-1])
            segments.append((table.energy_at, lo, max(int(np.ceil((hi - lo) / spacing)) + 1, 4)))
            ranges.append((lo, hi))
        function, starts = _concatenated(segments, spacing)
        below = "ulo+flo*(lo-q)+hw*(lo-q)^2"
        above = "uhi-fhi*(q-hi)+hw*(q-hi)^2"
        force = openmm.CustomCompoundBondForce(
            width, f"select(step(lo-q), {below}, select(step(q-hi), {above}, u{kind}(q-lo+start))); q={q}")
        force.setName(name)
        force.addTabulatedFunction(f"u{kind}", function)
        for name in ("lo", "hi", "ulo", "uhi", "flo", "fhi", "hw", "start"):
            force.addPerBondParameter(name)
        for key, (lo, hi), start in zip(keys, ranges, starts):
            table = tables[key]
            u_lo, u_hi = (float(v) for v in table.energy_at(np.array([lo, hi])))
            parameters = [lo, hi, u_lo, u_hi, float(table.force[0]), float(table.force[-1]), 0.5 * float(table.wall),
                          float(start)]
            for row in groups[key]:
                force.addBond([int(i) for i in row], parameters)
        force.setUsesPeriodicBoundaryConditions(uses_periodic)
        forces.append(force)

    torsions = bending_torsion_force(model, names, dihedral_idx, periodic)
    if torsions is not None:
        forces.append(torsions)

    if model.pairs:
        unique = sorted(set(names))
        codes = [unique.index(t) for t in names]
        keys = sorted(model.pairs)
        which = np.full((len(unique), len(unique)), -1.0)
        for k, key in enumerate(keys):
            if key[0] in unique and key[1] in unique:
                a, b = unique.index(key[0]), unique.index(key[1])
                which[a, b] = which[b, a] = k
        if np.any(which < 0):
            a, b = np.argwhere(which < 0)[0]
            raise ValueError(f"the tabulated model has no pair table for bead types {(unique[a], unique[b])}; "
                             "refit it on data where such pairs come within the cutoff")
        # One lookup per pair, for speed (nested selects and analytic walls cost ~10x on the CPU
        # platform): the energies of every type pair, walls included, on one r grid from
        # PAIR_TABLE_START × the closest knot (where the wall is tens of kBT high) to the cutoff,
        # laid end to end in one Continuous1DFunction when there are several type pairs.
        r_lo = PAIR_TABLE_START * min(float(model.pairs[key].knots[0]) for key in keys)
        r_hi = float(model.cutoff_nm)
        count = max(int(np.ceil((r_hi - r_lo) / table_spacing_nm)) + 1, 4)
        spacing = (r_hi - r_lo) / (count - 1)
        grid = r_lo + spacing * np.arange(count)
        folded = {key: 0.0 for key in keys}  # intermolecular ramps folded into the tables (fixed form)
        # intermolecular ramps (TabulatedModel.intermolecular), A(t1, t2) (1 − r/r_c) between beads
        # of different molecules, on every pair and taken back off the non-excluded pairs within
        # each molecule by a CustomBondForce (a per-pair molecule test in the nonbonded expression
        # cost 25 % of the CG step). Fixed (the default): folded into the tables. Adjustable (a
        # controller's run): a term of the nonbonded expression, the model's ramps times the
        # global parameter INTERMOLECULAR_SCALE plus the all-pair ramp INTERMOLECULAR_ALL_PAIRS
        ramps = np.zeros((len(unique), len(unique)))
        for key, A in model.intermolecular.items():
            if key[0] in unique and key[1] in unique:
                a, b = unique.index(key[0]), unique.index(key[1])
                ramps[a, b] = ramps[b, a] = float(A)
        intermolecular = bool(np.any(ramps != 0.0))
        ramp, correction = "", None
        bipartite = _bipartite_ramps(ramps) if adjustable_ramps else None
        if adjustable_ramps:
            # a head–tail ramp (one height between two type sets) as arithmetic on two per-bead
            # flags: with a Discrete2DFunction lookup per pair the pair force cost 7.0 against
            # 4.7 ms fixed (CPU platform, one thread, 320 DMPC beads), with the flags 4.8; any
            # other ramp matrix is looked up
            height = (f"{_num(bipartite[0])}*(h1*t2+t1*h2)" if bipartite is not None else "iramp(type1, type2)")
            ramp = f"+({INTERMOLECULAR_SCALE}*{height}+{INTERMOLECULAR_ALL_PAIRS})*(1-r/{_num(model.cutoff_nm)})"
            correction = _intramolecular_ramp_correction(model, names, unique, ramps, bond_idx, periodic, adjustable=True)
        elif intermolecular:
            folded = {key: model.intermolecular.get(key, 0.0) for key in keys}
            correction = _intramolecular_ramp_correction(model, names, unique, ramps, bond_idx, periodic)

        def energy(key):
            table, A = model.pairs[key], folded[key]
            return lambda r: table.energy_at(r) + A * np.clip(1.0 - r / r_hi, 0.0, None)

        rows = [energy(key)(grid) for key in keys]
        if len(keys) == 1:
            force = openmm.CustomNonbondedForce("upair(r)" + ramp)
            force.addTabulatedFunction("upair", openmm.Continuous1DFunction(rows[0].tolist(), r_lo, r_hi))
        else:
            # the type pairs' tables end to end, one per ordered pair of type codes (a, b), table
            # U a + b at a fixed stride, so that the offset is arithmetic on the codes: looked up
            # in a Discrete2DFunction it cost as much as the spline (CPU platform, 320 DMPC beads:
            # 8.0 against 3.9 ms a force evaluation), and a Continuous2DFunction over (r, table
            # index) twice the step (a bicubic lookup per pair)
            u = len(unique)
            function, starts = _concatenated([(energy(keys[int(which[a, b])]), r_lo, count)
                                              for a in range(u) for b in range(u)], spacing)
            stride = starts[1] - starts[0]
            force = openmm.CustomNonbondedForce(
                f"upair(r+{_num(starts[0] - r_lo)}+{_num(stride)}*({u}*type1+type2))" + ramp)
            force.addTabulatedFunction("upair", function)
        force.setName("cg_tabulated_pairs")
        force.addPerParticleParameter("type")
        if adjustable_ramps:
            if bipartite is None:
                force.addTabulatedFunction("iramp", openmm.Discrete2DFunction(len(unique), len(unique), ramps.T.ravel().tolist()))
            else:
                force.addPerParticleParameter("h")
                force.addPerParticleParameter("t")
            force.addGlobalParameter(INTERMOLECULAR_SCALE, 1.0)
            force.addGlobalParameter(INTERMOLECULAR_ALL_PAIRS, 0.0)
        for c in codes:
            force.addParticle([float(c)] + ([float(bipartite[1][c]), float(bipartite[2][c])] if bipartite is not None else []))
        for i, j in excluded_pairs(n, bond_idx, model.exclusion).tolist():
            force.addExclusion(int(i), int(j))
        force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                                 else openmm.CustomNonbondedForce.CutoffNonPeriodic)
        force.setCutoffDistance(float(model.cutoff_nm))
        force.setUseLongRangeCorrection(False)
        forces.append(force)
        if correction is not None:
            forces.append(correction)
    return forces


@dataclass
class TabulatedTerms:
    """The tabulated CG model as a System term (:func:`multiscale.openmm.assembly.assemble_system`)."""

    model: TabulatedModel
    bead_types: Sequence[str]
    bonds: Any
    angles: Any = ()
    dihedrals: Any = ()
    periodic: bool = True
    adjustable_ramps: bool = False
    form: str = "tables"

    def add_to(self, system: openmm.System) -> int:
        index = -1
        for force in tabulated_forces(self.model, self.bead_types, self.bonds, self.angles, self.dihedrals,
                                      periodic=self.periodic, adjustable_ramps=self.adjustable_ramps, form=self.form):
            index = system.addForce(force)
        return index
