"""multiscale.openmm.pressure: finite-difference molecular pressure against the analytic virial of
pair potentials (minimum-image pair sums written here), and the linear pressure correction."""

from __future__ import annotations

import itertools

import numpy as np
import openmm
import pytest

from multiscale.openmm.pressure import FORCE_NAME, PARAMETER, fit_pressure_correction, molecular_pressure, ramp_force
from multiscale.units import KJ_PER_MOL_NM3_TO_BAR, kT

SIGMA, EPS, RC, T = 0.3, 1.2, 0.9, 300.0
BOX = np.diag([2.0, 2.1, 1.9])


def lj(r):
    return 4 * EPS * ((SIGMA / r) ** 12 - (SIGMA / r) ** 6) - 4 * EPS * ((SIGMA / RC) ** 12 - (SIGMA / RC) ** 6)


def minus_dlj(r):
    return 4 * EPS * (12 * SIGMA**12 / r**13 - 6 * SIGMA**6 / r**7)


def lj_force(n, exclusions=()):
    force = openmm.CustomNonbondedForce(
        f"4*{EPS}*((s/r)^12 - (s/r)^6) - 4*{EPS}*((s/{RC})^12 - (s/{RC})^6); s={SIGMA}")
    for _ in range(n):
        force.addParticle([])
    for i, j in exclusions:
        force.addExclusion(i, j)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(RC)
    return force


def system_of(n, forces):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(20.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    for force in forces:
        system.addForce(force)
    return system


def configurations(n, frames, seed, min_distance=0.28):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        x = []
        while len(x) < n:
            p = rng.uniform(0, 1, 3) @ BOX
            if all(np.linalg.norm(minimum_image(p - q)) > min_distance for q in x):
                x.append(p)
        out.append(np.array(x))
    return np.array(out)


def minimum_image(d):
    lengths = np.diag(BOX)
    return d - lengths * np.round(d / lengths)


def test_monomer_pressure_equals_the_analytic_virial():
    n = 40
    x = configurations(n, 3, seed=1)
    system = system_of(n, [lj_force(n)])
    p = molecular_pressure(system, x, BOX, [[i] for i in range(n)], T)
    volume = np.linalg.det(BOX)
    for t in range(3):
        virial = 0.0
        for i, j in itertools.combinations(range(n), 2):
            r = np.linalg.norm(minimum_image(x[t, i] - x[t, j]))
            if r < RC:
                virial += minus_dlj(r) * r
        expected = (n * kT(T) / volume + virial / (3 * volume)) * KJ_PER_MOL_NM3_TO_BAR
        assert abs(virial) > 1.0
        assert p[t] == pytest.approx(expected, rel=1e-6, abs=1e-4)


def test_lateral_pressure_equals_the_analytic_xy_virial():
    # axes="xy": x and y scaled, z kept, so only the pairs' in-plane separations do work:
    # P_L = N kT / V + Σ (−U'(r)) (Δx² + Δy²) / r / (2 V)
    n = 40
    x = configurations(n, 3, seed=4)
    system = system_of(n, [lj_force(n)])
    p = molecular_pressure(system, x, BOX, [[i] for i in range(n)], T, axes="xy")
    isotropic = molecular_pressure(system, x, BOX, [[i] for i in range(n)], T)
    volume = np.linalg.det(BOX)
    for t in range(3):
        virial = 0.0
        for i, j in itertools.combinations(range(n), 2):
            d = minimum_image(x[t, i] - x[t, j])
            r = np.linalg.norm(d)
            if r < RC:
                virial += minus_dlj(r) * (d[0] ** 2 + d[1] ** 2) / r
        expected = (n * kT(T) / volume + virial / (2 * volume)) * KJ_PER_MOL_NM3_TO_BAR
        assert abs(virial) > 1.0
        assert p[t] == pytest.approx(expected, rel=1e-6, abs=1e-4)
        assert abs(p[t] - isotropic[t]) > 1e-3 * abs(p[t])  # a random frame is not isotropic
    with pytest.raises(ValueError, match="axes"):
        molecular_pressure(system, x, BOX, [[i] for i in range(n)], T, axes="z")


def test_molecular_pressure_keeps_bonds_rigid_and_uses_centres():
    """Dimers: the bond energy does not change under the molecular move (so it adds no pressure),
    and the intermolecular virial is taken between molecular centres."""
    n_mol = 16
    centres = configurations(n_mol, 1, seed=2, min_distance=0.45)[0]
    rng = np.random.default_rng(3)
    offsets = rng.normal(size=(n_mol, 3))
    offsets *= 0.08 / np.linalg.norm(offsets, axis=1, keepdims=True)
    x = np.empty((2 * n_mol, 3))
    x[0::2], x[1::2] = centres + offsets, centres - offsets
    molecules = [[2 * m, 2 * m + 1] for m in range(n_mol)]
    pairs = [tuple(m) for m in molecules]
    bond = openmm.HarmonicBondForce()
    for i, j in pairs:
        bond.addBond(i, j, 0.1, 5e4)  # strained: 0.16 nm vs 0.1 nm
    bond.setUsesPeriodicBoundaryConditions(True)
    with_bond = molecular_pressure(system_of(2 * n_mol, [lj_force(2 * n_mol, pairs), bond]), x, BOX, molecules, T)
    without = molecular_pressure(system_of(2 * n_mol, [lj_force(2 * n_mol, pairs)]), x, BOX, molecules, T)
    assert with_bond[0] == pytest.approx(without[0], rel=1e-7, abs=1e-4)
    volume = np.linalg.det(BOX)
    virial = 0.0
    for i, j in itertools.combinations(range(2 * n_mol), 2):
        if i // 2 == j // 2:
            continue
        d = minimum_image(x[i] - x[j])
        r = np.linalg.norm(d)
        if r < RC:
            f_on_i = minus_dlj(r) * d / r
            # centre separation of the same image: d − (x_i − R_I) + (x_j − R_J)
            sep = d - (x[i] - centres[i // 2]) + (x[j] - centres[j // 2])
            virial += f_on_i @ sep
    expected = (n_mol * kT(T) / volume + virial / (3 * volume)) * KJ_PER_MOL_NM3_TO_BAR
    assert without[0] == pytest.approx(expected, rel=1e-6, abs=1e-4)


def test_ramp_pressure_is_analytic_and_the_fit_hits_the_target():
    n = 40
    x = configurations(n, 4, seed=4)
    molecules = [[i] for i in range(n)]
    ramp = ramp_force(molecules, RC, A_kj_mol=1.0)
    assert ramp.getName() == FORCE_NAME and ramp.getGlobalParameterName(0) == PARAMETER
    per_a = molecular_pressure(system_of(n, [ramp]), x, BOX, molecules, T, kinetic=False)
    volume = np.linalg.det(BOX)
    for t in range(4):
        r = [np.linalg.norm(minimum_image(x[t, i] - x[t, j])) for i, j in itertools.combinations(range(n), 2)]
        expected = sum(ri / RC for ri in r if ri < RC) / (3 * volume) * KJ_PER_MOL_NM3_TO_BAR
        assert per_a[t] == pytest.approx(expected, rel=1e-6)

    base = system_of(n, [lj_force(n)])
    correction = fit_pressure_correction(base, x, BOX, molecules, T, target_bar=1.0, cutoff_nm=RC)
    assert base.getNumForces() == 1  # the ramp was only borrowed
    assert correction.pressure_before_bar == pytest.approx(molecular_pressure(base, x, BOX, molecules, T).mean())
    assert abs(correction.pressure_before_bar - 1.0) > 10.0  # a real correction, not a no-op
    corrected = system_of(n, [lj_force(n), correction.to_force(molecules)])
    after = molecular_pressure(corrected, x, BOX, molecules, T)
    assert after.mean() == pytest.approx(1.0, abs=1e-3 * abs(correction.pressure_before_bar))
    assert correction.to_dict()["A_kj_mol"] == correction.A_kj_mol


def test_bad_input_is_refused():
    n = 4
    system = system_of(n, [lj_force(n)])
    x = configurations(n, 1, seed=5)
    with pytest.raises(ValueError, match="in no molecule"):
        molecular_pressure(system, x, BOX, [[0, 1], [2]], T)
    with pytest.raises(ValueError, match="shares a particle"):
        molecular_pressure(system, x, BOX, [[0, 1], [1, 2], [3]], T)
    with pytest.raises(ValueError, match=r"positions must be \(T, 4, 3\)"):
        molecular_pressure(system, x[:, :3], BOX, [[0], [1], [2], [3]], T)
    with pytest.raises(ValueError, match="no bead pairs"):
        fit_pressure_correction(system, x, BOX, [[0], [1], [2], [3]], T, cutoff_nm=0.01)


def test_fit_works_on_a_system_holding_a_torchforce():
    """The CG System carries the bead network as a TorchForce, which OpenMM cannot serialise-copy."""
    from conftest import make_model
    from multiscale.openmm import torch_force

    n = 12
    x = configurations(n, 2, seed=6)
    system = system_of(n, [lj_force(n), torch_force(make_model(types=("A",), cutoff=0.5), ["A"] * n, periodic=True)])
    correction = fit_pressure_correction(system, x, BOX, [[i] for i in range(n)], T, cutoff_nm=RC)
    assert np.isfinite(correction.A_kj_mol) and system.getNumForces() == 2


def test_ramp_acts_between_molecules_only():
    """Two dimers: the ramp energy counts the 4 intermolecular pairs within r_c, not the 2 bonds."""
    x = np.array([[0.2, 0.2, 0.2], [0.5, 0.2, 0.2], [0.2, 0.6, 0.2], [0.5, 0.6, 0.2]])
    system = system_of(4, [ramp_force([[0, 1], [2, 3]], RC, A_kj_mol=2.0)])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    energy = context.getState(getEnergy=True).getPotentialEnergy()._value
    inter = [np.linalg.norm(x[i] - x[j]) for i in (0, 1) for j in (2, 3)]
    assert energy == pytest.approx(sum(2.0 * (1 - r / RC) for r in inter), rel=1e-9)


def test_correction_joins_a_system_with_excluding_priors_on_the_cpu_platform():
    """OpenMM's CPU platform needs one exclusion list for all CustomNonbondedForces: add_to copies
    the priors' exclusions, and the energy is unchanged by them (they are intramolecular)."""
    from multiscale.openmm.pressure import PressureCorrection

    pairs = [(0, 1), (2, 3)]
    x = np.array([[0.2, 0.2, 0.2], [0.5, 0.2, 0.2], [0.2, 0.6, 0.2], [0.5, 0.6, 0.2]])
    correction = PressureCorrection(A_kj_mol=2.0, cutoff_nm=RC, target_bar=1.0, pressure_before_bar=0.0,
                                    pressure_before_sem_bar=0.0, bar_per_kj_mol=1.0, n_frames=1)
    energies = []
    for platform in ("Reference", "CPU"):
        system = system_of(4, [lj_force(4, pairs)])
        correction.add_to(system, [[0, 1], [2, 3]])
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
        context.setPositions(x)
        energies.append(context.getState(getEnergy=True, groups={0}).getPotentialEnergy()._value)
    lj_only = sum(lj(np.linalg.norm(x[i] - x[j])) for i in (0, 1) for j in (2, 3))
    ramp = sum(2.0 * (1 - np.linalg.norm(x[i] - x[j]) / RC) for i in (0, 1) for j in (2, 3))
    assert energies[0] == pytest.approx(lj_only + ramp, rel=1e-9)
    assert energies[1] == pytest.approx(energies[0], rel=1e-5)
