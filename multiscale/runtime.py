"""Process-wide runtime settings that matter for large ML evaluations on CPU.

:func:`configure_allocator` keeps freed memory inside the process instead of giving it back to
the kernel. Why it matters: one energy+force evaluation of an :class:`EquivariantPotential`
allocates and frees several kB per edge (26 edges per atom at a 0.4 nm cutoff in water), gigabytes
per call at 10⁵ atoms. glibc serves every block above its mmap threshold (128 kB to 32 MB,
adapting) with a fresh ``mmap`` and ``munmap``s it on ``free``, so on the next call those pages
are faulted in and zero-filled by the kernel again: ~0.4 s/GB, and 1-2 s/GB in a VM for memory
its host has not backed yet, against ~0.05 s/GB for memory the process already owns.

The setting is the run-time equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<huge>``:

* ``M_MMAP_MAX = 0``: no block is served by its own ``mmap``; everything comes from the heap,
  where freed blocks are reused by the next allocation;
* ``M_TRIM_THRESHOLD = <never>``: free memory at the top of the heap is never returned (trimmed).

Measured with ``protocols/bench_potential.py --threads 1`` (water, 1k-100k atoms, 2-core VM):
the model runs its per-edge work in fixed-size chunks, so its large allocations are few and recur
with the same sizes; with that, keeping freed memory takes 10⁵ atoms from 8.2-8.8 s to 6.0 s per
evaluation (cost exponent 1.06-1.08 → 0.99-1.01) for 5-10 % more peak memory (9.9 → 10.2-11.0
GB). Before the chunking, the heap fragmented so badly that the same setting needed more than
19 GB at 10⁵ atoms.

Costs: the process's resident memory stays at its high-water mark, and memory freed after a big
evaluation is not returned to the system until the process exits (``release_memory()`` gives
back what it can). The setting applies to every allocation of the whole process, not only to
the model's. Use it in dedicated simulation or benchmark processes, not in a process that shares
the machine's memory with long-lived neighbours after a single large evaluation.

This is *opt-in*: nothing in ``multiscale`` calls it implicitly. Call it once, early (before the
large allocations; later calls only affect later allocations)::

    from multiscale.runtime import configure_allocator
    configure_allocator()

On platforms without glibc (macOS, musl, Windows) it warns and does nothing. Allocators
substituted with ``LD_PRELOAD`` (jemalloc, tcmalloc) keep their own policy: glibc's ``mallopt``
still exists and succeeds, but no longer governs ``malloc``; see :func:`allocator_info`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from typing import Any, Dict, Optional

__all__ = ["configure_allocator", "allocator_info", "release_memory"]

# <malloc.h> parameter numbers for mallopt(); stable glibc ABI.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

# glibc's own defaults (as in mallopt(3)): 128 kB thresholds, dynamic; 65536 mmaps.
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536

#: "Never trim". mallopt's value is a C ``int``, too small for a byte count like 10^11 (the
#: MALLOC_TRIM_THRESHOLD_ recipe); glibc converts it to ``size_t``, so -1 becomes SIZE_MAX, a
#: top-of-heap size that is never reached. (INT_MAX would mean "trim above 2 GiB", which a 10^5-atom
#: evaluation exceeds, so its memory would still be returned and faulted in again.)
_NEVER = -1

_state: Dict[str, Any] = {"keep_freed_memory": None}


def _glibc() -> Optional[ctypes.CDLL]:
    """The process's glibc, or None when the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the already-loaded C library of this process
        version = libc.gnu_get_libc_version  # only glibc has this
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def _mallopt(libc: ctypes.CDLL, parameter: int, value: int) -> bool:
    return bool(libc.mallopt(parameter, value))


def configure_allocator(keep_freed_memory: bool = True) -> bool:
    """Make glibc keep freed memory in the process (``True``) or restore its defaults (``False``).

    Returns True when the setting was applied (glibc), False (with a ``RuntimeWarning``) where the
    C library is not glibc. Idempotent: calling it again with the same argument changes nothing.

    ``keep_freed_memory=True`` sets ``M_MMAP_MAX=0`` (no per-block mmap) and a trim threshold
    that is never reached, so memory freed by one evaluation is reused by the next instead of
    being unmapped and page-faulted in again. ``False`` restores glibc's documented defaults
    (mmap for blocks above 128 kB, trimming above 128 kB; glibc's dynamic threshold adjustment
    stays off once a threshold has been set explicitly).
    """
    libc = _glibc()
    if libc is None:
        warnings.warn(
            "configure_allocator: the C library is not glibc (platform "
            f"{sys.platform!r}); allocator settings left unchanged",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if keep_freed_memory:
        # Huge trim threshold first, so no trim can happen between the two calls.
        ok = _mallopt(libc, M_TRIM_THRESHOLD, _NEVER) and _mallopt(libc, M_MMAP_MAX, 0)
    else:
        ok = (
            _mallopt(libc, M_MMAP_MAX, DEFAULT_MMAP_MAX)
            and _mallopt(libc, M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
            and _mallopt(libc, M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        )
    if not ok:  # pragma: no cover - glibc's mallopt accepts all of these values
        warnings.warn("configure_allocator: glibc's mallopt rejected a setting", RuntimeWarning, stacklevel=2)
        return False
    _state["keep_freed_memory"] = bool(keep_freed_memory)
    return True


def release_memory() -> bool:
    """Give free heap memory back to the kernel now (glibc ``malloc_trim(0)``).

    Useful after a large evaluation in a process that keeps running with other work. Returns
    True when glibc released something, False otherwise (or when the C library is not glibc).
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return bool(libc.malloc_trim(0))


def allocator_info() -> Dict[str, Any]:
    """What governs ``malloc`` here, for benchmark records: C library, version, what
    :func:`configure_allocator` last set in this process, and allocator-related environment
    variables (``MALLOC_*``, ``GLIBC_TUNABLES``, ``LD_PRELOAD``)."""
    libc = _glibc()
    info: Dict[str, Any] = {
        "libc": "glibc" if libc is not None else None,
        "libc_version": libc.gnu_get_libc_version().decode() if libc is not None else None,
        "keep_freed_memory": _state["keep_freed_memory"],
        "environment": {
            k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))
        },
    }
    return info
