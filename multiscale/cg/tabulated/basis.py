"""The linear B-spline ("hat") basis of the tabulated forces: g(q) = Σ_k c_k B_k(q) on uniform
knots, so that g is piecewise linear and the energy piecewise quadratic (C¹). MS-CG codes (VOTCA,
BOCS) use cubic or linear B-splines; the linear ones keep every design-matrix row at two entries
and the energy integral exact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class HatBasis:
    """Knots q_k = start + k·h, k = 0..count−1, h = (stop − start)/(count − 1)."""

    start: float
    stop: float
    count: int

    def __post_init__(self) -> None:
        if self.count < 2 or not self.stop > self.start:
            raise ValueError(f"a hat basis needs stop > start and at least 2 knots, got {self}")

    @classmethod
    def covering(cls, low: float, high: float, spacing: float) -> "HatBasis":
        """Knots every ``spacing`` from below ``low`` to above ``high`` (at least two)."""
        start = np.floor(low / spacing) * spacing
        count = max(int(np.ceil((high - start) / spacing - 1e-9)) + 1, 2)
        return cls(float(start), float(start + (count - 1) * spacing), int(count))

    @property
    def spacing(self) -> float:
        return (self.stop - self.start) / (self.count - 1)

    @property
    def knots(self) -> np.ndarray:
        return self.start + self.spacing * np.arange(self.count)

    def weights(self, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(left, w_left, w_right)``: B_left(q) = w_left, B_left+1(q) = w_right, all others 0.
        ``q`` must lie in [start, stop] (checked)."""
        q = np.asarray(q, dtype=np.float64)
        if q.size and (q.min() < self.start - 1e-9 or q.max() > self.stop + 1e-9):
            raise ValueError(f"values {q.min():.4g}..{q.max():.4g} fall outside the basis range {self.start:.4g}..{self.stop:.4g}")
        u = np.clip((q - self.start) / self.spacing, 0.0, self.count - 1 - 1e-12)
        left = np.floor(u).astype(np.int64)
        w_right = u - left
        return left, 1.0 - w_right, w_right

    def second_differences(self) -> np.ndarray:
        """(count−2, count) matrix D with (Dc)_k = c_k − 2c_{k+1} + c_{k+2}: the smoothness penalty."""
        d = np.zeros((max(self.count - 2, 0), self.count))
        for k in range(self.count - 2):
            d[k, k:k + 3] = (1.0, -2.0, 1.0)
        return d
