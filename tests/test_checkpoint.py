"""Checkpoints: hyper-parameters + weights, loadable with weights_only=True, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_model, random_configuration
from multiscale.models import ModelConfig, load_model, save_model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_gives_identical_energies(tmp_path, dtype):
    model = make_model(dtype=dtype, seed=4)
    path = tmp_path / "model.ckpt"
    save_model(model, path)
    raw = torch.load(path, weights_only=True)  # no pickled code inside
    assert raw["config"]["dtype"] == dtype
    loaded = load_model(path)
    pos = random_configuration(9, 0.6, seed=2)
    types = ["O", "H", "H"] * 3
    a = model.compute(pos, types)
    b = loaded.compute(pos, types)
    assert float(a["energy"]) == float(b["energy"])
    assert torch.equal(a["forces"], b["forces"])
    assert loaded.config == model.config
    assert not list(tmp_path.glob("*.tmp"))


def test_config_yaml_round_trip(tmp_path):
    config = ModelConfig(types=["C", "H"], cutoff=0.45, channels=12, lmax=1, dtype="float64")
    config.to_yaml(tmp_path / "model.yaml")
    assert ModelConfig.from_yaml(tmp_path / "model.yaml") == config


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        load_model(tmp_path / "absent.ckpt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a multiscale model checkpoint"):
        load_model(tmp_path / "other.ckpt")


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = make_model(seed=1)
    path = tmp_path / "model.ckpt"
    save_model(model, path)
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(make_model(seed=2), path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    monkeypatch.undo()
    assert np.isfinite(float(load_model(path).compute(random_configuration(3, 0.4), ["O", "H", "H"])["energy"]))
