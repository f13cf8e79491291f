"""Jensen–Shannon divergence of two histograms (base 2, in [0, 1])."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import rel_entr



def jensen_shannon(p, q) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) of two histograms on the same bins.

    JSD(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M), M = (P + Q)/2, KL in bits. ``p`` and ``q`` are
    non-negative counts, probabilities or densities on identical bins (each is normalised to sum
    to 1); empty bins contribute 0 (0·log 0 = 0). 0 means identical histograms, 1 disjoint support.
    This is the square of scipy's ``jensenshannon(p, q, base=2)``, which returns the distance.

    A finite-sample estimate is biased upwards: two independent samples of N values each from
    one distribution, spread over K bins, give JSD ≈ (K − 1)/(4 N ln 2) on average (more for
    time-correlated MD samples), so fewer bins or longer runs lower this noise floor.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"p and q must be histograms on the same bins, got {p.size} and {q.size} bins")
    for name, h in (("p", p), ("q", q)):
        if not np.all(np.isfinite(h)) or np.any(h < 0):
            raise ValueError(f"{name} must hold finite non-negative counts or probabilities")
        if h.sum() <= 0:
            raise ValueError(f"{name} is empty (all bins zero); histogram at least one sample on these bins")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)
    value = 0.5 * (rel_entr(p, m).sum() + rel_entr(q, m).sum()) / math.log(2.0)
    return float(min(max(value, 0.0), 1.0))

