"""ML/MM mixed Systems (mechanical embedding): exact bookkeeping against independent
constructions (the all-MM System minus the ML region alone in the same periodic box, images
included), forces against finite differences, and refusals."""

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import check_openmm_forces_by_finite_differences, make_model  # noqa: E402
from multiscale.openmm import ML_FORCE_GROUP  # noqa: E402
from multiscale.openmm.mixed import create_mixed_system  # noqa: E402
from systems.molecules import alanine_dipeptide  # noqa: E402

KJ = unit.kilojoule_per_mole
SOLUTE_TYPES = ["C", "H", "N", "O"]


def forcefield():
    return app.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def options(tolerance=1e-6):
    return dict(nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, switchDistance=0.75 * unit.nanometer,
                constraints=None, rigidWater=False,
                ewaldErrorTolerance=tolerance)


def solvated(box_vectors):
    top, pos = alanine_dipeptide()
    modeller = app.Modeller(top, pos * unit.nanometer)
    modeller.addSolvent(forcefield(), model="tip3p", boxVectors=box_vectors)
    return modeller


def energies(system, positions, groups=None):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, **({} if groups is None else {"groups": groups}))
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ / unit.nanometer)


def no_dispersion(system):
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setUseDispersionCorrection(False)
    return system


CUBIC = [openmm.Vec3(2.3, 0, 0), openmm.Vec3(0, 2.3, 0), openmm.Vec3(0, 0, 2.3)] * unit.nanometer
TRICLINIC = [openmm.Vec3(2.4, 0, 0), openmm.Vec3(0.6, 2.3, 0), openmm.Vec3(-0.5, 0.7, 2.2)] * unit.nanometer


def build_case(box_vectors, tolerance=1e-6):
    modeller = solvated(box_vectors)
    system = no_dispersion(forcefield().createSystem(modeller.topology, **options(tolerance)))
    ml_atoms = list(range(22))  # the dipeptide
    model = make_model(types=SOLUTE_TYPES, cutoff=0.5)
    mixed = create_mixed_system(modeller.topology, system, ml_atoms, model)
    return dict(modeller=modeller, system=system, mixed=mixed, ml_atoms=ml_atoms, model=model)


@pytest.fixture(scope="module", params=["cubic", "triclinic"])
def case(request):
    return build_case(CUBIC if request.param == "cubic" else TRICLINIC)


def test_mechanical_embedding_removes_exactly_the_ml_region_alone(case):
    modeller, system, mixed = case["modeller"], case["system"], case["mixed"]
    positions = modeller.getPositions()
    everything = [g for g in range(32) if g != ML_FORCE_GROUP]
    mm_part, _ = energies(mixed, positions, set(everything))
    ml_part, _ = energies(mixed, positions, {ML_FORCE_GROUP})
    total, _ = energies(mixed, positions)
    assert total == pytest.approx(mm_part + ml_part, rel=1e-12)
    # independent construction: the dipeptide alone in the same box, with PME and all its images
    alone = app.Modeller(modeller.topology, positions)
    alone.delete([r for r in modeller.topology.residues() if r.name == "HOH"])
    alone_system = no_dispersion(forcefield().createSystem(alone.topology, **options()))
    e_all, _ = energies(system, positions)
    e_alone, _ = energies(alone_system, alone.getPositions())
    assert abs(mm_part - (e_all - e_alone)) <= 1e-8 * abs(e_all)
    # the ML force is the model on the dipeptide in the periodic cell
    pos = np.array(positions.value_in_unit(unit.nanometer))[case["ml_atoms"]]
    box = np.array([v.value_in_unit(unit.nanometer) for v in modeller.topology.getPeriodicBoxVectors()])
    types = [a.element.symbol for a in modeller.topology.atoms()][:22]
    assert ml_part == pytest.approx(float(case["model"].compute(pos, types, box)["energy"]), rel=1e-9)
    # leaving the image correction out would be wrong: the ML region's images do interact
    without = [k for k in range(mixed.getNumForces()) if isinstance(mixed.getForce(k), openmm.CustomCVForce)]
    assert len(without) == 1
    image_energy = mixed.getForce(without[0])
    assert image_energy.getEnergyFunction() == "-ml_images"


def test_mixed_forces_match_finite_differences(case):
    mixed, positions = case["mixed"], np.array(case["modeller"].getPositions().value_in_unit(unit.nanometer))
    check_openmm_forces_by_finite_differences(mixed, positions, [(1, 0), (8, 2), (14, 1), (30, 0)])  # ML atoms, and an MM water oxygen


def test_refusals_name_the_problem():
    modeller = solvated(CUBIC)
    system = forcefield().createSystem(modeller.topology, **options())
    model = make_model(types=SOLUTE_TYPES, cutoff=0.5)
    with pytest.raises(ValueError, match="cuts 1 covalent bond"):
        create_mixed_system(modeller.topology, system, list(range(6)), model)  # ACE and part of ALA
    with pytest.raises(ValueError, match="more than once"):
        create_mixed_system(modeller.topology, system, [0, 1, 1], model)
    with pytest.raises(ValueError, match="outside the System"):
        create_mixed_system(modeller.topology, system, [0, 10**6], model)
    with pytest.raises(ValueError, match=r"unknown particle type\(s\) \['N'\]"):
        create_mixed_system(modeller.topology, system, list(range(22)), make_model(types=["C", "H", "O"], cutoff=0.5))
    cutoff_system = forcefield().createSystem(modeller.topology, nonbondedMethod=app.CutoffPeriodic,
                                              nonbondedCutoff=0.9 * unit.nanometer)
    with pytest.raises(ValueError, match="PME"):
        create_mixed_system(modeller.topology, cutoff_system, list(range(22)), model)
    with pytest.raises(ValueError, match="embedding must be one of"):
        create_mixed_system(modeller.topology, system, list(range(22)), model, embedding="polarisable")
    assert system.getNumForces() == forcefield().createSystem(modeller.topology, **options()).getNumForces()  # untouched


def _minimised(system, positions):
    """The solvated start relaxed once (Reference: the multithreaded CPU minimiser ends in a different
    place each time)."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    return context.getState(getPositions=True).getPositions(asNumpy=True)


def _nve(system, positions, steps=200):
    integrator = openmm.VerletIntegrator(0.0005)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300.0, 5)
    times, totals = [], []
    for _ in range(steps // 10):
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.nanosecond))
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(KJ))
        integrator.step(10)
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    return np.polyfit(times, totals, 1)[0] / (dof * 0.0083144626 * 300.0), np.asarray(totals)


def test_mixed_system_conserves_energy_as_well_as_the_force_field_alone():
    """Velocity Verlet, Reference platform, double precision, 0.5 fs, from the same start (the
    all-MM System minimised once) with the same velocities: the mixed System's total-energy slope
    (straight-line fit, kT/ns/dof) is no worse than the all-MM System's own in the same run. Over
    0.1 ps both are dominated by the energy exchange that follows the minimisation; a conservation
    error of the ML part or of the image correction (a wrong force, a missing term) would stand out
    above it. (The untrained test model is not minimised into: its short-range attraction would
    pull atoms together without bound.)"""
    # one box shape, at OpenMM's default PME tolerance, is enough here (the suite's time budget)
    case = build_case(CUBIC, tolerance=5e-4)
    positions = _minimised(case["system"], case["modeller"].getPositions())
    mixed_drift, mixed_totals = _nve(case["mixed"], positions)
    mm_drift, _ = _nve(case["system"], positions)
    print(f"[mixed NVE, Reference double, 0.5 fs, 200 steps] drift {mixed_drift:.2e} kT/ns/dof "
          f"(all-MM control {mm_drift:.2e})")
    assert np.all(np.isfinite(mixed_totals))
    assert abs(mixed_drift) <= 1.5 * abs(mm_drift) + 1e-3
