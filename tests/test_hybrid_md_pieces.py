"""Pieces of the hybrid ML/MM job (protocols/hybrid_md.py) that need no trained model: the φ/ψ
basin populations, the energy log of resumable runs (cut back with the trajectory on resume), and
the restrained gas-phase sampling that keeps each basin populated."""

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multiscale.openmm.cg_simulation import ENERGY_COLUMNS, CGSimulation  # noqa: E402
from protocols.hybrid_md import BASINS, populations, restrained_sampling_system  # noqa: E402
from systems.molecules import alanine_dipeptide, backbone_dihedrals  # noqa: E402


def test_populations_classify_the_textbook_basins():
    # (φ, ψ) of the textbook minima (C7eq, C5, αR, αL), one wrapped through ψ = ±180, and one in none
    phi = np.array([-83.0, -155.0, -160.0, -65.0, 60.0, 60.0])
    psi = np.array([73.0, 160.0, -170.0, -40.0, 45.0, -150.0])
    pops = populations(phi, psi)
    assert pops == pytest.approx({"C5": 2 / 6, "C7eq": 1 / 6, "alphaR": 1 / 6, "alphaL": 1 / 6, "other": 1 / 6})
    assert sum(pops.values()) == pytest.approx(1.0)
    # every frame counts once even where two regions' boxes would both take it
    grid = np.linspace(-179.5, 179.5, 72)
    phi, psi = (a.ravel() for a in np.meshgrid(grid, grid))
    assert sum(populations(phi, psi).values()) == pytest.approx(1.0)
    assert set(BASINS) == {"C5", "C7eq", "alphaR", "alphaL"}


def _argon(n=27, edge=1.7):
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * edge))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(0.8)
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(n):
        system.addParticle(39.95)
        force.addParticle(0.0, 0.34, 0.996)
        topology.addAtom("AR", app.Element.getBySymbol("Ar"), topology.addResidue("AR", chain))
    system.addForce(force)
    topology.setPeriodicBoxVectors(np.eye(3) * edge * unit.nanometer)
    grid = np.arange(3) * edge / 3 + 0.2
    positions = np.array([[x, y, z] for x in grid for y in grid for z in grid])
    return topology, system, positions


def test_energy_log_is_cut_back_with_the_trajectory_on_resume(tmp_path):
    topology, system, positions = _argon()

    def simulation():
        return CGSimulation(topology, system, positions, tmp_path, name="run", temperature_K=120.0, timestep_ps=0.004,
                            report_interval=5, checkpoint_interval=10, seed=1, log_energies=True)

    simulation().run(20, progress=False)
    path = tmp_path / "run_energies.csv"
    rows = path.read_text().splitlines()
    assert rows[0] == ",".join(ENERGY_COLUMNS) and len(rows) == 1 + 4
    # a crash after the last checkpoint left a row (and frame) the checkpoint does not know about
    with open(path, "a") as handle:
        handle.write("25,0.1,0,0,0,0\n")
    simulation().run(30, progress=False)
    data = np.genfromtxt(path, delimiter=",", names=True)
    assert list(data["step"]) == [5, 10, 15, 20, 25, 30]
    assert np.all(data["temperature_K"] > 0) and np.all(np.isfinite(data["potential_kj_mol"]))
    assert data["volume_nm3"] == pytest.approx(1.7**3)


def test_restrained_sampling_keeps_the_basin_without_changing_the_force_field_inside_it():
    top, pos = alanine_dipeptide(-65.0, -40.0)  # αR: not a minimum in vacuum
    system = restrained_sampling_system(top, (-65.0, -40.0))
    integrator = openmm.LangevinMiddleIntegrator(500 * unit.kelvin, 5 / unit.picosecond, 0.0005 * unit.picosecond)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(pos)
    context.setVelocitiesToTemperature(500 * unit.kelvin, 3)
    for _ in range(10):
        integrator.step(400)
        x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        phi, psi = backbone_dihedrals(top, x)
        assert abs(phi + 65.0) < 40.0 + 25.0 and abs(psi + 40.0) < 40.0 + 25.0
    # inside ±40° the restraint adds nothing: the energy is amber14's own
    restraint = [f for f in system.getForces() if isinstance(f, openmm.CustomTorsionForce)]
    assert len(restraint) == 1
    restraint[0].setForceGroup(5)
    context.reinitialize(preserveState=False)
    context.setPositions(pos)
    assert context.getState(getEnergy=True, groups={5}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == 0.0
