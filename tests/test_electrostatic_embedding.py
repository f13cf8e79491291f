"""ML/MM Systems with electrostatic embedding: the cross term Σ_ML q_i V_MM(r_i) against OpenMM's
own Ewald sum of the two charge sets (Reference platform, double precision), the MM remainder
against the all-MM System with zero ML charges minus the region alone, both periodic conventions
of the model, forces against finite differences (the dq/dr term included), both backends, energy
conservation, and refusals."""

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import check_openmm_forces_by_finite_differences, make_model  # noqa: E402
from multiscale.electrostatics import Coulomb  # noqa: E402
from multiscale.models import HybridPotential  # noqa: E402
from multiscale.openmm import ML_FORCE_GROUP, create_mixed_system, topology_types  # noqa: E402
from systems.molecules import alanine_dipeptide  # noqa: E402

KJ = unit.kilojoule_per_mole
ML = list(range(22))  # the dipeptide
BOX = [openmm.Vec3(2.3, 0, 0), openmm.Vec3(0, 2.3, 0), openmm.Vec3(0, 0, 2.3)] * unit.nanometer  # Ewald: rectangular


def forcefield():
    return app.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def hybrid(coulomb_method="direct", seed=0, perturbation=0.2):
    """An untrained hybrid whose charges vary strongly with the geometry (charge head perturbed)."""
    torch.manual_seed(seed)
    short = make_model(types=["C", "H", "N", "O"], cutoff=0.5, seed=seed)
    model = HybridPotential(short, Coulomb(1.0 if coulomb_method == "direct" else 0.9, coulomb_method, 1e-6, dtype="float64"),
                            total_charge=0.0)
    with torch.no_grad():
        for p in model.charge_head.parameters():
            p.add_(perturbation * torch.randn_like(p))
    return model


def tame_hybrid():
    """A hybrid whose untrained network is gentle (small readout scale) and whose charges look like
    a molecule's (per-type electronegativities; H positive, N and O negative), still varying with
    the geometry: something a short NVE run can integrate without the molecule collapsing."""
    model = hybrid("direct", seed=3, perturbation=0.0)
    with torch.no_grad():
        model.short_range.readout.scale.fill_(0.5)
        model.charge_head.mlp[2].weight.mul_(0.3)
        model.charge_head.type_chi.copy_(torch.tensor([0.0, -0.3, 0.8, 1.0], dtype=model.charge_head.type_chi.dtype))
    return model


@pytest.fixture(scope="module")
def solvated():
    top, pos = alanine_dipeptide()
    modeller = app.Modeller(top, pos * unit.nanometer)
    modeller.addSolvent(forcefield(), model="tip3p", boxVectors=BOX)
    return modeller


def mm_system(modeller, method=app.Ewald, tolerance=1e-7):
    system = forcefield().createSystem(modeller.topology, nonbondedMethod=method, nonbondedCutoff=0.9 * unit.nanometer,
                                       constraints=None, rigidWater=False, ewaldErrorTolerance=tolerance)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setUseDispersionCorrection(False)
    return system


def evaluate(system, positions, groups=None, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, **({} if groups is None else {"groups": groups}))
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)


def nonbonded(system):
    return next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))


def without_charges(system, atoms):
    """``system`` with zero charges on ``atoms`` (particles and their exceptions' charge products)."""
    force, chosen = nonbonded(system), set(atoms)
    for a in atoms:
        charge, sigma, epsilon = force.getParticleParameters(a)
        force.setParticleParameters(a, 0.0, sigma, epsilon)
    for k in range(force.getNumExceptions()):
        i, j, qq, sigma, epsilon = force.getExceptionParameters(k)
        if i in chosen or j in chosen:
            force.setExceptionParameters(k, i, j, 0.0, sigma, epsilon)
    return system


def ewald_coulomb(system, positions, charges):
    """OpenMM's Ewald energy (Reference, tolerance 1e-10) of ``charges`` on the System's particles,
    with the System's exceptions as exclusions and no Lennard-Jones."""
    source = nonbonded(system)
    reference = openmm.System()
    for _ in range(system.getNumParticles()):
        reference.addParticle(1.0)
    reference.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.Ewald)
    force.setCutoffDistance(source.getCutoffDistance())
    force.setEwaldErrorTolerance(1e-10)
    for q in charges:
        force.addParticle(float(q), 0.1, 0.0)
    for k in range(source.getNumExceptions()):
        i, j, *_ = source.getExceptionParameters(k)
        force.addException(i, j, 0.0, 0.1, 0.0)
    reference.addForce(force)
    return evaluate(reference, positions)[0]


def test_cross_term_equals_openmm_ewald_of_the_two_charge_sets(solvated):
    system = mm_system(solvated, app.Ewald, 1e-9)
    model = hybrid("direct")
    mixed = create_mixed_system(solvated.topology, system, ML, model, embedding="electrostatic")
    positions = np.array(solvated.getPositions().value_in_unit(unit.nanometer))
    types = topology_types(solvated.topology)[:22]
    region = model.compute(positions[ML], types)  # the cluster convention: no box, no images
    ml_energy, _ = evaluate(mixed, positions, {ML_FORCE_GROUP})
    cross = ml_energy - float(region["energy"])
    # OpenMM: E(ML ∪ MM) − E(ML) − E(MM) with the ML charges at this configuration's values
    q_mm = np.array([nonbonded(system).getParticleParameters(k)[0].value_in_unit(unit.elementary_charge)
                     for k in range(system.getNumParticles())])
    q_mm[ML] = 0.0
    q_ml = np.zeros_like(q_mm)
    q_ml[ML] = region["charges"].numpy()
    assert np.abs(q_ml).max() > 0.05  # the charges are not negligible
    expected = ewald_coulomb(system, positions, q_mm + q_ml) - ewald_coulomb(system, positions, q_mm) \
        - ewald_coulomb(system, positions, q_ml)
    assert abs(expected) > 1.0
    assert abs(cross - expected) <= 1e-7 * abs(expected)
    # the rest is the force field with zero ML charges, minus the region alone (its bonded and LJ terms)
    rest, _ = evaluate(mixed, positions, set(range(32)) - {ML_FORCE_GROUP})
    uncharged = without_charges(mm_system(solvated), ML)
    alone = app.Modeller(solvated.topology, solvated.getPositions())
    alone.delete([r for r in solvated.topology.residues() if r.name == "HOH"])
    region_system = without_charges(forcefield().createSystem(alone.topology, nonbondedMethod=app.NoCutoff, constraints=None), ML)
    e_all, _ = evaluate(uncharged, positions)
    e_alone, _ = evaluate(region_system, alone.getPositions())
    assert abs(rest - (e_all - e_alone)) <= 1e-8 * abs(e_all)


def test_periodic_model_sees_its_images_and_both_backends_agree(solvated):
    """A model with PME Coulomb gets the System's box (the ML region meets its own images through
    the model); TorchForce and PythonForce give the same energy and forces on every particle."""
    system = mm_system(solvated, app.PME, 1e-6)
    model = hybrid("pme", seed=1)
    positions = np.array(solvated.getPositions().value_in_unit(unit.nanometer))
    box = np.array([v.value_in_unit(unit.nanometer) for v in solvated.topology.getPeriodicBoxVectors()])
    types = topology_types(solvated.topology)[:22]
    results = {}
    for backend in ("torchforce", "pythonforce"):
        mixed = create_mixed_system(solvated.topology, system, ML, model, embedding="electrostatic", backend=backend)
        results[backend] = evaluate(mixed, positions, {ML_FORCE_GROUP})
    assert results["torchforce"][0] == pytest.approx(results["pythonforce"][0], rel=1e-10)
    np.testing.assert_allclose(results["torchforce"][1], results["pythonforce"][1], rtol=1e-8, atol=1e-8)
    alone = float(model.compute(positions[ML], types, box)["energy"])
    # the cross term moves MM atoms: forces on water near the solute are not zero
    assert np.abs(results["torchforce"][1][22:]).max() > 1.0
    assert results["torchforce"][0] != pytest.approx(alone, abs=1e-3)


def test_cluster_model_sees_the_region_whole_in_both_embeddings(solvated):
    """A model trained on molecules in vacuum (direct Coulomb) sees the ML region as one molecule:
    moving an ML atom by a whole cell vector changes nothing, and in mechanical embedding its
    force is the model on the region alone (no box)."""
    system = mm_system(solvated, app.PME, 5e-4)
    model = hybrid("direct", seed=4)
    positions = np.array(solvated.getPositions().value_in_unit(unit.nanometer))
    split = positions.copy()
    split[[3, 15]] += np.array([2.3, 0.0, -2.3])  # two ML atoms moved to other images: the region is split
    types = topology_types(solvated.topology)[:22]
    alone = float(model.compute(positions[ML], types)["energy"])
    for embedding in ("mechanical", "electrostatic"):
        mixed = create_mixed_system(solvated.topology, system, ML, model, embedding=embedding)
        energy, forces = evaluate(mixed, positions, {ML_FORCE_GROUP})
        moved, moved_forces = evaluate(mixed, split, {ML_FORCE_GROUP})
        assert moved == pytest.approx(energy, abs=1e-8)
        np.testing.assert_allclose(moved_forces, forces, atol=1e-7)
        if embedding == "mechanical":
            assert energy == pytest.approx(alone, rel=1e-10)
            assert np.abs(forces[22:]).max() == 0.0


def test_forces_match_finite_differences_of_the_total_energy(solvated):
    system = mm_system(solvated, app.Ewald, 5e-4)  # Ewald: both sides smooth to the last digit
    mixed = create_mixed_system(solvated.topology, system, ML, hybrid("direct", seed=2), embedding="electrostatic",
                                backend="pythonforce")
    positions = np.array(solvated.getPositions().value_in_unit(unit.nanometer))
    check_openmm_forces_by_finite_differences(mixed, positions, [(1, 0), (8, 2), (24, 1)])  # ML atoms and an MM water atom near them


def _cluster():
    """The dipeptide with eight waters around it, open boundaries (NoCutoff)."""
    top, pos = alanine_dipeptide()
    modeller = app.Modeller(top, pos * unit.nanometer)
    modeller.addSolvent(forcefield(), model="tip3p", boxSize=openmm.Vec3(2.0, 2.0, 2.0) * unit.nanometer)
    centre = pos.mean(0)
    waters = [r for r in modeller.topology.residues() if r.name == "HOH"]
    xyz = np.array(modeller.getPositions().value_in_unit(unit.nanometer))
    near = sorted(waters, key=lambda r: np.linalg.norm(xyz[next(r.atoms()).index] - centre))[:8]
    modeller.delete([r for r in waters if r not in near])
    topology = modeller.topology
    topology.setPeriodicBoxVectors(None)
    return topology, modeller.getPositions()


def region_lennard_jones(system, atoms):
    """The force field's Lennard-Jones between ``atoms`` (exceptions' parameters where they have
    them, Lorentz-Berthelot otherwise) as a CustomBondForce."""
    source = nonbonded(system)
    exceptions = {}
    for k in range(source.getNumExceptions()):
        i, j, _, sigma, epsilon = source.getExceptionParameters(k)
        exceptions[(min(i, j), max(i, j))] = (sigma.value_in_unit(unit.nanometer), epsilon.value_in_unit(KJ))
    force = openmm.CustomBondForce("4*eps*((sig/r)^12-(sig/r)^6)")
    force.addPerBondParameter("sig")
    force.addPerBondParameter("eps")
    for a in range(len(atoms)):
        for b in range(a + 1, len(atoms)):
            i, j = atoms[a], atoms[b]
            if (i, j) in exceptions:
                sigma, epsilon = exceptions[(i, j)]
            else:
                (_, si, ei), (_, sj, ej) = source.getParticleParameters(i), source.getParticleParameters(j)
                sigma = 0.5 * (si + sj).value_in_unit(unit.nanometer)
                epsilon = np.sqrt((ei * ej).value_in_unit(KJ**2))
            if epsilon > 0:
                force.addBond(i, j, [sigma, epsilon])
    return force


def _nve_cluster(mixed, positions, dt_ps, steps):
    """(total energies, kinetic energies, times ns) of velocity Verlet on the Reference platform."""
    integrator = openmm.VerletIntegrator(dt_ps)
    context = openmm.Context(mixed, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300.0, 7)  # from the built geometry: minimising an untrained model collapses it
    # the leapfrog's kinetic energy at t = 0 is that of velocities set, not integrated: start after some steps
    integrator.step(steps // 40)
    times, totals, kinetic = [], [], []
    for _ in range(40):
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.nanosecond))
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(KJ))
        kinetic.append(state.getKineticEnergy().value_in_unit(KJ))
        integrator.step(steps // 40)
    return np.array(totals), np.array(kinetic), np.array(times)


def test_open_boundaries_nve_conserves_energy():
    """Velocity Verlet in double precision (Reference) on the dipeptide (ML, predicted charges)
    with eight force-field waters, NoCutoff, over 0.1 ps: the total energy's spread is a small
    fraction of the kinetic energy's, and it shrinks with the time step as a symplectic
    integrator's error must (a force that is not −∇E, e.g. without the dq/dr term, leaves an
    error that does not shrink)."""
    topology, positions = _cluster()
    system = forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    mixed = create_mixed_system(topology, system, ML, tame_hybrid(), embedding="electrostatic")
    # an untrained network does not hold a molecule together: give the region its force-field
    # bonded terms and Lennard-Jones back (energy conservation is what is tested here, not the model)
    for force in system.getForces():
        if type(force).__name__ in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce"):
            mixed.addForce(openmm.XmlSerializer.clone(force))
    mixed.addForce(region_lennard_jones(system, ML))
    coarser, _, _ = _nve_cluster(mixed, positions, 0.0005, 200)
    totals, kinetic, times = _nve_cluster(mixed, positions, 0.00025, 400)
    dof = 3 * system.getNumParticles() - 3
    drift = np.polyfit(times, totals, 1)[0] / (dof * 0.0083144626 * 300.0)
    print(f"[electrostatic embedding NVE, Reference double, 0.1 ps] total-energy spread {np.ptp(totals):.3f} kJ/mol "
          f"at 0.25 fs, {np.ptp(coarser):.3f} at 0.5 fs (kinetic spread {np.ptp(kinetic):.1f}); "
          f"straight-line drift {drift:.2e} kT/ns/dof")
    assert np.all(np.isfinite(totals)) and np.all(np.isfinite(coarser))
    assert np.ptp(totals) < 0.02 * np.ptp(kinetic)
    assert np.ptp(totals) < 0.5 * np.ptp(coarser)


def test_refusals_name_the_problem(solvated):
    system = mm_system(solvated, app.PME, 5e-4)
    with pytest.raises(ValueError, match="needs a model with charges"):
        create_mixed_system(solvated.topology, system, ML, make_model(types=["C", "H", "N", "O"]), embedding="electrostatic")
    charged = hybrid("direct")
    charged.set_total_charge(1.0)
    with pytest.raises(ValueError, match=r"set_total_charge\(\+0\)"):
        create_mixed_system(solvated.topology, system, ML, charged, embedding="electrostatic")
    field = forcefield().createSystem(solvated.topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.9 * unit.nanometer)
    with pytest.raises(ValueError, match="PME"):
        create_mixed_system(solvated.topology, field, ML, hybrid("direct"), embedding="electrostatic")
    crossing = mm_system(solvated, app.PME, 5e-4)
    nonbonded(crossing).addException(0, 30, 0.0, 0.1, 0.0)
    with pytest.raises(ValueError, match="exception"):
        create_mixed_system(solvated.topology, crossing, ML, hybrid("direct"), embedding="electrostatic")
    topology, _ = _cluster()
    open_system = forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ValueError, match="no periodic box"):
        create_mixed_system(topology, open_system, ML, hybrid("pme"), embedding="electrostatic")
    # the System is not modified by a successful call either
    before = [nonbonded(system).getParticleParameters(a)[0] for a in ML]
    create_mixed_system(solvated.topology, system, ML, hybrid("direct"), embedding="electrostatic")
    assert [nonbonded(system).getParticleParameters(a)[0] for a in ML] == before
