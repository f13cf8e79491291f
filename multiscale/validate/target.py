"""What is validated: a System at a structure, the evaluators that the checks call, and the
noise floors of their arithmetic.

* ``working``: the System on the user's platform (the model in its own dtype): what MD will run.
* ``precise``: the same System in double precision (Reference platform; a float32 model replaced
  by its float64 copy), for the checks that need clean differences.
* ``model_evaluator``: the model alone through ``model.compute`` in float64, for the symmetry
  checks OpenMM cannot express (rotating a periodic cell: OpenMM keeps box vectors in reduced
  form) and those that concern the model's own claims (permutation of same-type particles,
  inversion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from multiscale.cg.geometry import minimum_image
from multiscale.openmm.evaluation import DOUBLE_EPS, SystemEvaluator


class ModelEvaluator:
    """``model.compute`` at any positions and cell (any orientation), in the model's dtype."""

    def __init__(self, model, types: Sequence[str], periodic: bool):
        self.model = model
        self.type_names = [str(t) for t in types]
        self.types = model.type_indices(self.type_names)
        self.periodic = bool(periodic)
        dtype = next(model.parameters()).dtype
        self.eps = float(torch.finfo(dtype).eps)
        self.calls = 0

    @property
    def num_particles(self) -> int:
        return int(self.types.shape[0])

    def energy_forces(self, positions: np.ndarray, box: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
        out = self.model.compute(np.asarray(positions, dtype=np.float64), self.types,
                                 None if not self.periodic else np.asarray(box, dtype=np.float64))
        self.calls += 1
        return float(out["energy"]), out["forces"].to(torch.float64).cpu().numpy()


@dataclass
class Target:
    """A System at a structure, with its evaluators (see the module docstring)."""

    working: SystemEvaluator
    precise: SystemEvaluator
    positions: np.ndarray
    box: Optional[np.ndarray]
    masses: np.ndarray
    constraints: List[Tuple[int, int, float]]
    cutoffs: List[float]
    ewald_tolerance: float = 0.0
    model_evaluator: Optional[ModelEvaluator] = None
    model: object = None
    types: Optional[List[str]] = None
    claims_inversion: bool = False
    molecules: List[List[int]] = field(default_factory=list)

    @property
    def periodic(self) -> bool:
        return self.box is not None

    @property
    def num_particles(self) -> int:
        return int(self.positions.shape[0])

    def energy_tolerance(self, evaluator, energy: float, relative: float) -> float:
        """|ΔE| allowed for an exact invariance of ``evaluator``: ``relative`` × (|E| + N kJ/mol),
        plus the lattice sum's own error tolerance for System evaluators (the PME mesh is fixed in
        space, so a translated or rotated System differs by up to that)."""
        scale = abs(energy) + self.num_particles
        tolerance = relative * scale
        if isinstance(evaluator, SystemEvaluator) and self.ewald_tolerance > 0:
            tolerance += self.ewald_tolerance * scale
        return tolerance


def is_double(eps: float) -> bool:
    """True for double-precision arithmetic (unit roundoff ``eps``)."""
    return eps <= 10 * DOUBLE_EPS


def relative_for(eps: float, double: float, single: float) -> float:
    """The tolerance ``double`` for double-precision arithmetic, else ``single``."""
    return double if is_double(eps) else single


def minimum_image_of(vector: np.ndarray, box: Optional[np.ndarray]) -> np.ndarray:
    """The minimum image (nm) of one displacement, exact in OpenMM's reduced cells."""
    if box is None:
        return np.asarray(vector, dtype=float)
    return minimum_image(np.asarray(vector, dtype=float)[None, None], np.asarray(box, dtype=float)[None])[0, 0]
