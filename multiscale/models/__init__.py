"""Equivariant short-range potentials: model, configuration and checkpoints."""

from multiscale.models.config import ModelConfig
from multiscale.models.ensemble import EnsemblePotential, load_ensemble, save_ensemble
from multiscale.models.io import load_model, save_model
from multiscale.models.potential import EquivariantPotential
from multiscale.models.behler_parrinello import BehlerParrinelloPotential, BPConfig

__all__ = ["EquivariantPotential", "ModelConfig", "load_model", "save_model", "BehlerParrinelloPotential", "BPConfig"]
from multiscale.models.hybrid import HybridConfig, HybridPotential

__all__ += ["HybridPotential", "HybridConfig"]
__all__ += ["EnsemblePotential", "load_ensemble", "save_ensemble"]
