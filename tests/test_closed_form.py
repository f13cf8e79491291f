"""The closed form of the tabulated tier: each table projected onto a polynomial that OpenMM runs
as an expression. Checked against the potentials a bead-spring melt was simulated with (LJ pairs,
harmonic bonds and angles, recovered through the force-matched tables), against the tables'
own energies in OpenMM, and against finite differences of OpenMM's energy."""

import numpy as np
import openmm
import pytest
from openmm import unit
from test_tabulated import EPS, KA, KB, R0, SIGMA, T, TH0, _bead_spring

import multiscale  # noqa: F401
from multiscale.cg.priors.contacts import excluded_pairs
from multiscale.cg.tabulated import Table, TabulatedModel, fit_tabulated
from multiscale.cg.tabulated.closed_form import TOLERANCE_KJ_MOL, closed_form
from multiscale.neighbors import pairs_within
from multiscale.openmm.mts import FAST_GROUP, SLOW_GROUP, split_fast_slow
from multiscale.openmm.tabulated import INTERMOLECULAR_ALL_PAIRS, INTERMOLECULAR_SCALE, tabulated_forces
from multiscale.units import kT

KJ = unit.kilojoule_per_mole


@pytest.fixture(scope="module")
def fitted():
    melt = _bead_spring(frames=40)
    model = fit_tabulated(melt["X"], melt["F"], melt["types"], melt["bonds"], melt["angles"], melt["dihedrals"],
                          temperature_K=T, boxes=melt["B"])
    return melt, model


def _context(model, melt, form, adjustable_ramps=False, platform="Reference"):
    system = openmm.System()
    for _ in melt["types"]:
        system.addParticle(56.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in melt["B"][0]])
    forces = tabulated_forces(model, melt["types"], melt["bonds"], melt["angles"], melt["dihedrals"], periodic=True,
                              adjustable_ramps=adjustable_ramps, form=form)
    for g, force in enumerate(forces):
        force.setForceGroup(g)
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    return context, [f.getName() for f in forces]


def _energies(context, names, x, box):
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(x)
    return {name: context.getState(getEnergy=True, groups={g}).getPotentialEnergy().value_in_unit(KJ)
            for g, name in enumerate(names)}


def test_closed_forms_recover_the_simulated_potentials(fitted):
    """The melt ran with LJ pairs and harmonic bonds and angles: the polynomials of the fitted
    tables give those forces back (as the tables do), inside the range the beads visited."""
    _, model = fitted
    kt = kT(T)
    pair = closed_form(model.pair("M", "M"), kt)
    r = np.linspace(max(pair.lo, 0.42), 0.9, 30)
    lj = 24 * EPS * (2 * (SIGMA / r) ** 12 - (SIGMA / r) ** 6) / r
    assert np.max(np.abs(pair.force_at(r) - lj)) < 0.05 * np.max(np.abs(lj)) + 1.0
    # U and dU/dr vanish at the cutoff exactly: no jump as a pair leaves it
    assert pair.energy_at(np.array([model.cutoff_nm - 1e-9]))[0] == pytest.approx(0.0, abs=1e-6)
    assert pair.force_at(np.array([model.cutoff_nm]))[0] == pytest.approx(0.0, abs=1e-6)
    bond = closed_form(model.bonds[("M", "M")], kt)
    q = np.linspace(R0 - 0.02, R0 + 0.02, 20)
    np.testing.assert_allclose(bond.force_at(q), -KB * (q - R0), atol=0.05 * KB * 0.04)
    angle = closed_form(model.angles[("M", "M", "M")], kt)
    q = np.linspace(TH0 - 0.3, TH0 + 0.3, 20)
    np.testing.assert_allclose(angle.force_at(q), -KA * (q - TH0), atol=0.1 * KA * 0.6)
    for form, table in ((pair, model.pair("M", "M")), (bond, model.bonds[("M", "M")]), (angle, model.angles[("M", "M", "M")])):
        # the degree search stops at the tolerance or at the highest degree; either way the energy
        # is within 0.1 kBT of the table's where the beads go, and the recorded error is the one found
        assert form.max_error_kj_mol <= 0.1 * kt
        q = np.linspace(form.lo, form.hi, 200)
        assert np.max(np.abs(form.energy_at(q) - table.energy_at(q))) <= form.max_error_kj_mol * 1.05 + 1e-9


def test_walls_push_back_into_the_range():
    """A table that leans outwards at its edge (a force-matched edge knot from a few samples)
    continues with a wall that restores from the edge on, never one that first pulls out."""
    knots = np.linspace(0.3, 0.5, 21)
    force = -3000.0 * (knots - 0.4)
    force[0] = -500.0  # pulls inwards-out at the lower edge
    form = closed_form(Table("bond", knots, force, 5000.0), kT(T), fit_kt=1e6)
    assert form.g_lo >= 0.0 and form.g_hi <= 0.0
    below = form.energy_at(np.linspace(form.lo - 0.2, form.lo, 50))
    above = form.energy_at(np.linspace(form.hi, form.hi + 0.2, 50))
    assert np.all(np.diff(below) <= 1e-9) and np.all(np.diff(above) >= -1e-9)


def test_angle_form_is_smooth_through_the_straight_angle():
    """A polynomial in cos θ has dU/dθ = 0 at π: the force does not flip as a chain straightens."""
    knots = np.linspace(1.2, np.pi, 30)
    table = Table("angle", knots, -40.0 * (knots - 2.4) + 5.0 * np.sin(3 * knots), 5000.0)
    form = closed_form(table, kT(T))
    assert form.open_above
    assert form.force_at(np.array([np.pi]))[0] == pytest.approx(0.0, abs=1e-9)
    # and the force goes to zero continuously as θ → π (no cusp): |g| ≤ |U''| ε
    assert abs(form.force_at(np.array([np.pi - 1e-4]))[0]) < 0.1


def test_openmm_closed_forms_match_the_tables_and_their_own_gradient(fitted):
    melt, model = fitted
    tables, names = _context(model, melt, "tables")
    closed, closed_names = _context(model, melt, "closed")
    assert names == closed_names
    for k in (5, 25):
        x, box = melt["X"][k], melt["B"][k]
        a, b = _energies(tables, names, x, box), _energies(closed, names, x, box)
        i, j, _ = pairs_within(x, box, model.cutoff_nm)
        terms = {"cg_tabulated_pairs": int(np.sum(i < j)), "cg_tabulated_bonds": len(melt["bonds"]),
                 "cg_tabulated_angles": len(melt["angles"]), "cg_tabulated_torsions": len(melt["dihedrals"])}
        assert b["cg_tabulated_torsions"] == pytest.approx(a["cg_tabulated_torsions"], rel=1e-9, abs=1e-9)
        for name in names:
            # each term within the projection's tolerance (the differences do not all add up)
            assert abs(a[name] - b[name]) <= TOLERANCE_KJ_MOL * terms[name], name
            assert abs(a[name] - b[name]) <= 0.2 * TOLERANCE_KJ_MOL * terms[name] + 1.0, name
    # the pair energy is the numpy form's, summed here over minimum images (an independent evaluation)
    x, box = melt["X"][7], melt["B"][7]
    got = _energies(closed, names, x, box)["cg_tabulated_pairs"]
    i, j, r = pairs_within(x, box, model.cutoff_nm)
    excluded = {tuple(p) for p in excluded_pairs(len(x), np.array(melt["bonds"]), model.exclusion).tolist()}
    expected = sum(float(closed_form(model.pair(melt["types"][p], melt["types"][q]), kT(T)).energy_at(d))
                   for p, q, d in zip(i, j, r) if p < q and (p, q) not in excluded)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-3)  # as the tables are checked (test_tabulated)
    # forces: central differences of OpenMM's energy (all terms)
    closed.setPositions(x)
    forces = closed.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)
    rng = np.random.default_rng(4)
    h = 1e-5
    for atom, axis in zip(rng.integers(0, len(x), 8), rng.integers(0, 3, 8)):
        energies = []
        for sign in (1, -1):
            y = x.copy()
            y[atom, axis] += sign * h
            closed.setPositions(y)
            energies.append(closed.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ))
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), rel=2e-3, abs=0.05)


def test_each_type_pair_gets_its_own_polynomial(fitted):
    """The per-bead type flags mix the right type pair's coefficients: two beads alone in a box,
    every pair of types, at several distances, against that type pair's numpy form."""
    _, model = fitted
    for types in (["E", "E"], ["E", "M"], ["M", "E"], ["M", "M"]):
        data = dict(types=types, bonds=[], angles=[], dihedrals=[], B=np.eye(3)[None] * 3.0)
        context, names = _context(model, data, "closed")
        form = closed_form(model.pair(*types), kT(T))
        for d in (form.lo + 0.01, 0.5, 0.7, 0.95):
            x = np.array([[0.5, 0.5, 0.5], [0.5 + d, 0.5, 0.5]])
            got = _energies(context, names, x, data["B"][0])["cg_tabulated_pairs"]
            assert got == pytest.approx(float(form.energy_at(d)), rel=1e-6, abs=1e-5), (types, d)


def test_adjustable_ramps_in_closed_form(fitted):
    """The density controller's global parameters act on the closed form as on the tables: the
    model's intermolecular ramps times the scale, plus an all-pair ramp, between chains only."""
    melt, model = fitted
    ramped = model.with_pair_ramp(-0.8, intermolecular=True)
    x, box = melt["X"][9], melt["B"][9]
    fixed, names = _context(ramped, melt, "closed")
    adjustable, _ = _context(ramped, melt, "closed", adjustable_ramps=True)
    plain, _ = _context(model, melt, "closed")
    total = {k: sum(_energies(c, names, x, box).values()) for k, c in (("fixed", fixed), ("plain", plain))}
    adjustable.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    adjustable.setPositions(x)

    def energy():
        return adjustable.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)

    assert energy() == pytest.approx(total["fixed"], rel=1e-7, abs=1e-6)
    assert total["fixed"] != pytest.approx(total["plain"], abs=1.0)
    adjustable.setParameter(INTERMOLECULAR_SCALE, 0.0)
    assert energy() == pytest.approx(total["plain"], rel=1e-7, abs=1e-6)
    adjustable.setParameter(INTERMOLECULAR_ALL_PAIRS, -0.8)
    assert energy() == pytest.approx(total["fixed"], rel=1e-7, abs=1e-6)


def test_bending_torsions_go_on_the_outer_step(fitted):
    melt, model = fitted
    system = openmm.System()
    for _ in melt["types"]:
        system.addParticle(56.0)
    for force in tabulated_forces(model, melt["types"], melt["bonds"], melt["angles"], melt["dihedrals"], periodic=True,
                                  form="closed"):
        system.addForce(force)
    split_fast_slow(system)
    groups = {f.getName(): f.getForceGroup() for f in system.getForces()}
    assert groups == {"cg_tabulated_bonds": FAST_GROUP, "cg_tabulated_angles": FAST_GROUP,
                      "cg_tabulated_torsions": SLOW_GROUP, "cg_tabulated_pairs": SLOW_GROUP}


def test_bad_form_is_refused(fitted):
    melt, model = fitted
    with pytest.raises(ValueError, match="form must be one of"):
        tabulated_forces(model, melt["types"], melt["bonds"], periodic=True, form="spline")
    with pytest.raises(ValueError, match="kt_kj_mol"):
        closed_form(model.bonds[("M", "M")], kt_kj_mol=0.0)


def test_closed_form_pair_of_a_model_without_such_pair_is_refused(fitted):
    melt, model = fitted
    with pytest.raises(ValueError, match="no pair table"):
        tabulated_forces(TabulatedModel({("M", "M"): model.pair("M", "M")}, {}, {}, {}, "1-3", 1.0, T),
                         ["E", "M"], [], periodic=True, form="closed")
