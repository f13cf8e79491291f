"""The local density of beads (multiscale.cg.analysis.local_density) and the local-density force
built from it (multiscale.openmm.local_density): neighbour counts on a lattice whose shells are
known, the OpenMM energy against the numpy sum, OpenMM's forces against finite differences of
its own energy, and refusals."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import unit

from multiscale.cg.analysis.local_density import local_densities, local_density_weight
from multiscale.openmm.local_density import LOCAL_DENSITY_FORCE, local_density_force


def _traj(xyz, box):
    top = mdtraj.Topology()
    residue = top.add_residue("X", top.add_chain())
    for _ in range(len(xyz)):
        top.add_atom("B", mdtraj.element.virtual, residue)
    traj = mdtraj.Trajectory(np.asarray(xyz, dtype=np.float32)[None], top)
    traj.unitcell_vectors = np.asarray(box, dtype=np.float32)[None]
    return traj


def test_weight_is_one_inside_zero_outside_and_smooth():
    r = np.array([0.1, 0.8, 0.95, 1.1, 1.3])
    w = local_density_weight(r, 0.8, 1.1)
    assert w.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-12)
    # continuous derivative at both ends (the force has no jump)
    for edge in (0.8, 1.1):
        h = 1e-6
        slope_in = (local_density_weight(edge, 0.8, 1.1) - local_density_weight(edge - h, 0.8, 1.1)) / h
        slope_out = (local_density_weight(edge + h, 0.8, 1.1) - local_density_weight(edge, 0.8, 1.1)) / h
        assert abs(slope_in) < 1e-4 and abs(slope_out) < 1e-4
    with pytest.raises(ValueError, match="inner_nm < outer_nm"):
        local_density_weight(r, 1.1, 0.8)


def test_a_simple_cubic_lattice_has_six_neighbours_in_its_first_shell():
    """Spacing 0.5 nm, periodic 4x4x4: the first shell (6 at 0.5 nm) inside the weight's plateau,
    the second (12 at 0.707 nm) beyond its end, so every bead counts exactly 6; with the taper
    reaching the second shell, each of its 12 adds w(0.707)."""
    g = np.arange(4) * 0.5
    xyz = np.array([(x, y, z) for x in g for y in g for z in g]) + 0.01
    traj = _traj(xyz, np.diag([2.0] * 3))
    rho = local_densities(traj, np.arange(len(xyz)), 0.6, 0.65)
    assert rho.shape == (1, 64) and np.allclose(rho, 6.0)
    rho = local_densities(traj, np.arange(len(xyz)), 0.6, 0.8)
    second = 0.5 * (1 + np.cos(np.pi * (np.sqrt(0.5) - 0.6) / 0.2))
    assert np.allclose(rho, 6.0 + 12 * second)
    # members only: every other bead along x leaves a lattice of spacing 1.0 along x
    every_other = np.flatnonzero(np.isclose(xyz[:, 0] % 1.0, 0.01))
    assert np.allclose(local_densities(traj, every_other, 0.6, 0.65), 4.0)


def test_openmm_energy_is_the_numpy_sum_and_its_forces_its_gradient():
    rng = np.random.default_rng(3)
    box = np.diag([2.4, 2.6, 2.5])
    n = 60
    xyz = rng.uniform(0, 1, size=(n, 3)) @ box
    types = ["C", "CT", "PO"] * (n // 3)
    rho0 = {"C": 3.0, "CT": 2.0}
    kappa, inner, outer = 0.7, 0.5, 0.8
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    for _ in range(n):
        system.addParticle(72.0)
    force = local_density_force(types, rho0, kappa, inner, outer)
    assert force.getName() == LOCAL_DENSITY_FORCE
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))

    def energy(x):
        context.setPositions(x * unit.nanometer)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    members = np.array([i for i, t in enumerate(types) if t in rho0])
    rho = local_densities(_traj(xyz, box), members, inner, outer)[0]
    # float32 trajectory positions: the numpy sum agrees to their rounding
    expected = kappa * sum((rho[k] - rho0[types[i]]) ** 2 for k, i in enumerate(members))
    assert energy(xyz) == pytest.approx(expected, rel=1e-5)
    assert abs(expected) > 1.0
    context.setPositions(xyz * unit.nanometer)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert np.allclose(forces[[i for i, t in enumerate(types) if t not in rho0]], 0.0)
    h = 1e-5
    for i in list(members[:6]):
        for axis in range(3):
            plus, minus = xyz.copy(), xyz.copy()
            plus[i, axis] += h
            minus[i, axis] -= h
            numeric = -(energy(plus) - energy(minus)) / (2 * h)
            assert forces[i, axis] == pytest.approx(numeric, rel=1e-4, abs=1e-4)


def test_refusals_name_the_problem():
    types = ["C", "C", "PO"]
    with pytest.raises(ValueError, match="kappa_kj_mol must be > 0"):
        local_density_force(types, {"C": 1.0}, 0.0, 0.5, 0.8)
    with pytest.raises(ValueError, match="inner_nm < outer_nm"):
        local_density_force(types, {"C": 1.0}, 1.0, 0.8, 0.5)
    with pytest.raises(ValueError, match="implausibly large"):
        local_density_force(types, {"C": 1.0}, 1.0, 5.0, 11.0)
    with pytest.raises(ValueError, match="no bead has"):
        local_density_force(types, {"GL": 1.0}, 1.0, 0.5, 0.8)
    with pytest.raises(ValueError, match="at least 2 member"):
        local_density_force(types, {"PO": 1.0}, 1.0, 0.5, 0.8)
