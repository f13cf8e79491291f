"""The local density of beads (multiscale.cg.analysis.local_density) and the local-density force
built from it (multiscale.openmm.local_density): neighbour counts on a lattice whose shells are
known, the OpenMM energy against the numpy sum, OpenMM's forces against finite differences of
its own energy, the virial-neutral shift of the targets against finite differences of the spring's
energy under a lateral stretch (and, per group, under a lateral and a normal one), and refusals."""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import unit

from multiscale.cg.analysis.local_density import (
    local_densities,
    local_density_weight,
    local_density_weight_derivative,
    virial_neutral_shift,
    virial_neutral_shifts,
)
from multiscale.openmm.local_density import LOCAL_DENSITY_FORCE, local_density_force


def _traj(xyz, box):
    """one frame (xyz: (n, 3), box: (3, 3)) or several ((T, n, 3), (T, 3, 3)), in nm"""
    xyz, box = np.asarray(xyz, dtype=np.float32), np.asarray(box, dtype=np.float32)
    if xyz.ndim == 2:
        xyz, box = xyz[None], box[None]
    top = mdtraj.Topology()
    residue = top.add_residue("X", top.add_chain())
    for _ in range(xyz.shape[1]):
        top.add_atom("B", mdtraj.element.virtual, residue)
    traj = mdtraj.Trajectory(xyz, top)
    traj.unitcell_vectors = box
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


def test_weight_derivative_is_the_slope_of_the_weight():
    r = np.linspace(0.3, 1.3, 401)
    h = 1e-6
    numeric = (local_density_weight(r + h, 0.8, 1.1) - local_density_weight(r - h, 0.8, 1.1)) / (2 * h)
    assert np.allclose(local_density_weight_derivative(r, 0.8, 1.1), numeric, atol=1e-4)  # w'' jumps at 0.8 and 1.1: off by h w''/4 there
    assert local_density_weight_derivative(np.array([0.9]), 0.8, 1.1)[0] < -1.0  # it can fail: the taper falls


def test_virial_neutral_shift_zeroes_the_springs_mean_lateral_stretch_derivative():
    """dU/dε of U = Σ (ρ_i − ρ0_i − δ)², every position and the cell stretched by (1 + ε) along x and
    y, by central differences of local_densities (not the function's own derivative), averaged
    over frames: 0 at the returned δ, and clearly not 0 at δ = 0."""
    rng = np.random.default_rng(5)
    box = np.diag([2.6, 2.8, 2.4])
    frames, n, inner, outer = 4, 70, 0.5, 0.8
    xyz = rng.uniform(0, 1, size=(frames, n, 3)) @ box
    xyz[:, : n // 2, 2] *= 0.5  # a denser half: densities vary from bead to bead, as in a bilayer
    boxes = np.repeat(box[None], frames, axis=0)
    members = np.arange(0, n, 2)
    rho0 = np.full(members.size, local_densities(_traj(xyz, boxes), members, inner, outer).mean())  # one target per member
    delta = virial_neutral_shift(_traj(xyz, boxes), members, rho0, inner, outer, axes=(0, 1))

    def mean_derivative(shift, h=1e-3):
        def energy(eps):
            stretch = np.diag([1 + eps, 1 + eps, 1.0])
            rho = local_densities(_traj(xyz @ stretch, boxes @ stretch), members, inner, outer)
            return ((rho - rho0 - shift) ** 2).sum(axis=1).mean()
        return (energy(h) - energy(-h)) / (2 * h)

    scale = abs(mean_derivative(0.0))
    assert scale > 10.0  # the unshifted spring pushes (the test can fail)
    assert abs(mean_derivative(delta)) < 0.01 * scale
    assert delta > 0  # crowded beads have more neighbours in the taper: expanding relieves them
    # the stretch along z instead gives another shift
    assert virial_neutral_shift(_traj(xyz, boxes), members, rho0, inner, outer, axes=(2,)) != pytest.approx(delta)


def test_virial_neutral_shift_refusals():
    box = np.diag([2.0, 2.0, 2.0])
    xyz = np.random.default_rng(0).uniform(0, 2, size=(10, 3))
    traj = _traj(xyz, box)
    with pytest.raises(ValueError, match="one target per member"):
        virial_neutral_shift(traj, [0, 1, 2], [1.0, 2.0], 0.5, 0.8)
    with pytest.raises(ValueError, match="axes"):
        virial_neutral_shift(traj, [0, 1, 2], [1.0, 1.0, 1.0], 0.5, 0.8, axes=(0, 3))
    traj.unitcell_vectors = None
    with pytest.raises(ValueError, match="periodic cells"):
        virial_neutral_shift(traj, [0, 1, 2], [1.0, 1.0, 1.0], 0.5, 0.8)


def test_virial_neutral_shifts_zero_the_lateral_and_the_normal_stretch_derivatives_together():
    """Two groups of members, two strains (x and y together; z): dU/dε of
    U = Σ (ρ_i − ρ0_i − δ_g(i))² by central differences of local_densities under each stretch,
    averaged over frames, is 0 for both at the returned shifts; the one lateral shift leaves the
    normal derivative clearly non-zero; one group and one strain give virial_neutral_shift."""
    rng = np.random.default_rng(11)
    box = np.diag([2.6, 2.8, 3.0])
    frames, n, inner, outer = 4, 80, 0.5, 0.8
    xyz = rng.uniform(0, 1, size=(frames, n, 3)) @ box
    xyz[:, : n // 2, 2] = 1.5 + 0.4 * (xyz[:, : n // 2, 2] / 3.0 - 0.5)  # a dense slab in the middle, as tails
    boxes = np.repeat(box[None], frames, axis=0)
    members = np.arange(0, n, 2)
    groups = np.where(members < n // 2, "slab", "gas")
    rho = local_densities(_traj(xyz, boxes), members, inner, outer)
    rho0 = np.array([rho[:, groups == g].mean() for g in groups])  # each group's mean, per member
    shifts = virial_neutral_shifts(_traj(xyz, boxes), members, rho0, groups, inner, outer, strains=((0, 1), (2,)))
    assert set(shifts) == {"slab", "gas"}

    def mean_derivative(shift, scale, h=1e-3):
        def energy(eps):
            stretch = np.diag(1.0 + eps * np.asarray(scale, dtype=float))
            rho = local_densities(_traj(xyz @ stretch, boxes @ stretch), members, inner, outer)
            return ((rho - rho0 - shift) ** 2).sum(axis=1).mean()
        return (energy(h) - energy(-h)) / (2 * h)

    per_member = np.array([shifts[g] for g in groups])
    lateral, normal = (1, 1, 0), (0, 0, 1)
    size = max(abs(mean_derivative(0.0, lateral)), abs(mean_derivative(0.0, normal)))
    assert size > 10.0  # the unshifted spring pushes (the test can fail)
    assert abs(mean_derivative(per_member, lateral)) < 0.01 * size
    assert abs(mean_derivative(per_member, normal)) < 0.01 * size
    one = virial_neutral_shift(_traj(xyz, boxes), members, rho0, inner, outer, axes=(0, 1))
    assert abs(mean_derivative(one, normal)) > 0.05 * size  # the lateral shift alone leaves a normal push
    assert virial_neutral_shifts(_traj(xyz, boxes), members, rho0, np.zeros(members.size), inner, outer,
                                 strains=((0, 1),))[0] == pytest.approx(one, rel=1e-12)


def test_virial_neutral_shifts_refusals():
    box = np.diag([2.0, 2.0, 2.0])
    xyz = np.random.default_rng(0).uniform(0, 2, size=(40, 3))
    traj = _traj(xyz, box)
    members, rho0 = np.arange(40), np.full(40, 3.0)
    with pytest.raises(ValueError, match="one label per member"):
        virial_neutral_shifts(traj, members, rho0, ["a"] * 39, 0.5, 0.8)
    with pytest.raises(ValueError, match="as many strains"):
        virial_neutral_shifts(traj, members, rho0, ["a"] * 40, 0.5, 0.8, strains=((0, 1), (2,)))
    with pytest.raises(ValueError, match="not independent"):  # two groups, the same strain twice
        virial_neutral_shifts(traj, members, rho0, ["a", "b"] * 20, 0.5, 0.8, strains=((0, 1), (0, 1)))
