"""Learning the long range: the ion/water pair builder (geometry, charges, refusals) and the
protocol end to end on a tiny budget (JSON, PNG, resume, bad input)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from systems.ion_water_pairs import KINDS, MIN_CONTACT_NM, NA_O_NM, WATER_OH_NM, pair_configurations, pair_dataset  # noqa: E402


def test_pairs_have_the_asked_separation_intact_water_and_their_total_charge():
    for kind, (first, second, charge, closest) in KINDS.items():
        separations = np.linspace(closest, 1.6, 7)
        configs = pair_configurations(kind, separations, seed=3)
        for d, c in zip(separations, configs):
            n_first = {"Na+": 1, "H2O": 3, "Na+(H2O)": 4}[first]
            assert np.linalg.norm(c.positions[n_first] - c.positions[0]) == pytest.approx(d, abs=1e-12)
            assert c.total_charge == charge and c.info == {"kind": kind, "separation_nm": pytest.approx(d)}
            gaps = np.linalg.norm(c.positions[:n_first, None] - c.positions[None, n_first:], axis=-1)
            assert gaps.min() >= MIN_CONTACT_NM
            for k, t in enumerate(c.types):
                if t == "O":  # each water's two H atoms follow its O, within the jitter of the gas-phase O–H
                    oh = np.linalg.norm(c.positions[k + 1:k + 3] - c.positions[k], axis=1)
                    assert np.all(np.abs(oh - WATER_OH_NM) < 0.02)
            if first == "Na+(H2O)":  # the bound water's O sits in the first shell, H atoms pointing away
                assert np.linalg.norm(c.positions[1] - c.positions[0]) == pytest.approx(NA_O_NM)
                assert np.all(np.linalg.norm(c.positions[2:4] - c.positions[0], axis=1) > NA_O_NM)
    assert len(pair_dataset(4, seed=1)) == 4 * len(KINDS)


def test_pairs_refuse_unknown_kinds_and_impossible_separations():
    with pytest.raises(ValueError, match="unknown pair kind"):
        pair_configurations("Na+ Cl-", [1.0])
    with pytest.raises(ValueError, match="below the closest approach"):
        pair_configurations("H2O H2O", [0.1])
    with pytest.raises(ValueError, match="in nm"):
        pair_configurations("H2O H2O", [12.0])


def run(*args):
    return subprocess.run([sys.executable, str(REPO / "protocols" / "learn_long_range.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_protocol_runs_end_to_end_and_resumes(tmp_path):
    pytest.importorskip("tblite.interface")
    # the epochs cap, not the time budget, ends training: the same model on a slow or a busy host
    # (--quick for its short OpenMM run; the other quick presets are overridden)
    tiny = ("--quick", "--per-kind", 8, "--budget", 120, "--epochs", 2, "--seeds", 0, "--no-progress")
    first = run("--out", tmp_path / "run", *tiny)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "learn_long_range.json").read_text())
    assert (tmp_path / "run" / "learn_long_range.png").stat().st_size > 10_000
    assert report["data"]["configurations"] == 8 * len(KINDS)
    hybrid = report["summary"]["hybrid"]
    assert {"charge_rmse_e", "dipole_rmse_debye"} <= set(hybrid)
    assert "charge_rmse_e" not in report["summary"]["short_range"]
    assert set(hybrid["by_separation"]) <= {"0-0.5 nm", "0.5-1 nm", "1-inf nm"}
    # deployed in OpenMM: the same energy as the model (how well a 2-epoch model conserves energy
    # in NVE is the model's business; the full run's drift is in the README)
    deployed = report["openmm"]
    assert deployed["relative_difference"] < 1e-6
    assert np.isfinite(deployed["total_energy_drift_kj_mol"]) and deployed["na_na_start_nm"] > 0.5
    # a re-run resumes: every stage is done, nothing is labelled or trained again, same figures
    again = run("--out", tmp_path / "run", *tiny)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "learn_long_range.json").read_text())["summary"] == report["summary"]
    # other settings into the same folder are refused, before any work
    from conftest import run_script_here  # a refusal before any work: no new interpreter needed

    refused = run_script_here(REPO / "protocols" / "learn_long_range.py", "--out", tmp_path / "run", *tiny[:-3], "--seeds", 1,
                              "--no-progress")
    assert refused.returncode == 2 and "other settings" in refused.stderr.strip().splitlines()[-1]


def test_protocol_bad_input_is_one_error_line():
    from conftest import run_script_here  # refused by argparse: no new interpreter needed

    bad = run_script_here(REPO / "protocols" / "learn_long_range.py", "--out", "/tmp/never-used", "--per-kind", 0)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "error:" in bad.stderr.strip().splitlines()[-1] and "--per-kind" in bad.stderr
