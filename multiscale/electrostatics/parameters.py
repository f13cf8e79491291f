"""Ewald / PME parameters from an error tolerance, as OpenMM chooses them.

OpenMM's ``ewaldErrorTolerance`` δ and the real-space cutoff r_c fix everything
(OpenMM theory guide, NonbondedForce):

* splitting parameter α = √(−ln 2δ) / r_c (torch-pme's smearing σ = 1/(√2 α));
* PME: n = ⌈2αd / (3 δ^{1/5})⌉ grid points along a box width d, i.e. a grid spacing
  3 δ^{1/5} / (2α) that does not depend on the box. torch-pme rounds every grid dimension up to a
  power of two, so its grid is never coarser than OpenMM's;
* Ewald: every reciprocal vector whose Gaussian factor exp(−k²/4α²) exceeds δ is kept, i.e.
  |k| ≤ 2α √(−ln δ) (angular wavenumber, 1/nm).

Units: nm, 1/nm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import numpy as np
import torch

METHODS = ("ewald", "pme", "direct")

#: Lagrange interpolation order of torch-pme's PME mesh (nodes per axis). OpenMM uses 5th-order
#: B-splines; with OpenMM's grid spacing, 6 Lagrange nodes reach OpenMM's force accuracy at
#: ewaldErrorTolerance 5e-4 (measured in tests/test_electrostatics.py), 4 do not.
PME_INTERPOLATION_NODES = 6


@dataclass(frozen=True)
class EwaldParameters:
    """What a :class:`multiscale.electrostatics.Coulomb` computes with (``coulomb.parameters``).

    alpha: Ewald splitting parameter α (1/nm); smearing: torch-pme's σ = 1/(√2 α) (nm);
    mesh_spacing: OpenMM's PME grid spacing 3δ^{1/5}/(2α) (nm); k_cutoff: the Ewald sum's largest
    angular wavenumber (1/nm); interpolation_nodes: PME interpolation order.
    """

    method: str
    cutoff: float
    tolerance: float
    alpha: float
    smearing: float
    mesh_spacing: float
    k_cutoff: float
    interpolation_nodes: int

    def mesh(self, box) -> Optional[list]:
        """The PME grid (points along a, b, c) torch-pme uses for ``box`` (rows a, b, c in nm);
        None for other methods."""
        if self.method != "pme":
            return None
        from torchpme.lib.kvectors import get_ns_mesh

        # torch-pme's own rule, for its mesh_spacing = 2 × ours (it makes 2 L/spacing + 1 points)
        return get_ns_mesh(torch.as_tensor(np.asarray(box, dtype=float)), 2.0 * self.mesh_spacing).tolist()

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def ewald_parameters(cutoff: float, tolerance: float, method: str = "pme") -> EwaldParameters:
    """α, grid spacing and reciprocal cutoff for a real-space ``cutoff`` (nm) and OpenMM's
    ``ewaldErrorTolerance`` ``tolerance``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if not 0.0 < tolerance < 0.5:
        raise ValueError(
            f"tolerance must be between 0 and 0.5 (OpenMM's ewaldErrorTolerance, e.g. 5e-4), got {tolerance!r}"
        )
    alpha = math.sqrt(-math.log(2.0 * tolerance)) / cutoff
    return EwaldParameters(
        method=method,
        cutoff=float(cutoff),
        tolerance=float(tolerance),
        alpha=alpha,
        smearing=1.0 / (math.sqrt(2.0) * alpha),
        mesh_spacing=3.0 * tolerance**0.2 / (2.0 * alpha),
        k_cutoff=2.0 * alpha * math.sqrt(-math.log(tolerance)),
        interpolation_nodes=PME_INTERPOLATION_NODES,
    )
