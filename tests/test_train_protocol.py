"""protocols/train_potential.py end to end on OpenMM-labelled water-cluster data, including a
kill -9 in the middle of training and --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multiscale.data import read_extxyz, sample_simulation, write_extxyz  # noqa: E402
from multiscale.models import load_model  # noqa: E402
from multiscale.openmm import torch_force  # noqa: E402
from systems.water import flexible_water_system, water_cluster  # noqa: E402

PROTOCOL = [sys.executable, str(ROOT / "protocols" / "train_potential.py")]
SMALL = ROOT / "tests" / "data" / "small_model.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """60 configurations of a 4-water cluster from 300 K MD, labelled by flexible TIP3P."""
    top, pos = water_cluster(4)
    system = flexible_water_system(top)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.0005 * unit.picosecond)
    integrator.setRandomNumberSeed(3)
    sim = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    sim.minimizeEnergy(maxIterations=100)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 4)
    sim.step(200)
    configs = sample_simulation(sim, 60, 25, progress=False)
    path = tmp_path_factory.mktemp("data") / "water4.xyz"
    write_extxyz(path, configs)
    return path, configs


def run(args, **kwargs):
    return subprocess.run(PROTOCOL + [str(a) for a in args], capture_output=True, text=True, cwd=ROOT, **kwargs)


def test_extxyz_file_is_in_ase_units(dataset):
    path, configs = dataset
    from ase.io import read

    atoms = read(path, index=0)
    # positions in Å (0.1 nm = 1 Å), energy in eV (1 eV = 96.48533212 kJ/mol)
    np.testing.assert_allclose(atoms.positions, configs[0].positions * 10.0, rtol=1e-12)
    assert atoms.get_potential_energy() == pytest.approx(configs[0].energy / 96.48533212, rel=1e-12)
    assert len(read_extxyz(path)) == 60


def test_train_evaluate_and_use_in_openmm(tmp_path, dataset):
    path, configs = dataset
    out = tmp_path / "run"
    result = run(["--train", path, "--out", out, "--config", SMALL, "--epochs", 30, "--max-time", 120, "--no-progress"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["metrics"]["test"]
    # learned something real: force error well below the spread of the reference forces
    assert test["force_rmse_kj_mol_nm"] < 0.5 * test["force_rms_reference_kj_mol_nm"]
    assert test["force_mae_mev_per_angstrom"] == pytest.approx(test["force_mae_kj_mol_nm"] * 1000 / 96.48533212 / 10, rel=1e-9)
    for name in ("model.ckpt", "log.csv", "parity.png", "checkpoint.pt"):
        assert (out / name).is_file(), name
    # the trained model runs inside OpenMM and reproduces its own prediction
    model = load_model(out / "model.ckpt")
    system = openmm.System()
    for _ in configs[0].types:
        system.addParticle(1.0)
    system.addForce(torch_force(model, configs[0].types, periodic=False))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(configs[0].positions)
    energy = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(model.compute(configs[0].positions, configs[0].types)["energy"]), rel=1e-5)


def test_kill_dash_nine_then_resume(tmp_path, dataset):
    path, _ = dataset
    out = tmp_path / "run"
    args = ["--train", path, "--out", out, "--config", SMALL, "--epochs", 400, "--no-progress"]
    proc = subprocess.Popen(PROTOCOL + [str(a) for a in args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = out / "log.csv"
        if log.exists() and len(log.read_text().splitlines()) >= 4:  # header + 3 epochs
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rows_before = (out / "log.csv").read_text().splitlines()
    assert len(rows_before) >= 4
    # everything on disk is intact after kill -9: the checkpoint and the model load
    load_model(out / "model.ckpt")
    last_epoch = int(rows_before[-1].split(",")[0])
    result = run(["--train", path, "--out", out, "--config", SMALL, "--epochs", last_epoch + 3, "--resume", "--no-progress"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows_after = (out / "log.csv").read_text().splitlines()
    epochs = [int(r.split(",")[0]) for r in rows_after[1:]]
    assert epochs == list(range(last_epoch + 3))  # continued, not restarted
    assert rows_after[1 : len(rows_before)] == rows_before[1:]  # history kept verbatim
    assert "resumed from checkpoint at epoch" in (out / "training.log").read_text()
    assert json.loads((out / "metrics.json").read_text())["resumed_from_epoch"] == [last_epoch]


def test_hybrid_family_from_the_config_file(tmp_path, dataset):
    """family: hybrid with a coulomb: section trains from the command line; the TIP3P-labelled
    clusters carry no charges, so only energies and forces are fitted."""
    path, configs = dataset
    config = tmp_path / "hybrid.yaml"
    config.write_text(SMALL.read_text().replace("model:\n", "family: hybrid\nmodel:\n  coulomb: {cutoff: 1.0, method: direct}\n", 1))
    out = tmp_path / "run"
    result = run(["--train", path, "--out", out, "--config", config, "--epochs", 3, "--no-progress"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["job"]["family"] == "hybrid" and metrics["model"]["coulomb"]["method"] == "direct"
    model = load_model(out / "model.ckpt")
    assert type(model).__name__ == "HybridPotential"
    assert abs(float(model.compute(configs[0].positions, configs[0].types)["charges"].sum())) < 1e-9
    # a hybrid config without its coulomb: section is one error line, before any training
    config.write_text(SMALL.read_text().replace("model:\n", "family: hybrid\nmodel:\n", 1))
    refused = run(["--train", path, "--out", tmp_path / "bad", "--config", config, "--no-progress"])
    assert refused.returncode == 2 and "coulomb" in refused.stderr.strip().splitlines()[-1]
