"""The README's Python example runs as it stands, in an empty folder (issue 8: it used to read a
water.pdb that nothing made)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_blocks():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it from Python"):]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_use_it_from_python_example_runs(tmp_path):
    code = python_blocks()[0].replace("simulation.step(1000)", "simulation.step(50)")  # fewer steps, same code path
    code += "\nimport numpy as np\nstate = simulation.context.getState(getEnergy=True, getPositions=True)\n"
    code += "assert np.isfinite(state.getPotentialEnergy()._value)\nprint('ok', system.getNumParticles())\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith("ok")
    assert (tmp_path / "water.pdb").is_file() and (tmp_path / "model.ckpt").is_file()
