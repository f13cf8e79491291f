"""Run small OpenMM Systems on one core: one CPU-platform thread, on the core of the thread that
steps it.

Why: the CPU platform hands every force evaluation to its worker threads and waits for them,
even with ``Threads=1``. When the worker sleeps on another core, each evaluation pays a
cross-core wake-up. Measured on this project's 2-core CI machine (a VM) with the quick polymer
job's 128-bead System: an evaluation of an empty force group cost 0.18–0.21 ms with the threads
free to move and 0.045 ms with all of them on one core, and a 120/40 fs multiple-time-step
step 1.48 ms against 0.86 ms (five evaluations a step). A CG System of a few hundred beads has
too little work per evaluation for a second thread to pay that back. The all-atom reference
(768 sites) is the other way round on the same machine (3.5–3.75 ps/s on two threads, 3.1–3.2 on
one pinned core), so callers that report a speed-up time both ways and keep the faster.

Linux only (``os.sched_setaffinity``); elsewhere :func:`single_core` sets one thread and leaves
the affinity alone.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Set

import openmm

#: the CPU platform's property for its number of threads
THREADS_PROPERTY = "Threads"


def _can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


@contextmanager
def single_core(enabled: bool = True, core: Optional[int] = None) -> Iterator[Optional[int]]:
    """Within the block, Contexts created on the CPU platform default to one thread, and the
    calling thread (with every thread it starts, such as those of a Context created in the block)
    runs on one core: ``core``, or the lowest one it may use. Yields that core (None when not
    pinned). On exit the thread's affinity and the platform's default come back.

    Create *and* step the Context inside the block: its worker thread stays on the core it was
    started on, and a caller that steps it from another core pays the cross-core wake-up again.
    ``enabled=False`` is a no-op, so that a setting can switch it."""
    if not enabled:
        yield None
        return
    platform = openmm.Platform.getPlatformByName("CPU")
    previous_threads = platform.getPropertyDefaultValue(THREADS_PROPERTY)
    previous_mask: Optional[Set[int]] = None
    chosen: Optional[int] = None
    if _can_pin():
        previous_mask = os.sched_getaffinity(0)
        if core is None:
            chosen = min(previous_mask)
        elif core not in previous_mask:
            raise ValueError(f"core {core} is not one this process may run on ({sorted(previous_mask)})")
        else:
            chosen = int(core)
        os.sched_setaffinity(0, {chosen})
    platform.setPropertyDefaultValue(THREADS_PROPERTY, "1")
    try:
        yield chosen
    finally:
        platform.setPropertyDefaultValue(THREADS_PROPERTY, previous_threads)
        if previous_mask is not None:
            os.sched_setaffinity(0, previous_mask)
