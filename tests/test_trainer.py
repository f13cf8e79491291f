"""Trainer: learning actually happens, determinism, exact resume, time budget, force-only mode.

The reference is a *teacher* potential of the same family with different random weights: the
student must approach it. Its labels are computed by the teacher's autograd forces, which the
gradient tests check against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_model, random_configuration
from multiscale.data import Configuration
from multiscale.models import load_model
from multiscale.training import build_graphs, evaluate
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import LossConfig
from multiscale.training.workflow import JobConfig, fit_potential

MODEL = {"cutoff": 0.4, "channels": 8, "num_layers": 2, "lmax": 1, "radial_hidden": 16, "num_basis": 6}


def teacher_dataset(n, seed=0):
    teacher = make_model(cutoff=0.4, seed=100, lmax=1)
    rng = np.random.default_rng(seed)
    configs = []
    for k in range(n):
        pos = random_configuration(9, 0.55, seed=1000 * seed + k, min_distance=0.1)
        types = ["O", "H", "H"] * 3
        box = np.diag(rng.uniform(0.8, 0.9, 3)) if k % 2 else None
        out = teacher.compute(pos, types, box, stress=box is not None)
        configs.append(
            Configuration(types, pos, box=box, energy=float(out["energy"]), forces=out["forces"].numpy(),
                          virial=None if box is None else out["virial"].numpy())
        )
    return configs


@pytest.fixture(scope="module")
def data():
    return teacher_dataset(24, seed=0), teacher_dataset(8, seed=1)


def job(**trainer):
    options = dict(epochs=6, batch_size=4, learning_rate=5e-3, device="cpu", early_stopping_patience=0)
    options.update(trainer)
    return JobConfig(model=dict(MODEL), trainer=TrainerConfig(**options), loss=LossConfig(virial_weight=0.1))


def test_training_reduces_force_error(tmp_path, data):
    train, valid = data
    model, result, trainer = fit_potential(train, valid, tmp_path, job(epochs=25), progress=False)
    graphs = build_graphs(valid, model.type_names, model.cutoff)
    first = result.history[0]["valid_forces"]
    last = min(row["valid_forces"] for row in result.history)
    assert last < 0.5 * first
    metrics = evaluate(model, graphs)["metrics"]
    assert metrics["force_rmse_kj_mol_nm"] < 0.8 * metrics["force_rms_reference_kj_mol_nm"]
    # float64 evaluation of the same weights agrees with float32 to float32 precision
    m64 = evaluate(model, graphs, dtype="float64")["metrics"]
    assert m64["force_mae_kj_mol_nm"] == pytest.approx(metrics["force_mae_kj_mol_nm"], rel=1e-3)
    for name in ("model.ckpt", "checkpoint.pt", "log.csv", "training.log"):
        assert (tmp_path / name).is_file()


def test_same_seed_same_result_and_exact_resume(tmp_path, data):
    train, valid = data
    _, full, _ = fit_potential(train, valid, tmp_path / "a", job(epochs=4), progress=False)
    _, again, _ = fit_potential(train, valid, tmp_path / "b", job(epochs=4), progress=False)
    assert [r["valid_loss"] for r in full.history] == [r["valid_loss"] for r in again.history]
    # interrupted after 2 epochs, then resumed to 4: identical to the uninterrupted run
    fit_potential(train, valid, tmp_path / "c", job(epochs=2), progress=False)
    _, resumed, _ = fit_potential(train, valid, tmp_path / "c", job(epochs=4), resume=True, progress=False)
    assert resumed.resumed_from_epoch == 1
    assert [r["valid_loss"] for r in resumed.history] == pytest.approx([r["valid_loss"] for r in full.history], rel=1e-6)
    a = load_model(tmp_path / "a" / "model.ckpt").state_dict()
    c = load_model(tmp_path / "c" / "model.ckpt").state_dict()
    for key in a:
        torch.testing.assert_close(a[key], c[key], rtol=1e-5, atol=1e-7)
    assert "resumed from checkpoint at epoch 1" in (tmp_path / "c" / "training.log").read_text()


def test_max_time_is_respected(tmp_path, data):
    train, valid = data
    _, result, _ = fit_potential(train, valid, tmp_path, job(epochs=10_000, max_time=6.0), progress=False)
    assert result.stop_reason == "max_time"
    # The trainer's own clock, not the host's speed: the loop stops inside the budget, overrunning
    # it by at most the one epoch (training + validation) that was under way when it ran out.
    seconds = [row["seconds"] for row in result.history]
    assert sum(seconds) <= 6.0 + max(seconds)
    assert (tmp_path / "model.ckpt").is_file()


def test_force_only_ignores_energies(tmp_path, data):
    train, valid = data
    shifted = [c.with_labels(energy=c.energy + 1e4 * k) for k, c in enumerate(train)]  # garbage energies
    j = job(epochs=3)
    j.loss = LossConfig(force_only=True)
    _, a, _ = fit_potential(shifted, valid, tmp_path / "a", j, progress=False)
    _, b, _ = fit_potential(train, valid, tmp_path / "b", j, progress=False)
    assert "valid_energy" not in a.history[0]
    assert [r["valid_forces"] for r in a.history] == pytest.approx([r["valid_forces"] for r in b.history], rel=1e-6)
