"""Equivariant short-range potentials: model, configuration and checkpoints."""

from multiscale.models.config import ModelConfig
from multiscale.models.io import load_model, save_model
from multiscale.models.potential import EquivariantPotential

__all__ = ["EquivariantPotential", "ModelConfig", "load_model", "save_model"]
