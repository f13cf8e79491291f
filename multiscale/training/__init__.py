"""Training: batched graphs, balanced losses, the resumable Trainer, metrics."""

from multiscale.training.batch import Batch, Graph, build_graphs, collate, predict
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import EnergyForceLoss, LossConfig, LossScales
from multiscale.training.metrics import evaluate, parity_plot
from multiscale.training.statistics import average_num_neighbors, initialise_readout, loss_scales, reference_energies
from multiscale.training.trainer import Trainer, TrainingResult

__all__ = [
    "Batch", "Graph", "build_graphs", "collate", "predict", "TrainerConfig", "EnergyForceLoss", "LossConfig",
    "LossScales", "evaluate", "parity_plot", "average_num_neighbors", "initialise_readout", "loss_scales",
    "reference_energies", "Trainer", "TrainingResult",
]
