"""kill -9 during each long stage of protocols/polymer_cg.py (fine sampling, force matching, CG MD),
then a re-run: the job completes, and the CG trajectory has no missing or duplicated frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "protocols" / "polymer_cg.py"

# small, but with each long stage long enough to be caught in the middle
CONFIG = """polymer_cg:
  num_chains: 16
  chain_length: 24
  fine_cutoff_nm: 0.9
  constrained_equilibration_ps: 0
  equilibration_steps: 1000
  sample_frames: 100
  sample_interval: 50
  train_max_time_s: 60
  train_epochs: 4
  model_cutoff_nm: 0.6
  channels: 4
  prior_cutoff_nm: 0.9
  model_family: network  # its force matching is a long stage to kill (the tabulated fit takes seconds)
  prior_bond_fit: moments  # 5 ps of 16 chains: the well fit refused an end bond once in a suite run
  cg_timestep_ps: 0.01
  cg_steps: 1200
  cg_report_interval: 20
  cg_npt_steps: 0
  reference_timing_steps: 300
"""


def start(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--quick", "--config", str(config), "--out", str(out), "--no-progress"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill_when(proc: subprocess.Popen, reached, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (status {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if reached():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{what} was not reached within {timeout} s")


def cg_steps_done(out: Path) -> int:
    try:
        return int(json.loads((out / "cg_state.json").read_text())["steps"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_kill_minus_9_in_each_long_stage_then_rerun(tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"

    # 1. during fine sampling: the recorder has written its first chunk, sampling is not done
    proc = start(config, out)
    kill_when(proc, lambda: any((out / "fine" / "recording").glob("chunk_*.npz")), "fine sampling")
    assert not (out / "fine" / "recording" / "DONE").exists()

    # 2. during force matching: a training checkpoint exists, training is not done
    proc = start(config, out)
    kill_when(proc, lambda: (out / "model" / "checkpoint.pt").exists(), "force matching")
    assert (out / "fine" / "recording" / "DONE").exists() and not (out / "model" / "DONE").exists()

    # 3. during the CG MD: a CG checkpoint exists, the run is not finished
    proc = start(config, out)
    kill_when(proc, lambda: 0 < cg_steps_done(out) < 1200, "the CG MD")
    assert (out / "model" / "DONE").exists() and cg_steps_done(out) < 1200

    # 4. the re-run completes every stage
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--config", str(config), "--out", str(out), "--no-progress"],
                            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert cg_steps_done(out) == 1200
    report = json.loads((out / "report.json").read_text())
    assert report["speedup"] > 0
    # the CG trajectory: exactly one frame per report interval, none missing, none duplicated
    cg = mdtraj.load_dcd(str(out / "cg.dcd"), top=str(out / "cg.pdb"))
    assert cg.n_frames == 1200 // 20
    steps = np.linalg.norm(np.diff(cg.xyz, axis=0).reshape(cg.n_frames - 1, -1), axis=1)
    assert np.all(steps > 0) and np.all(np.isfinite(cg.xyz))
    # the fine recording after the interrupted sampling was redone whole
    ref = mdtraj.load_dcd(str(out / "reference_cg.dcd"), top=str(out / "reference_cg.pdb"))
    assert ref.n_frames == 100
    assert np.all(np.linalg.norm(np.diff(ref.xyz, axis=0).reshape(ref.n_frames - 1, -1), axis=1) > 0)
