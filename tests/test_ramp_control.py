"""The ramp controller (multiscale.openmm.ramp_control) against a response known in closed form:
particles in harmonic wells k/2 (x − x₀)² pulled by a global force A along x have ⟨x⟩ = x₀ + A/k,
so the A that holds ⟨x⟩ at a target is k (target − x₀). Heavy particles (1000 amu) under the
controller's Langevin friction of 1/ps: an overdamped, first-order response (τ = m γ/k = 10 ps),
as the thickness of a bilayer is."""

import numpy as np
import openmm
import pytest

import multiscale  # noqa: F401
from multiscale.openmm.ramp_control import ControlChannel, control_ramp, control_ramps

K, X0, N = 100.0, 1.0, 64     # kJ/mol/nm², nm, particles


def _wells(coupling=0.0, n=N):
    system = openmm.System()
    force = openmm.CustomExternalForce(f"0.5*k*((x-x0)^2+(y-1)^2+(z-1)^2) - pull*x - push*(y+{coupling}*x)")
    force.addGlobalParameter("pull", 0.0)
    force.addGlobalParameter("push", 0.0)
    force.addGlobalParameter("k", K)
    force.addGlobalParameter("x0", X0)
    for i in range(n):
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


def test_two_coupled_channels_settle_together():
    """Two forces that act on both values: ``push`` pulls y and, half as strongly, x; so
    ⟨y⟩ = 1 + push/k and ⟨x⟩ = x0 + (pull + push/2)/k. Holding ⟨x⟩ = 1.3 and ⟨y⟩ = 1.2 needs
    push = 0.2 k and pull = 0.3 k − push/2: set one after the other, the second would undo the
    first. The y channel has target 0 on y − 1.2 with an absolute error scale. 512 particles: the
    thermal noise of the means over the settled 30 ps is ~1 % of each force."""
    channels = [ControlChannel("pull", lambda x, box, p: float(x[:, 0].mean()), 1.3, 1.0 / (K * 1.3), 10.0),
                ControlChannel("push", lambda x, box, p: float(x[:, 1].mean()) - 1.2, 0.0, 1.0 / (K * 0.1), 10.0,
                               scale=0.1, limit=100.0)]
    result = control_ramps(_wells(coupling=0.5, n=512), np.full((512, 3), 1.0), np.eye(3) * 5.0, channels, temperature_K=300.0,
                           steps=20000, timestep_ps=0.01, platform="CPU", seed=5, updates=400)
    push, pull = result["channels"]["push"], result["channels"]["pull"]
    assert push["A"] == pytest.approx(0.2 * K, rel=0.05)
    assert pull["A"] == pytest.approx(0.3 * K - 0.5 * 0.2 * K, rel=0.08)
    assert pull["value"] == pytest.approx(1.3, abs=0.01) and push["value"] == pytest.approx(0.0, abs=0.01)
    with pytest.raises(ValueError, match="scale"):
        ControlChannel("push", lambda x, box, p: 0.0, 0.0, 1.0, 10.0)  # a target of 0 needs a scale
    with pytest.raises(ValueError, match="start within"):
        ControlChannel("push", lambda x, box, p: 0.0, 1.0, 1.0, 10.0, lower=0.5)  # an asymmetric range without 0
    with pytest.raises(ValueError, match="one channel per parameter"):
        control_ramps(_wells(), np.ones((N, 3)), np.eye(3) * 5.0, channels[:1] * 2, temperature_K=300.0, steps=200,
                      timestep_ps=0.01, updates=10)


def test_a_revised_system_takes_over_from_the_current_state():
    """``revise`` every 100 updates, outside the settled part (the last 60 of 400): three calls,
    each with the 100 frames since the last; each returns wells moved to x0 = 1.1, so the force that
    holds ⟨x⟩ = 1.3 becomes k (1.3 − 1.1)."""
    calls = []

    def revise(xyz, boxes):
        calls.append((xyz.shape, boxes.shape))
        system = _wells(n=256)
        force = system.getForce(0)
        names = [force.getGlobalParameterName(i) for i in range(force.getNumGlobalParameters())]
        force.setGlobalParameterDefaultValue(names.index("x0"), 1.1)
        return system

    channel = ControlChannel("pull", lambda x, box, p: float(x[:, 0].mean()), 1.3, 1.0 / (K * 1.3), 10.0, limit=100.0)
    result = control_ramps(_wells(n=256), np.full((256, 3), 1.0), np.eye(3) * 5.0, [channel], temperature_K=300.0,
                           steps=20000, timestep_ps=0.01, platform="CPU", seed=7, updates=400, revise=revise,
                           revise_every=100)
    assert calls == [((100, 256, 3), (100, 3, 3))] * 3 and result["revisions"] == 3
    assert result["channels"]["pull"]["A"] == pytest.approx(K * (1.3 - 1.1), rel=0.06)
    with pytest.raises(ValueError, match="revise_every"):
        control_ramps(_wells(), np.ones((N, 3)), np.eye(3) * 5.0, [channel], temperature_K=300.0, steps=200,
                      timestep_ps=0.01, updates=10, revise=revise)


def test_fixed_parameters_hold_and_observed_values_are_reported():
    """``push`` fixed at 0.1 k moves ⟨x⟩ by push/2/k (coupling 0.5), so holding ⟨x⟩ = 1.3 needs
    pull = 0.3 k − 0.05 k; ⟨y⟩ = 1 + push/k = 1.1 is only observed. The settled part is the
    last 40 %."""
    channel = ControlChannel("pull", lambda x, box, p: float(x[:, 0].mean()), 1.3, 1.0 / (K * 1.3), 10.0, limit=100.0)
    result = control_ramps(_wells(coupling=0.5, n=256), np.full((256, 3), 1.0), np.eye(3) * 5.0, [channel],
                           temperature_K=300.0, steps=20000, timestep_ps=0.01, platform="CPU", seed=9, updates=400,
                           settled=0.4, fixed={"push": 0.1 * K},
                           observe={"y": lambda x, box, p: float(x[:, 1].mean()), "push": lambda x, box, p: p["push"]})
    assert result["channels"]["pull"]["A"] == pytest.approx(0.25 * K, rel=0.06)
    assert set(result["observed"]) == {"y", "push"} and "push" not in result["channels"]
    assert len(result["observed"]["y"]["trace"]) == 400
    assert result["observed"]["y"]["value"] == pytest.approx(1.1, abs=0.01)
    assert result["observed"]["y"]["value"] == pytest.approx(np.mean([t["value"] for t in result["observed"]["y"]["trace"][240:]]))
    assert all(t["value"] == 0.1 * K for t in result["observed"]["push"]["trace"])  # held, as the measure saw it
    with pytest.raises(ValueError, match="both controlled and fixed"):
        control_ramps(_wells(), np.ones((N, 3)), np.eye(3) * 5.0, [channel], temperature_K=300.0, steps=200,
                      timestep_ps=0.01, updates=10, fixed={"pull": 1.0})


def test_two_one_sided_channels_on_one_value_take_turns():
    """Two forces that each act one way on ⟨x⟩, each bounded to [0, limit] (as the bilayer's
    head–tail repulsion shrinks its area and a repulsive all-pair ramp expands it,
    membrane_matching's area_knobs="split"): both fed the same error, the one that can reach the
    target holds it (A = k |target − x0|) and the other rests near its bound 0. 512 particles, as
    in the coupled test."""
    system = openmm.System()
    force = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-1)^2+(z-1)^2) - up*x + down*x")
    for name, value in (("up", 0.0), ("down", 0.0), ("k", K), ("x0", X0)):
        force.addGlobalParameter(name, value)
    for i in range(512):
        system.addParticle(1000.0)
        force.addParticle(i, [])
    system.addForce(force)

    def mean_x(x, box, p):
        return float(x[:, 0].mean())

    for target, moving, resting in ((1.3, "up", "down"), (0.8, "down", "up")):
        channels = [ControlChannel("up", mean_x, target, 1.0 / (K * target), 10.0, lower=0.0, limit=100.0),
                    ControlChannel("down", mean_x, target, -1.0 / (K * target), 10.0, lower=0.0, limit=100.0)]
        result = control_ramps(system, np.full((512, 3), 1.0), np.eye(3) * 5.0, channels, temperature_K=300.0, steps=20000,
                               timestep_ps=0.01, platform="CPU", seed=9, updates=400)
        up, down = result["channels"]["up"]["A"], result["channels"]["down"]["A"]
        assert up - down == pytest.approx(K * (target - X0), rel=0.05)
        # the resting one answers only the noise on its side (proportionally: its integral is held
        # while it sits at the bound)
        assert 0.0 <= result["channels"][resting]["A"] < 0.1 * result["channels"][moving]["A"]
        assert result["channels"][moving]["value"] == pytest.approx(target, abs=0.01)
