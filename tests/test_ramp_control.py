"""The ramp controller (multiscale.openmm.ramp_control) against a response known in closed form:
particles in harmonic wells k/2 (x − x₀)² pulled by a global force A along x have ⟨x⟩ = x₀ + A/k,
so the A that holds ⟨x⟩ at a target is k (target − x₀). Heavy particles (1000 amu) under the
controller's Langevin friction of 1/ps: an overdamped, first-order response (τ = m γ/k = 10 ps),
as the thickness of a bilayer is."""

import numpy as np
import openmm
import pytest

import multiscale  # noqa: F401
from multiscale.openmm.ramp_control import control_ramp

K, X0, N = 100.0, 1.0, 64     # kJ/mol/nm², nm, particles


def _wells():
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-1)^2+(z-1)^2) - pull*x")
    force.addGlobalParameter("pull", 0.0)
    force.addGlobalParameter("k", K)
    force.addGlobalParameter("x0", X0)
    for i in range(N):
        system.addParticle(1000.0)
        force.addParticle(i, [])
    system.addForce(force)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(5, 0, 0), openmm.Vec3(0, 5, 0), openmm.Vec3(0, 0, 5))
    return system


def test_controller_finds_the_force_that_holds_the_mean_position():
    target = 1.3
    result = control_ramp(_wells(), np.full((N, 3), 1.0), np.eye(3) * 5.0, lambda x, box: float(x[:, 0].mean()),
                          parameter="pull", target=target, sensitivity=1.0 / (K * target), relaxation_ps=10.0,
                          temperature_K=300.0, steps=20000, timestep_ps=0.01, platform="CPU", seed=3, updates=400,
                          limit=100.0)
    assert result["A"] == pytest.approx(K * (target - X0), rel=0.05)
    assert result["value"] == pytest.approx(target, abs=0.01)
    assert len(result["trace"]) == 400 and result["trace"][0]["A"] == 0.0
    assert np.asarray(result["positions"]).shape == (N, 3)


def test_controller_refuses_what_it_cannot_control():
    with pytest.raises(ValueError, match="no global parameter 'missing'"):
        control_ramp(_wells(), np.ones((N, 3)), np.eye(3) * 5.0, lambda x, box: 1.0, parameter="missing", target=1.0,
                     sensitivity=0.01, relaxation_ps=2.0, temperature_K=300.0, steps=200, timestep_ps=0.004, updates=10)
    with pytest.raises(ValueError, match="sensitivity"):
        control_ramp(_wells(), np.ones((N, 3)), np.eye(3) * 5.0, lambda x, box: 1.0, parameter="pull", target=1.0,
                     sensitivity=0.0, relaxation_ps=2.0, temperature_K=300.0, steps=200, timestep_ps=0.004, updates=10)
