"""NVE energy conservation with the ML force in OpenMM (Reference platform, double precision).

An argon-like liquid held together by OpenMM's own switched Lennard-Jones, plus the ML
potential with forces of the same order. A non-conservative or non-smooth ML force shows up
as a drift of the total energy far above that of the Lennard-Jones-only control, run alongside.
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from conftest import make_model
from multiscale.analysis import energy_drift
from multiscale.openmm import torch_force

N_SIDE = 4
BOX_NM = 1.45  # 64 atoms at 21 nm^-3 (liquid argon)
TEMPERATURE = 100.0


def argon_system(with_ml: bool):
    system = openmm.System()
    lj = openmm.NonbondedForce()
    lj.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    lj.setCutoffDistance(0.7)
    lj.setUseSwitchingFunction(True)
    lj.setSwitchingDistance(0.6)
    lj.setUseDispersionCorrection(False)
    for _ in range(N_SIDE**3):
        system.addParticle(39.948)
        lj.addParticle(0.0, 0.340, 0.996)
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * BOX_NM))
    system.addForce(lj)
    if with_ml:
        model = make_model(types=["Ar"], cutoff=0.5, seed=2)
        model.readout.scale.fill_(5.0)
        ml = torch_force(model, ["Ar"] * N_SIDE**3, periodic=True)
        ml.setForceGroup(1)
        system.addForce(ml)
    return system


def run_nve(system, steps=1500, dt_fs=2.0, every=10):
    grid = (np.indices((N_SIDE,) * 3).reshape(3, -1).T + 0.5) * (BOX_NM / N_SIDE)
    pos = grid + np.random.default_rng(0).normal(scale=0.01, size=grid.shape)
    integrator = openmm.VerletIntegrator(dt_fs * 1e-3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 200)
    context.setVelocitiesToTemperature(TEMPERATURE, 1)
    times, energies = [], []
    for _ in range(steps // every):
        integrator.step(every)
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(unit.picosecond))
        energies.append(
            (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        )
    rms = []
    for group in (0, 1):
        f = context.getState(getForces=True, groups={group}).getForces(asNumpy=True)._value
        rms.append(float(np.sqrt((f**2).sum(axis=1).mean())))
    return np.array(times), np.array(energies), rms


@pytest.mark.slow
def test_nve_energy_conservation_with_ml_force(capsys):
    n_dof = 3 * N_SIDE**3 - 3
    t_ml, e_ml, (rms_lj_force, rms_ml_force) = run_nve(argon_system(with_ml=True))
    t_lj, e_lj, _ = run_nve(argon_system(with_ml=False))
    drift_ml = energy_drift(t_ml, e_ml, n_dof, TEMPERATURE)
    drift_lj = energy_drift(t_lj, e_lj, n_dof, TEMPERATURE)
    fluct_ml = np.std(e_ml) / (n_dof * 0.0083144626 * TEMPERATURE)
    with capsys.disabled():
        print(
            f"\n[NVE, Reference platform, double, 2 fs, {t_ml[-1]:.1f} ps] drift ML+LJ {drift_ml:.2e} "
            f"kT/ns/dof, LJ-only control {drift_lj:.2e} kT/ns/dof; energy fluctuation {fluct_ml:.1e} kT/dof; "
            f"RMS force ML {rms_ml_force:.1f}, LJ {rms_lj_force:.1f} kJ/mol/nm"
        )
    assert np.isfinite(e_ml).all()
    # The ML force must matter: the same order as the Lennard-Jones forces that hold the liquid.
    assert rms_ml_force > 0.2 * rms_lj_force
    assert abs(drift_ml) < 2e-3
    assert abs(drift_ml) < 10 * abs(drift_lj) + 5e-4
