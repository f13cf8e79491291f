"""Bad input to the runnable jobs ends with one 'PROG: error: ...' line and exit status 2, before
any long work starts, and never with a Python traceback (issue 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conftest import random_configuration, run_script_here as run_here  # noqa: E402
from multiscale.data import write_extxyz  # noqa: E402
from multiscale.data.configuration import Configuration  # noqa: E402

TRAIN = ROOT / "protocols" / "train_potential.py"
POLYMER = ROOT / "protocols" / "polymer_cg.py"
SMALL = ROOT / "tests" / "data" / "small_model.yaml"


def run(script, *args, timeout=300):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def assert_error_line(result, *fragments):
    """Exit 2, no traceback, and the last line is the error, naming each fragment."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert ": error: " in last, last
    for fragment in fragments:
        assert fragment in last, (fragment, last)


def dataset(path: Path, types, n=12, seed=0):
    rng = np.random.default_rng(seed)
    configs = [Configuration(list(types), random_configuration(len(types), 0.45, seed=seed + k), energy=float(rng.normal()),
                             forces=rng.normal(size=(len(types), 3))) for k in range(n)]
    write_extxyz(path, configs)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    return folder, dataset(folder / "water.xyz", ["O", "H", "H"]), dataset(folder / "hf.xyz", ["F", "H"], seed=50)


# ------------------------------------------------------------------------------------ train_potential
def test_yaml_syntax_error_names_file_and_line(data, tmp_path):
    _, water, _ = data
    config = tmp_path / "job.yaml"
    config.write_text("model:\n  cutoff: 0.5\n trainer:\n  epochs: 3\n")
    assert_error_line(run(TRAIN, "--train", water, "--out", tmp_path / "o", "--config", config), str(config), "line 3")


def test_empty_yaml_section(data, tmp_path):
    _, water, _ = data
    config = tmp_path / "job.yaml"
    config.write_text("model:\ntrainer:\n  epochs: 3\n")
    assert_error_line(run_here(TRAIN, "--train", water, "--out", tmp_path / "o", "--config", config), "section model: is empty")


def test_wrongly_typed_yaml_value(data, tmp_path):
    _, water, _ = data
    config = tmp_path / "job.yaml"
    config.write_text("model:\n  cutoff: 0.5nm\n")
    assert_error_line(run_here(TRAIN, "--train", water, "--out", tmp_path / "o", "--config", config), "cutoff must be a number")


def test_out_is_an_existing_file(data, tmp_path):
    _, water, _ = data
    target = tmp_path / "afile"
    target.write_text("keep me\n")
    assert_error_line(run_here(TRAIN, "--train", water, "--out", target), "--out", "is a file")
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("flag, value, fragment", [("--seed", -1, "--seed"), ("--epochs", 0, "--epochs"),
                                                  ("--lr", "fast", "--lr"), ("--cutoff", 5, "not Å")])
def test_impossible_numbers(data, tmp_path, flag, value, fragment):
    _, water, _ = data
    assert_error_line(run_here(TRAIN, "--train", water, "--out", tmp_path / "o", flag, value), fragment)
    assert not (tmp_path / "o").exists()  # refused before the output folder was made


def test_resume_with_other_model_size_or_elements(data, tmp_path):
    folder, water, hf = data
    out = tmp_path / "run"
    first = run(TRAIN, "--train", water, "--out", out, "--config", SMALL, "--epochs", 2, "--no-progress")
    assert first.returncode == 0, first.stderr[-3000:]
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(SMALL.read_text().replace("channels: 8", "channels: 6"))
    assert "channels: 6" in bigger.read_text()
    assert_error_line(run(TRAIN, "--train", water, "--out", out, "--config", bigger, "--epochs", 3, "--resume", "--no-progress"),
                      "other settings", "model.channels: 8 -> 6")
    assert_error_line(run(TRAIN, "--train", hf, "--out", out, "--config", SMALL, "--epochs", 3, "--resume", "--no-progress"),
                      "other settings", "model.types: ['H', 'O'] -> ['F', 'H']")
    assert_error_line(run(TRAIN, "--train", water, "--out", out, "--config", SMALL, "--epochs", 3, "--lr", 0.1, "--resume",
                          "--no-progress"), "trainer.learning_rate")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the message for a machine without CUDA")
def test_cuda_device_without_cuda(data, tmp_path):
    _, water, _ = data
    assert_error_line(run_here(TRAIN, "--train", water, "--out", tmp_path / "o", "--device", "cuda"), "CUDA")


# ------------------------------------------------------------------------------------ polymer_cg
def test_polymer_setting_with_a_unit_is_refused_before_any_work(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("polymer_cg:\n  cg_timestep_ps: 20fs\n")
    out = tmp_path / "o"
    assert_error_line(run(POLYMER, "--quick", "--config", config, "--out", out), "cg_timestep_ps", "'20fs'")
    # settings.json is written only for settings that passed, so a corrected re-run is not refused
    assert not (out / "settings.json").exists()


@pytest.mark.parametrize("steps", [-100, 0])
def test_polymer_cg_steps_must_be_positive(tmp_path, steps):
    assert_error_line(run_here(POLYMER, "--quick", "--out", tmp_path / "o", "--cg-steps", steps), "--cg-steps", ">= 1")


@pytest.mark.parametrize("text, fragment", [
    ("polymer_cg:\n  cg_steps: [1\n", "YAML syntax error at line"),
    ("polymer_cg:\n", "section polymer_cg: is empty"),
    ("polymer_cg:\n  temperature_K: -5\n", "temperature_K must be > 0"),
    ("polymer_cg:\n  fine_timestep_ps: 1\n", "time steps are in ps"),
    ("polymer_cg:\n  chain_length: 22\n", "not a multiple of monomers_per_bead"),
    ("polymer_cg:\n  model_cutoff_nm: 8\n", "not Å"),
    ("polymer_cg:\n  dihedral_priors: 'no'\n", "dihedral_priors must be true or false"),
])
def test_polymer_config_errors(tmp_path, text, fragment):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    assert_error_line(run_here(POLYMER, "--quick", "--config", config, "--out", tmp_path / "o"), fragment)


def test_polymer_truncated_settings_json(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "settings.json").write_text('{"quick": true, "num_ch')
    assert_error_line(run_here(POLYMER, "--quick", "--out", out, "--seed", 0), "settings.json is damaged")


@pytest.mark.parametrize("flag, value", [("--seed", -1), ("--out", None)])
def test_polymer_seed_and_out(tmp_path, flag, value):
    target = tmp_path / "afile"
    target.write_text("x")
    args = ["--quick", "--out", target] if value is None else ["--quick", "--out", tmp_path / "o", flag, value]
    assert_error_line(run_here(POLYMER, *args), flag)


@pytest.mark.skipif("CUDA" in [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())],
                    reason="asserts the message for a machine without OpenMM's CUDA platform")
def test_polymer_cuda_platform_says_how_to_install_it(tmp_path):
    assert_error_line(run_here(POLYMER, "--quick", "--out", tmp_path / "o", "--platform", "CUDA"), "pip install -e \".[cuda12]\"")


# ------------------------------------------------------------------------------------ hybrid_md
HYBRID = ROOT / "protocols" / "hybrid_md.py"


def test_hybrid_md_refuses_a_model_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.ckpt"
    bogus.write_text("not a checkpoint")
    assert_error_line(run(HYBRID, "--quick", "--out", tmp_path / "run", "--model", bogus), "--model", "not a multiscale checkpoint")
    assert not (tmp_path / "run" / "solvated.pdb").exists()  # refused before any work


def test_hybrid_md_refuses_a_model_without_the_dipeptide_types(tmp_path):
    from conftest import make_model
    from multiscale.models import save_model

    save_model(make_model(types=["H", "O"]), tmp_path / "water.ckpt")
    assert_error_line(run_here(HYBRID, "--quick", "--out", tmp_path / "run", "--model", tmp_path / "water.ckpt"),
                      "needs C, H, N, O", "missing ['C', 'N']")


def test_hybrid_md_electrostatic_embedding_needs_charges(tmp_path):
    from conftest import make_model
    from multiscale.models import save_model

    save_model(make_model(types=["C", "H", "N", "O"]), tmp_path / "short.ckpt")
    assert_error_line(run_here(HYBRID, "--quick", "--out", tmp_path / "run", "--model", tmp_path / "short.ckpt",
                          "--embedding", "electrostatic"), "family hybrid", "--embedding mechanical")


@pytest.mark.skipif("CUDA" in [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())],
                    reason="this machine has OpenMM's CUDA platform")
def test_hybrid_md_cuda_platform_without_cuda(tmp_path):
    assert_error_line(run_here(HYBRID, "--quick", "--out", tmp_path / "run", "--platform", "CUDA"), "'CUDA' is not available",
                      "pip install -e \".[cuda12]\"")


@pytest.mark.parametrize("flag, value", [("--embedding", "polarisable"), ("--platform", "OpenCL")])
def test_hybrid_md_unknown_choices(tmp_path, flag, value):
    assert_error_line(run_here(HYBRID, "--out", tmp_path / "run", flag, value), "invalid choice")
