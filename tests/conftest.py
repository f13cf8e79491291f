"""Shared fixtures: small float64 models and well-separated random configurations (nm)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path


def _threads_per_worker() -> int:
    """Under pytest-xdist (``-n N``, as .ci/run runs the suite) each worker gets its share of the
    cores, for torch, OpenMM's CPU platform and the job subprocesses it starts alike; 0 outside
    xdist (the libraries' own defaults). Why: two workers whose OpenMP pools each take both cores
    of a 2-core machine spin against each other (a training test took 201 s instead of 48)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not os.environ.get("PYTEST_XDIST_WORKER") or workers < 1:
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // workers)


THREADS_PER_WORKER = _threads_per_worker()
if THREADS_PER_WORKER:  # before torch starts its pool; subprocesses inherit the environment
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENMM_CPU_THREADS"):
        os.environ[_variable] = str(THREADS_PER_WORKER)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if THREADS_PER_WORKER:
    torch.set_num_threads(THREADS_PER_WORKER)

import multiscale  # noqa: E402,F401  (imports torch before openmmtorch)
from multiscale.models import EquivariantPotential  # noqa: E402

SMALL = dict(channels=8, num_layers=2, lmax=2, radial_hidden=16, num_basis=6)


def make_model(types=("H", "O"), cutoff=0.5, dtype="float64", seed=0, **options) -> EquivariantPotential:
    """A small randomly initialised model; readout scale/shift set so energies and forces are O(1–10)."""
    torch.manual_seed(seed)
    opts = dict(SMALL)
    opts.update(options)
    model = EquivariantPotential(list(types), cutoff, dtype=dtype, **opts)
    with torch.no_grad():
        model.readout.scale.fill_(5.0)
        model.readout.shift.copy_(torch.linspace(-3.0, 3.0, len(types), dtype=model.readout.shift.dtype))
    return model


def random_configuration(n: int, box_edge: float, seed: int = 0, min_distance: float = 0.09):
    """n points in a cube of edge ``box_edge`` nm with pairwise distances ≥ min_distance (open)."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        p = rng.random(3) * box_edge
        if all(np.linalg.norm(p - q) >= min_distance for q in points):
            points.append(p)
    return np.array(points)


def random_rotation(seed: int = 0) -> np.ndarray:
    """A uniformly random proper rotation (QR of a Gaussian matrix, sign-fixed)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture
def model64():
    return make_model()


@pytest.fixture
def cluster():
    """A 12-particle H/O cluster, open boundaries: (positions nm, type names)."""
    pos = random_configuration(12, 0.7, seed=1)
    types = ["O", "H", "H"] * 4
    return pos, types


def check_openmm_forces_by_finite_differences(system, positions, atoms_and_axes, h=1e-5, rel=1e-5, abs_tol=1e-3):
    """OpenMM's forces on (atom, axis) components against 4th-order central differences of its
    own total energy (Reference platform, double precision)."""
    import openmm
    import pytest
    from openmm import unit

    kj = unit.kilojoule_per_mole
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(kj / unit.nanometer)
    for atom, axis in atoms_and_axes:
        values = []
        for step in (-2, -1, 1, 2):
            moved = positions.copy()
            moved[atom, axis] += step * h
            context.setPositions(moved)
            values.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(kj))
        fd = -(values[0] - 8 * values[1] + 8 * values[2] - values[3]) / (12 * h)
        assert forces[atom, axis] == pytest.approx(fd, rel=rel, abs=abs_tol)


def run_script_here(script, *args) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` without a new interpreter: the protocol script's ``main`` through the
    same ``run_main`` its ``__main__`` block calls, in this process, stdout and stderr captured (an
    exception that escapes run_main, i.e. a traceback, fails the calling test). For refusals that
    happen before any work, where a subprocess spends ~4 s importing torch and OpenMM; each
    script keeps at least one test through its real command line."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(f"protocols.{Path(script).stem}")
    return run_main_here(module.main, *args, prog=Path(script).name)


def run_main_here(main, *args, prog: str) -> subprocess.CompletedProcess:
    """``run_main(main, ARGS, prog)`` in this process, as a CompletedProcess (exit status, stdout,
    stderr); see :func:`run_script_here`."""
    from multiscale.cli import run_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run_main(main, [str(a) for a in args], prog=prog)
        except SystemExit as stop:  # argparse's own refusals print their error line, then exit 2
            code = stop.code
    return subprocess.CompletedProcess([prog, *map(str, args)], code, out.getvalue(), err.getvalue())
