"""OpenMM bridge: the ML potential as an OpenMM Force, and System builders around it."""

import torch  # noqa: F401  (before openmmtorch, always)

from multiscale.openmm.bridge import BACKENDS, ML_FORCE_GROUP, ML_FORCE_TAG, OpenMMAdapter, is_ml_force, torch_force
from multiscale.openmm.ensemble import ensemble_force
from multiscale.openmm.mixed import create_mixed_system
from multiscale.openmm.reporters import EnsembleUncertaintyReporter
from multiscale.openmm.system import clone_system, create_delta_system, create_system, topology_types

__all__ = ["BACKENDS", "OpenMMAdapter", "torch_force", "create_system", "create_delta_system", "clone_system", "topology_types"]
__all__ += ["create_mixed_system"]
__all__ += ["EnsembleUncertaintyReporter", "ensemble_force", "ML_FORCE_GROUP", "ML_FORCE_TAG", "is_ml_force"]
