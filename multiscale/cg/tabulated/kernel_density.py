"""Gaussian kernel density of sampled bond lengths or angles on table knots: the smooth
distributions that Boltzmann inversion and its iterative refinement take logarithms of."""

from __future__ import annotations

import numpy as np

#: kernel width in knot spacings
BANDWIDTH_KNOTS = 1.5


def kernel_density(points: np.ndarray, samples: np.ndarray, spacing: float) -> np.ndarray:
    """Normalised density (1/unit of q) of ``samples`` at ``points``, a Gaussian kernel of width
    :data:`BANDWIDTH_KNOTS` × ``spacing``, summed in blocks so memory stays O(points × 4096)."""
    points = np.asarray(points, dtype=np.float64)
    samples = np.asarray(samples, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError("no samples to estimate a density from")
    h = BANDWIDTH_KNOTS * float(spacing)
    total = np.zeros(points.shape)
    for start in range(0, samples.size, 4096):
        block = samples[start:start + 4096]
        total += np.exp(-0.5 * ((points[:, None] - block[None, :]) / h) ** 2).sum(1)
    return total / (samples.size * h * np.sqrt(2 * np.pi))
