"""multiscale.openmm.speed: Contexts timed in alternating blocks, the median block counting, and
the faster of two configurations as the speed-up's baseline."""

from __future__ import annotations

import numpy as np
import openmm
import pytest

from multiscale.openmm.affinity import single_core
from multiscale.openmm.speed import faster_of, time_alternating


def _context(one_core: bool, dt: float):
    system = openmm.System()
    force = openmm.HarmonicBondForce()
    for i in range(8):
        system.addParticle(12.0)
        if i:
            force.addBond(i - 1, i, 0.15, 1000.0)
    system.addForce(force)
    with single_core(one_core):
        integrator = openmm.LangevinMiddleIntegrator(300, 1, dt)
        context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
        context.setPositions([openmm.Vec3(0.15 * i, 0, 0) for i in range(8)])
    return context, integrator


def test_alternating_blocks_report_the_median_and_how_each_ran():
    runs = {"default": (*_context(False, 0.001), 0.001, False), "pinned": (*_context(True, 0.002), 0.002, True)}
    timing = time_alternating(runs, steps=20, blocks=3)
    assert set(timing) == {"default", "pinned"}
    for name, row in timing.items():
        assert len(row["blocks"]) == 3 and min(row["blocks"]) > 0
        assert row["ps_per_wall_second"] == pytest.approx(float(np.median(row["blocks"])))
    assert timing["default"]["threads"] == "the platform's default"
    assert timing["pinned"]["threads"] == "one, pinned to one core"
    # each Context really stepped 3 blocks of 20 steps
    for context, _, dt, _ in runs.values():
        assert context.getState().getTime()._value == pytest.approx(60 * dt)
    with pytest.raises(ValueError, match="steps and blocks"):
        time_alternating(runs, steps=0)


def test_the_faster_configuration_is_the_baseline_with_both_kept():
    slow = {"ps_per_wall_second": 1.0, "blocks": [1.0], "threads": "the platform's default"}
    fast = {"ps_per_wall_second": 2.0, "blocks": [2.0], "threads": "one, pinned to one core"}
    best = faster_of(slow, fast)
    assert best["ps_per_wall_second"] == 2.0 and best["threads"] == fast["threads"]
    assert best["configurations"] == {"default": slow, "single_core": fast}
    assert faster_of(fast, slow)["threads"] == fast["threads"]
