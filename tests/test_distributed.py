"""Two CPU processes under torchrun (gloo) train exactly like one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys
sys.path.insert(0, {tests!r})
import multiscale  # noqa
import torch
from multiscale.training import distributed
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import LossConfig
from multiscale.training.workflow import JobConfig, fit_potential
from test_trainer import teacher_dataset, MODEL

torch.set_num_threads(1)
distributed.init_from_environment("cpu")
train, valid = teacher_dataset(12, seed=0), teacher_dataset(4, seed=1)
job = JobConfig(model=dict(MODEL), trainer=TrainerConfig(epochs=3, batch_size=6, device="cpu", early_stopping_patience=0),
                loss=LossConfig(virial_weight=0.1))
model, result, _ = fit_potential(train, valid, sys.argv[1], job, progress=False)
if distributed.is_main_process():
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    json.dump({{"valid": [r["valid_loss"] for r in result.history], "train": [r["train_loss"] for r in result.history],
               "params": params.tolist(), "world": distributed.world_size()}}, open(sys.argv[2], "w"))
'''


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    one = subprocess.run([sys.executable, script, tmp_path / "one", tmp_path / "one.json"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", script, tmp_path / "two", tmp_path / "two.json"],
        capture_output=True, text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["world"] == 1 and b["world"] == 2
    assert b["train"] == pytest.approx(a["train"], rel=1e-4)
    assert b["valid"] == pytest.approx(a["valid"], rel=1e-4)
    assert b["params"] == pytest.approx(a["params"], rel=1e-3, abs=1e-5)
