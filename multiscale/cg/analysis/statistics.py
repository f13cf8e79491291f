"""Statistics of correlated MD series: block-averaged standard errors and relative differences
with propagated errors."""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import numpy as np



def block_sem(series, n_blocks: int = 10) -> float:
    """Standard error of the mean of a time series by block averaging: the series is cut into
    ``min(n_blocks, len)`` equal consecutive blocks (the first len mod n_blocks samples are
    dropped) and SEM = std(block means, ddof=1) / sqrt(number of blocks). Blocks longer than the
    correlation time make this honest for correlated MD data; NaN for fewer than 2 samples."""
    x = np.asarray(series, dtype=np.float64).ravel()
    n = min(int(n_blocks), x.size)
    if n < 2:
        return float("nan")
    size = x.size // n
    means = x[x.size - n * size:].reshape(n, size).mean(axis=1)
    if np.ptp(means) <= 1e-12 * np.max(np.abs(means)):
        return 0.0  # a constant series (e.g. the density of an NVT run), up to rounding
    return float(means.std(ddof=1) / math.sqrt(n))


def _summary(values: np.ndarray, n_blocks: int) -> Dict[str, Any]:
    """values: (n_frames, n_chains)."""
    per_frame = values.mean(axis=1)
    return {
        "mean": float(per_frame.mean()),
        "sem": block_sem(per_frame, n_blocks),
        "root_mean_square": float(np.sqrt(np.mean(values ** 2))),
        "per_chain_mean": [float(v) for v in values.mean(axis=0)],
        "per_chain_sem": [block_sem(values[:, c], n_blocks) for c in range(values.shape[1])],
    }


def _relative(ref: float, cg: float, ref_sem: float = float("nan"),
              cg_sem: float = float("nan")) -> Tuple[float, float]:
    """100 (cg − ref)/ref and its propagated standard error (both in %)."""
    if ref == 0 or not np.isfinite(ref):
        return float("nan"), float("nan")
    value = 100.0 * (cg - ref) / ref
    sem = 100.0 * math.sqrt((cg_sem / ref) ** 2 + (cg * ref_sem / ref ** 2) ** 2)
    return float(value), float(sem)


def _compare_series(ref_values: np.ndarray, cg_values: np.ndarray, n_blocks: int) -> Dict[str, Any]:
    ref_s, cg_s = _summary(ref_values, n_blocks), _summary(cg_values, n_blocks)
    rel, rel_sem = _relative(ref_s["mean"], cg_s["mean"], ref_s["sem"], cg_s["sem"])
    per_chain = [_relative(r, c)[0] for r, c in zip(ref_s["per_chain_mean"], cg_s["per_chain_mean"])]
    return {"ref": ref_s, "cg": cg_s, "relative_difference_percent": rel,
            "relative_difference_percent_sem": rel_sem, "per_chain_relative_difference_percent": per_chain}

