"""Bonded sub-steps raised by one when a run boils (multiscale.openmm.sub_steps), on the stiff capped
diatomics of test_overheating plus a weak trap for the outer step: at 50 fs the bond (ω = 58 /ps,
ω Δt = 2.9) is beyond the Langevin integrator's stability limit of 2 and boils; on two 25 fs
sub-steps it holds its temperature; the count is kept in a file for a resumed job."""

from __future__ import annotations

import json

import numpy as np
import openmm
import pytest

from multiscale.openmm.cg_simulation import CGInstabilityError
from multiscale.openmm.overheating import OverheatingError, check_temperature
from multiscale.openmm.short_runs import langevin_context
from multiscale.openmm.sub_steps import BondedSubSteps
from test_overheating import BOILING_STEP_PS, TARGET_K, diatomics


def with_slow_force():
    system, x, _ = diatomics(60)
    trap = openmm.CustomExternalForce("1e-3 * (x^2 + y^2 + z^2)")  # the outer step's force
    for k in range(system.getNumParticles()):
        trap.addParticle(k, [])
    system.addForce(trap)
    return system, x, np.eye(3) * 12.0


def test_a_run_that_boils_is_redone_on_more_sub_steps_until_it_holds(tmp_path):
    system, x, box = with_slow_force()
    lines = []
    sub = BondedSubSteps(tmp_path / "cg_step.json", 1, BOILING_STEP_PS, log=lines.append)

    def attempt():
        context, integrator = langevin_context(system, x, box, temperature_K=TARGET_K, timestep_ps=BOILING_STEP_PS,
                                               inner_steps=sub.inner_steps, platform="Reference", seed=1)
        temperatures = []
        for _ in range(60):  # 3 ps
            integrator.step(1)
            temperatures.append(check_temperature(context, TARGET_K, what="the diatomics", timestep_ps=BOILING_STEP_PS))
        return float(np.mean(temperatures[30:]))

    mean = sub.run("the diatomics' run", attempt)
    assert sub.inner_steps >= 2 and abs(mean / TARGET_K - 1) < 0.1   # held, on sub-steps
    record = json.loads((tmp_path / "cg_step.json").read_text())
    assert record["inner_steps"] == sub.inner_steps
    assert record["escalations"][0]["from"] == 1 and "boiling" in record["escalations"][0]["why"]
    assert "redoing it with 2 sub-steps of 25 fs" in lines[0]
    # a resumed job starts from the stored count
    assert BondedSubSteps(tmp_path / "cg_step.json", 1, BOILING_STEP_PS).inner_steps == sub.inner_steps


def test_without_adaptation_or_at_the_maximum_a_boiling_run_raises(tmp_path):
    def boils():
        raise CGInstabilityError("cg MD became unstable (the diatomics is boiling)")

    with pytest.raises(CGInstabilityError):
        BondedSubSteps(tmp_path / "a.json", 1, 0.03, adaptive=False).run("run", boils)
    assert not (tmp_path / "a.json").exists()
    retried = []
    sub = BondedSubSteps(tmp_path / "b.json", 1, 0.03, maximum=3)
    with pytest.raises(CGInstabilityError):
        sub.run("run", boils, before_retry=lambda: retried.append(sub.inner_steps))
    assert sub.inner_steps == 3 and retried == [2, 3]
    # other errors are not a reason to add sub-steps
    with pytest.raises(KeyError):
        BondedSubSteps(tmp_path / "c.json", 1, 0.03).run("run", lambda: {}["x"])
    with pytest.raises(ValueError, match="start"):
        BondedSubSteps(tmp_path / "d.json", 0, 0.03)
    (tmp_path / "e.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="delete it"):
        BondedSubSteps(tmp_path / "e.json", 1, 0.03)
    assert OverheatingError.__mro__[1] is RuntimeError


def test_a_checkpoint_made_with_other_sub_steps_is_not_resumed_silently(tmp_path):
    from multiscale.openmm.cg_simulation import CGSimulation

    system, x, box = with_slow_force()
    _, _, topology = diatomics(60)
    plain = CGSimulation(topology, system, x, tmp_path, temperature_K=TARGET_K, timestep_ps=0.002, report_interval=5,
                         checkpoint_interval=10, platform="Reference")
    plain.run(20, progress=False)
    assert json.loads((tmp_path / "cg_state.json").read_text())["inner_steps"] == 1
    mts = CGSimulation(topology, system, x, tmp_path, temperature_K=TARGET_K, timestep_ps=0.002, report_interval=5,
                       checkpoint_interval=10, platform="Reference", inner_steps=2)
    with pytest.raises(ValueError, match="made with 1 bonded sub-steps per step and this run has 2.*start it over"):
        mts.run(40, progress=False)
