"""multiscale.openmm.affinity.single_core: one CPU-platform thread on the calling thread's core,
and everything as it was afterwards. The speed it buys is the host's (README); these tests check
what the module controls: the thread count, where the threads run, that the forces are the same,
and that nothing leaks out of the block."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import openmm
import pytest

from multiscale.openmm.affinity import THREADS_PROPERTY, single_core

LINUX = sys.platform.startswith("linux")


def small_system(n=64, box=2.5, seed=3):
    rng = np.random.default_rng(seed)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    force = openmm.CustomNonbondedForce("4*eps*((sig/r)^12-(sig/r)^6); eps=1.0; sig=0.3")
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(1.0)
    bonds = openmm.HarmonicBondForce()
    for i in range(n):
        system.addParticle(40.0)
        force.addParticle([])
    for i in range(0, n - 1, 2):
        bonds.addBond(i, i + 1, 0.35, 1000.0)
    system.addForce(force)
    system.addForce(bonds)
    # a cubic lattice, jittered, so that no pair starts on the r^-12 wall
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.array([(i, j, k) for i in range(side) for j in range(side) for k in range(side)][:n], float)
    positions = grid * (box / side) + rng.normal(0, 0.02, (n, 3))
    return system, positions


def cpu_context(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    return context


def test_contexts_made_in_the_block_use_one_thread_and_the_default_comes_back():
    platform = openmm.Platform.getPlatformByName("CPU")
    before = platform.getPropertyDefaultValue(THREADS_PROPERTY)
    system, positions = small_system()
    with single_core():
        context = cpu_context(system, positions)
        assert platform.getPropertyValue(context, THREADS_PROPERTY) == "1"
    assert platform.getPropertyDefaultValue(THREADS_PROPERTY) == before
    outside = cpu_context(system, positions)
    assert platform.getPropertyValue(outside, THREADS_PROPERTY) == before


def test_forces_and_energy_do_not_depend_on_it():
    system, positions = small_system()
    reference = cpu_context(system, positions).getState(getForces=True, getEnergy=True)
    with single_core():
        pinned = cpu_context(system, positions).getState(getForces=True, getEnergy=True)
    f_ref = reference.getForces(asNumpy=True)._value
    f_pin = pinned.getForces(asNumpy=True)._value
    # the CPU platform sums in single precision; thread count changes only the order of the sums
    np.testing.assert_allclose(f_pin, f_ref, rtol=1e-4, atol=1e-3 * np.abs(f_ref).max())
    assert pinned.getPotentialEnergy()._value == pytest.approx(reference.getPotentialEnergy()._value, rel=1e-5)


@pytest.mark.skipif(not LINUX, reason="thread affinity is set through os.sched_setaffinity (Linux)")
def test_the_calling_thread_and_the_threads_it_starts_share_one_core_and_the_mask_comes_back():
    before = os.sched_getaffinity(0)
    seen = {}

    def worker():
        seen["worker"] = os.sched_getaffinity(0)

    with single_core() as core:
        assert core == min(before)
        assert os.sched_getaffinity(0) == {core}
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        # OpenMM's CPU worker threads, started by the Context, are pinned alike (read from /proc)
        tasks_before = set(os.listdir("/proc/self/task"))
        system, positions = small_system()
        context = cpu_context(system, positions)
        new = set(os.listdir("/proc/self/task")) - tasks_before
        allowed = [os.sched_getaffinity(int(tid)) for tid in new if os.path.exists(f"/proc/self/task/{tid}")]
    assert seen["worker"] == {core}
    assert new, "the CPU platform started no thread for the Context"
    assert allowed and all(mask == {core} for mask in allowed)
    assert os.sched_getaffinity(0) == before
    del context


def test_switched_off_it_changes_nothing_and_an_error_in_the_block_still_restores():
    """On every OS for the thread count; the affinity mask where there is one (Linux)."""
    platform = openmm.Platform.getPlatformByName("CPU")
    mask = os.sched_getaffinity(0) if LINUX else None
    threads = platform.getPropertyDefaultValue(THREADS_PROPERTY)

    def unchanged():
        return (not LINUX or os.sched_getaffinity(0) == mask) and platform.getPropertyDefaultValue(THREADS_PROPERTY) == threads

    with single_core(False) as core:
        assert core is None and unchanged()
    with pytest.raises(RuntimeError, match="inside"):
        with single_core():
            assert platform.getPropertyDefaultValue(THREADS_PROPERTY) == "1"
            raise RuntimeError("inside")
    assert unchanged()


@pytest.mark.skipif(not LINUX, reason="thread affinity is set through os.sched_setaffinity (Linux)")
def test_a_core_outside_the_process_mask_is_refused_by_name():
    mask = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match=r"core 4096 is not one this process may run on"):
        with single_core(core=4096):
            pass
    assert os.sched_getaffinity(0) == mask
