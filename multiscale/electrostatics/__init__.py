"""Long-range electrostatics: Ewald, PME and direct Coulomb sums (torch-pme), and a screened
(Yukawa) interaction, in OpenMM units, differentiable and TorchScript-compatible."""

from multiscale.electrostatics.coulomb import Coulomb
from multiscale.electrostatics.parameters import EwaldParameters, ewald_parameters

__all__ = ["Coulomb", "EwaldParameters", "ewald_parameters"]
