"""OpenMM bridge: the ML potential as an OpenMM Force, and System builders around it."""

import torch  # noqa: F401  (before openmmtorch, always)

from multiscale.openmm.bridge import BACKENDS, OpenMMAdapter, torch_force
from multiscale.openmm.reporters import EnsembleUncertaintyReporter
from multiscale.openmm.system import clone_system, create_delta_system, create_system, topology_types

__all__ = ["BACKENDS", "OpenMMAdapter", "torch_force", "create_system", "create_delta_system", "clone_system", "topology_types"]
__all__ += ["EnsembleUncertaintyReporter"]
