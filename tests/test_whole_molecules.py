"""Molecules made whole before a Context sees them: forces written in raw coordinates (the
tabulated model's bending–torsion terms) see no periodic images, so positions whose molecules are
split across the cell's faces must give the energies and forces of the whole molecules."""

import numpy as np
import openmm
import pytest
from openmm import app, unit

import multiscale  # noqa: F401
from multiscale.cg.geometry import whole_molecules
from multiscale.cg.tabulated import Table, TabulatedModel
from multiscale.labels.openmm_teacher import OpenMMLabeller
from multiscale.openmm.molecules import bonded_pairs, needs_whole_molecules, whole_positions
from multiscale.openmm.tabulated import tabulated_forces

BOX = np.array([[2.4, 0.0, 0.0], [0.6, 2.3, 0.0], [-0.5, 0.7, 2.5]])  # triclinic, OpenMM's reduced form
CHAINS, LENGTH = 6, 6


def _chains(seed=0):
    rng = np.random.default_rng(seed)
    x = []
    for _ in range(CHAINS):
        p = rng.uniform(0.0, 2.3, 3)
        for _ in range(LENGTH):
            x.append(p.copy())
            step = rng.normal(size=3)
            p = p + 0.4 * step / np.linalg.norm(step)
    bonds = [(c * LENGTH + k, c * LENGTH + k + 1) for c in range(CHAINS) for k in range(LENGTH - 1)]
    angles = [(c * LENGTH + k, c * LENGTH + k + 1, c * LENGTH + k + 2) for c in range(CHAINS) for k in range(LENGTH - 2)]
    dihedrals = [(c * LENGTH + k, c * LENGTH + k + 1, c * LENGTH + k + 2, c * LENGTH + k + 3)
                 for c in range(CHAINS) for k in range(LENGTH - 3)]
    return np.array(x), bonds, angles, dihedrals


def _scattered(x, seed=1):
    """Every bead moved by its own random lattice vector (molecules split across the faces)."""
    shifts = np.random.default_rng(seed).integers(-2, 3, size=(len(x), 3))
    assert np.any(shifts != shifts[0])
    return x + shifts @ BOX


def test_whole_molecules_moves_each_molecule_by_one_lattice_vector():
    x, bonds, _, _ = _chains()
    lone = np.array([[0.3, 0.2, 0.1]])  # an unbonded bead stays where it is
    y = whole_molecules(np.vstack([_scattered(x), lone + BOX[0]]), bonds, BOX)
    assert np.allclose(y[-1], lone[0] + BOX[0])
    moved = y[:-1] - x
    for c in range(CHAINS):
        d = moved[c * LENGTH:(c + 1) * LENGTH]
        assert np.ptp(d, axis=0).max() < 1e-12  # the whole chain by one vector...
        cells = d[0] @ np.linalg.inv(BOX)
        assert np.allclose(cells, np.round(cells), atol=1e-9)  # ...a lattice vector
    assert np.allclose(whole_molecules(x, bonds, None), x)


def _system(model, x, bonds, angles, dihedrals):
    system = openmm.System()
    for _ in range(len(x)):
        system.addParticle(56.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    for force in tabulated_forces(model, ["A"] * len(x), bonds, angles, dihedrals, periodic=True):
        system.addForce(force)
    return system


def _model():
    bond = Table("bond", np.linspace(0.3, 0.5, 9), 40.0 * (np.linspace(0.3, 0.5, 9) - 0.4) ** 2, 1000.0)
    angle = Table("angle", np.linspace(1.0, np.pi, 9), 0.5 * np.cos(np.linspace(1.0, np.pi, 9)), 100.0)
    return TabulatedModel({}, {("A", "A"): bond}, {("A", "A", "A"): angle},
                          {("A", "A", "A", "A"): np.array([0.5, 2.0, -1.5, 0.8])}, "1-3", 1.0, 450.0)


def test_raw_coordinate_forces_see_whole_molecules():
    """Scattered images give the whole chains' energy and forces through the labeller (the
    validators' and force labels' evaluator); without making them whole they would not."""
    x, bonds, angles, dihedrals = _chains()
    system = _system(_model(), x, bonds, angles, dihedrals)
    assert needs_whole_molecules(system)
    assert not needs_whole_molecules(_system(_model(), x, bonds, angles, ()))
    assert {tuple(p) for p in bonded_pairs(system).tolist()} == set(bonds)
    labeller = OpenMMLabeller(system, "Reference")
    e_whole, f_whole = labeller.energy_forces(x, BOX)
    e_scattered, f_scattered = labeller.energy_forces(_scattered(x), BOX)
    assert e_scattered == pytest.approx(e_whole, rel=1e-10, abs=1e-10)
    assert np.allclose(f_scattered, f_whole, rtol=1e-9, atol=1e-9)
    # the guard is what makes them agree: a raw Context sees the split chains' wrong torsions
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(_scattered(x))
    e_raw = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert abs(e_raw - e_whole) > 1e-3
    y = whole_positions(system, _scattered(x), BOX)
    i, j = np.array(bonds).T
    assert np.allclose(np.linalg.norm(y[j] - y[i], axis=1), 0.4)


def test_cg_simulation_starts_from_whole_molecules(tmp_path):
    from multiscale.openmm.cg_simulation import CGSimulation

    x, bonds, angles, dihedrals = _chains()
    system = _system(_model(), x, bonds, angles, dihedrals)
    topology = app.Topology()
    chain = topology.addChain()
    atoms = []
    for c in range(CHAINS):
        residue = topology.addResidue("CG", chain)
        atoms.extend(topology.addAtom(f"B{k}", None, residue) for k in range(LENGTH))
    for i, j in bonds:
        topology.addBond(atoms[i], atoms[j])
    topology.setPeriodicBoxVectors(BOX * unit.nanometer)
    sim = CGSimulation(topology, system, _scattered(x), tmp_path, temperature_K=450.0, timestep_ps=0.01)
    y = sim.simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    i, j = np.array(bonds).T
    assert np.linalg.norm(y[j] - y[i], axis=1).max() < 0.4 + 1e-6  # every bond whole, as built


def test_chains_are_made_whole_along_bonds_not_along_long_intramolecular_pairs():
    """The chain-pair tables (1-5, 1-6) and the ramp correction join beads of a chain that can be
    more than half the cell apart: their minimum image is then the wrong one, and a walk through
    it tore the chain in raw coordinates (a bond of 2.45 nm in a 2.94 nm cell, seen in a quick
    job's CG System). Only bonds place the beads."""
    from multiscale.openmm.tabulated import CHAIN_PAIR_FORCE, INTRAMOLECULAR_RAMP_FORCE

    x, bonds, angles, dihedrals = _chains()
    # chain 0 straightened along the cell's first vector: its 1-6 distance, 2.25 nm, is more than
    # half of every cell width (<= 2.5 nm)
    x[:LENGTH] = x[0] + np.outer(np.arange(LENGTH), [0.45, 0.0, 0.0])
    system = _system(_model(), x, bonds, angles, dihedrals)
    for name in (CHAIN_PAIR_FORCE, INTRAMOLECULAR_RAMP_FORCE):
        force = openmm.CustomBondForce("0.01*r")
        force.setName(name)
        for c in range(CHAINS):
            force.addBond(c * LENGTH, c * LENGTH + LENGTH - 1, [])
            force.addBond(c * LENGTH, c * LENGTH + LENGTH - 2, [])
        system.addForce(force)
    assert {tuple(p) for p in bonded_pairs(system).tolist()} == set(bonds)
    y = whole_positions(system, _scattered(x), BOX)
    i, j = np.array(bonds).T
    lengths = np.linalg.norm(y[j] - y[i], axis=1)
    assert np.allclose(lengths[:LENGTH - 1], 0.45) and np.allclose(lengths[LENGTH - 1:], 0.4)
    assert np.linalg.norm(y[LENGTH - 1] - y[0]) == pytest.approx(2.25)
