"""Simulated time per wall second of several OpenMM Contexts, timed in alternating blocks: the
speed-up's baselines (the fine or all-atom reference) measured so that the machine's changing
load hits every configuration alike; the median block counts.

Units: ps, s.
"""

from __future__ import annotations

import time
from typing import Dict, Mapping, Tuple

import numpy as np
from tqdm import tqdm

from multiscale.openmm.affinity import single_core

#: how each configuration's threads ran, as reported
THREADS = {True: "one, pinned to one core", False: "the platform's default"}


def time_alternating(runs: Mapping[str, Tuple[object, object, float, bool]], steps: int, blocks: int = 3,
                     progress: bool = False, desc: str = "timing") -> Dict[str, dict]:
    """``runs``: name → (Context, its integrator, time step in ps, one_core). Each of ``blocks``
    rounds steps every run ``steps`` steps in turn (a run made on one pinned core is stepped inside
    :func:`~multiscale.openmm.affinity.single_core`, as it was created). Returns name →
    {"ps_per_wall_second": the median block, "blocks": every block, "threads": how it ran}."""
    if steps < 1 or blocks < 1:
        raise ValueError(f"steps and blocks must be >= 1, got {steps} and {blocks}")
    speeds = {name: [] for name in runs}
    for _ in tqdm(range(blocks), desc=desc, disable=not progress):
        for name, (context, integrator, dt, one_core) in runs.items():
            with single_core(one_core):
                start = time.perf_counter()
                integrator.step(steps)
                context.getState(getEnergy=True)  # waits for the platform to finish
                speeds[name].append(steps * dt / (time.perf_counter() - start))
    return {name: {"ps_per_wall_second": float(np.median(speeds[name])), "blocks": speeds[name],
                   "threads": THREADS[bool(runs[name][3])]} for name in runs}


def faster_of(default: dict, single_core_timing: dict) -> dict:
    """The faster of a configuration timed with the platform's threads and on one pinned core,
    with both under "configurations": the baseline a speed-up is taken against."""
    both = {"default": default, "single_core": single_core_timing}
    return {**max(both.values(), key=lambda t: t["ps_per_wall_second"]), "configurations": both}
