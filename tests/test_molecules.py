"""systems.molecules: the alanine-dipeptide builder's geometry, its typing by amber14, and stable MD."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from systems.molecules import (  # noqa: E402
    ANGLES_DEG,
    BOND_LENGTHS_NM,
    alanine_dipeptide,
    alanine_dipeptide_system,
    backbone_dihedrals,
    bond_types,
    bonded_pairs,
    bonds_intact,
    chirality_volume,
)


def bond_lengths(topology, positions):
    pairs = bonded_pairs(topology)
    return np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1)


def test_builder_geometry_matches_documented_values():
    topology, positions = alanine_dipeptide(phi_deg=-70.0, psi_deg=140.0)
    assert topology.getNumAtoms() == 22 and topology.getNumBonds() == 21
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "NME"]
    expected = np.array([BOND_LENGTHS_NM[key] for key in bond_types(topology)])
    np.testing.assert_allclose(bond_lengths(topology, positions), expected, atol=1e-9)
    phi, psi = backbone_dihedrals(topology, positions)
    assert phi == pytest.approx(-70.0, abs=1e-6) and psi == pytest.approx(140.0, abs=1e-6)
    assert chirality_volume(topology, positions) > 0  # L-alanine (S)
    # the angles the z-matrix fixes, e.g. N-CA-C
    index = {(a.residue.index, a.name): a.index for a in topology.atoms()}
    n, ca, c = (positions[index[k]] for k in ((1, "N"), (1, "CA"), (1, "C")))
    cos = np.dot(n - ca, c - ca) / np.linalg.norm(n - ca) / np.linalg.norm(c - ca)
    assert np.degrees(np.arccos(cos)) == pytest.approx(ANGLES_DEG["N-CX-C"], abs=1e-6)
    # no clashes between atoms more than three bonds apart
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    graph = np.eye(22, dtype=int)
    adjacency = np.zeros((22, 22), dtype=int)
    for i, j in bonded_pairs(topology):
        adjacency[i, j] = adjacency[j, i] = 1
    within3 = graph + adjacency + adjacency @ adjacency + adjacency @ adjacency @ adjacency
    assert d[within3 == 0].min() > 0.2


def test_system_matches_builder_and_md_at_400K_stays_intact():
    topology, positions = alanine_dipeptide()
    system = alanine_dipeptide_system(topology)
    # the documented lengths are the force field's own equilibrium lengths
    bonds = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    r0 = {}
    for k in range(bonds.getNumBonds()):
        i, j, length, _ = bonds.getBondParameters(k)
        r0[frozenset((i, j))] = length.value_in_unit(unit.nanometer)
    pairs = bonded_pairs(topology)
    np.testing.assert_allclose(bond_lengths(topology, positions), [r0[frozenset(p)] for p in pairs.tolist()], atol=1e-9)
    assert system.getNumConstraints() == 0

    integrator = openmm.LangevinMiddleIntegrator(400 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picosecond)
    integrator.setRandomNumberSeed(7)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions * unit.nanometer)
    energy = simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy) and energy < 0.0  # near the force field's minimum: no strained terms
    simulation.context.setVelocitiesToTemperature(400 * unit.kelvin, 7)
    for _ in range(10):
        simulation.step(200)
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        now = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        assert bonds_intact(topology, now, positions, tolerance=0.2)
    assert chirality_volume(topology, now) > 0
