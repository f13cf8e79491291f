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


def statistical_inefficiency(series) -> float:
    """g = 1 + 2 Σ_t (1 − t/N) C(t) of a time series, C the normalised autocorrelation summed
    until it first drops to ≤ 0 (the estimator of Chodera et al., JCTC 2007; written here, a few
    lines, rather than adding pymbar to the stack for it). N/g is the number of independent
    samples; g ≥ 1; 1.0 for a constant series or fewer than 3 samples."""
    x = np.asarray(series, dtype=np.float64).ravel()
    n = x.size
    if n < 3:
        return 1.0
    dx = x - x.mean()
    var = float(np.dot(dx, dx) / n)
    if var <= 1e-300 or var <= 1e-24 * float(np.max(np.abs(x))) ** 2:
        return 1.0
    # all lags at once by FFT (zero-padded: no wrap-around)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(dx, size)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size)[:n] / (np.arange(n, 0, -1) * var)
    g = 1.0
    for t in range(1, n - 1):
        if acf[t] <= 0.0:
            break
        g += 2.0 * acf[t] * (1.0 - t / n)
    return float(max(1.0, g))


def correlated_sem(series, n_blocks: int = 10) -> float:
    """Standard error of the mean of a correlated series: the larger of the block estimate
    (:func:`block_sem`) and sqrt(var g / N) with g the :func:`statistical_inefficiency`. Blocks
    shorter than the correlation time understate the error (a 32-lipid bilayer's area wanders over
    ~200 ps, longer than a 267 ps run's tenth); the autocorrelation estimate understates it less
    (on an AR(1) series ten correlation times long, ~0.8 of the true spread against ~0.7), and
    neither can do better than the run allows: take the spread over independent runs where it
    matters."""
    x = np.asarray(series, dtype=np.float64).ravel()
    blocks = block_sem(x, n_blocks)
    if x.size < 3 or not np.isfinite(blocks):
        return blocks
    g = statistical_inefficiency(x)
    return float(max(blocks, math.sqrt(float(x.var()) * g / x.size)))


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

