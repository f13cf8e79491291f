"""multiscale.openmm.recording: recorded forces equal OpenMM's own, chunking and partial flushes,
appending, and crash safety (a real SIGKILL, an abandoned recorder, stray temporary files)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

import multiscale  # noqa: F401  (torch before openmmtorch)
from multiscale.openmm.recording import ForceRecorder, load_recording

FORCE = unit.kilojoule_per_mole / unit.nanometer
EDGE = 1.2  # nm
N = 27  # particles, on a 3x3x3 lattice of spacing 0.4 nm
DT = 0.002  # ps


def lj_system():
    """27 argon-like LJ particles in a periodic cube (cutoff 0.55 nm)."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.eye(3) * EDGE))
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.55)
    for _ in range(N):
        system.addParticle(39.948)
        nb.addParticle(0.0, 0.34, 0.996)
    system.addForce(nb)
    return system


def simulation(seed=0):
    system = lj_system()
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(N):
        topology.addAtom("Ar", app.element.argon, topology.addResidue("AR", chain))
    integrator = openmm.LangevinMiddleIntegrator(120 * unit.kelvin, 5.0 / unit.picosecond, DT * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    grid = (np.indices((3, 3, 3)).reshape(3, -1).T + 0.5) * (EDGE / 3)
    sim.context.setPositions(grid + np.random.default_rng(seed).normal(scale=0.02, size=(N, 3)))
    sim.context.setVelocitiesToTemperature(120 * unit.kelvin, seed + 1)
    return sim


def chunk_lengths(directory):
    return [len(np.load(directory / f"chunk_{k:05d}.npz")["steps"]) for k in range(len(list(directory.glob("chunk_*.npz"))))]


def test_recorded_forces_equal_a_fresh_context_at_the_recorded_positions(tmp_path):
    sim = simulation()
    recorder = ForceRecorder(tmp_path / "rec", 3, chunk_size=4, dtype="float64")
    sim.reporters.append(recorder)
    sim.step(30)
    recorder.close()
    data = load_recording(tmp_path / "rec")
    assert data["steps"].tolist() == list(range(3, 31, 3))
    np.testing.assert_allclose(data["time_ps"], data["steps"] * DT, rtol=1e-12)
    assert data["positions"].shape == data["forces"].shape == (10, N, 3)
    assert data["positions"].dtype == np.float64 and data["particles"] is None
    np.testing.assert_allclose(data["boxes"], np.broadcast_to(np.eye(3) * EDGE, (10, 3, 3)))
    assert chunk_lengths(tmp_path / "rec") == [4, 4, 2]

    fresh = openmm.Context(lj_system(), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for positions, forces, box in zip(data["positions"], data["forces"], data["boxes"]):
        fresh.setPeriodicBoxVectors(*box)
        fresh.setPositions(positions)
        expected = fresh.getState(getForces=True).getForces(asNumpy=True).value_in_unit(FORCE)
        np.testing.assert_allclose(forces, expected, rtol=1e-10, atol=1e-10)
    assert np.abs(data["forces"]).max() > 1.0  # not trivially zero
    assert np.abs(data["positions"][-1] - data["positions"][0]).max() > 0.01  # the particles moved


def test_chunk_boundaries_partial_flush_and_subset(tmp_path):
    sim = simulation(seed=1)
    directory = tmp_path / "rec"
    recorder = ForceRecorder(directory, 2, chunk_size=5, particles=[6, 1, 3])
    sim.reporters.append(recorder)
    sim.step(8)  # 4 frames, all buffered
    assert not list(directory.glob("chunk_*.npz")) and recorder.count == 4 and recorder.count_on_disk == 0
    recorder.flush()  # a partial chunk 0
    assert chunk_lengths(directory) == [4] and recorder.count_on_disk == 4
    assert json.loads((directory / "manifest.json").read_text())["count"] == 4
    sim.step(2)  # the 5th frame fills chunk 0, which is rewritten complete
    assert chunk_lengths(directory) == [5]
    sim.step(12)  # 6 more frames: chunk 1 full, 1 frame buffered
    assert chunk_lengths(directory) == [5, 5] and recorder.count == 11 and recorder.count_on_disk == 10
    recorder.close()
    assert chunk_lengths(directory) == [5, 5, 1]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["count"] == 11 and manifest["particles"] == [6, 1, 3] and manifest["dtype"] == "float32"
    data = load_recording(directory)
    assert data["steps"].tolist() == list(range(2, 23, 2))
    assert data["positions"].shape == (11, 3, 3) and data["positions"].dtype == np.float32
    assert data["particles"].tolist() == [6, 1, 3]
    # the subset is the right particles: compare the last frame with the live state
    state = sim.context.getState(getPositions=True, getForces=True)
    np.testing.assert_allclose(data["positions"][-1], state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[[6, 1, 3]], rtol=1e-6)
    np.testing.assert_allclose(data["forces"][-1], state.getForces(asNumpy=True).value_in_unit(FORCE)[[6, 1, 3]], rtol=1e-5, atol=1e-4)
    with pytest.raises(RuntimeError, match="closed"):
        sim.step(2)


def test_append_continues_numbering_and_checks_the_manifest(tmp_path):
    directory = tmp_path / "rec"
    sim = simulation(seed=2)
    first = ForceRecorder(directory, 5, chunk_size=3)
    sim.reporters.append(first)
    sim.step(20)  # 4 frames: chunk 0 full, chunk 1 partial on close
    first.close()
    sim.reporters.clear()

    with pytest.raises(FileExistsError, match="append=True"):
        ForceRecorder(directory, 5)
    with pytest.raises(ValueError, match="particles"):
        ForceRecorder(directory, 5, append=True, particles=[0, 1])
    with pytest.raises(ValueError, match="dtype"):
        ForceRecorder(directory, 5, append=True, dtype="float64")

    second = ForceRecorder(directory, 5, chunk_size=3, append=True)
    assert second.count == 4
    sim.reporters.append(second)
    sim.step(20)
    second.close()
    assert sorted(p.name for p in directory.glob("chunk_*.npz")) == [f"chunk_{k:05d}.npz" for k in range(4)]
    assert chunk_lengths(directory) == [3, 1, 3, 1]
    data = load_recording(directory)
    assert data["steps"].tolist() == list(range(5, 41, 5))
    assert json.loads((directory / "manifest.json").read_text())["count"] == 8

    # a System with a different particle count is refused at the first report
    small = openmm.System()
    for _ in range(5):
        small.addParticle(39.948)
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(5):
        topology.addAtom("Ar", app.element.argon, topology.addResidue("AR", chain))
    other = app.Simulation(topology, small, openmm.VerletIntegrator(DT), openmm.Platform.getPlatformByName("Reference"))
    other.context.setPositions(np.random.default_rng(0).uniform(0, EDGE, (5, 3)))
    other.reporters.append(ForceRecorder(directory, 5, append=True))
    with pytest.raises(ValueError, match="particle-count mismatch"):
        other.step(5)


def test_abandoned_recorder_keeps_complete_chunks_and_ignores_stray_temp_files(tmp_path):
    directory = tmp_path / "rec"
    sim = simulation(seed=3)
    recorder = ForceRecorder(directory, 1, chunk_size=4, dtype="float64")
    sim.reporters.append(recorder)
    sim.step(10)  # 10 frames: chunks 0 and 1 on disk, 2 frames buffered
    assert recorder.count == 10 and recorder.count_on_disk == 8
    sim.reporters.clear()
    del recorder, sim
    gc.collect()
    # leftovers of an interrupted write next to the complete chunks
    (directory / ".chunk_00002.npz.abc123.tmp").write_bytes(b"half a chunk")
    (directory / "chunk_00002.npz.tmp").write_bytes(b"\x00" * 10)
    data = load_recording(directory)
    assert data["steps"].tolist() == list(range(1, 9))
    assert data["positions"].shape == (8, N, 3) and np.all(np.isfinite(data["forces"]))
    # resuming after the crash continues after the last complete chunk
    resumed = ForceRecorder(directory, 1, chunk_size=4, append=True, dtype="float64")
    assert resumed.count == 8
    resumed.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import openmm
    from openmm import app, unit
    sys.path.insert(0, {tests!r})
    from test_recording import simulation
    from multiscale.openmm.recording import ForceRecorder
    sim = simulation(seed=4)
    recorder = ForceRecorder({directory!r}, 1, chunk_size=5)
    sim.reporters.append(recorder)
    sim.step(13)  # chunks 0, 1 written; 3 frames buffered
    recorder.flush()  # partial chunk 2 with 3 frames
    sim.step(1)  # a 4th frame of chunk 2, only in memory
    print(recorder.count_on_disk, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_kill_minus_9_loses_only_the_unwritten_buffer(tmp_path):
    directory = tmp_path / "rec"
    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), directory=str(directory))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stdout.strip() == "13"
    data = load_recording(directory)
    assert data["steps"].tolist() == list(range(1, 14))
    assert chunk_lengths(directory) == [5, 5, 3]
    assert json.loads((directory / "manifest.json").read_text())["count"] == 13
