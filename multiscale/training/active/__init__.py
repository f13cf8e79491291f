"""Active learning with an ensemble (the loop is described in :mod:`~.loop`).

Modules: :mod:`~.config` (settings), :mod:`~.loop` (:class:`ActiveLearningLoop`, resumable through
:class:`multiscale.jobs.ResumableJob`), :mod:`~.selection` (picks), :mod:`~.evaluation` (held-out
errors), :mod:`~.frames` (explored frames on disk). The exploration MD and its restraint are built
in :mod:`multiscale.openmm.exploration`.
"""

from multiscale.openmm.exploration import UNCERTAINTY_KEYS, Exploration, explore, flat_bottom_restraint
from multiscale.training.active.config import ActiveLearningConfig, job_from_dict, load_active_learning_yaml
from multiscale.training.active.evaluation import evaluate_ensemble
from multiscale.training.active.frames import load_frames
from multiscale.training.active.loop import (
    HELD_OUT_FILE,
    ROUNDS_FILE,
    SETTINGS_FILE,
    STAGES,
    STATE_FILE,
    STATE_FORMAT,
    STATE_FORMAT_VERSION,
    ActiveLearningLoop,
)
from multiscale.training.active.selection import select_most_uncertain

__all__ = [
    "ActiveLearningConfig",
    "ActiveLearningLoop",
    "Exploration",
    "HELD_OUT_FILE",
    "ROUNDS_FILE",
    "SETTINGS_FILE",
    "STAGES",
    "STATE_FILE",
    "STATE_FORMAT",
    "STATE_FORMAT_VERSION",
    "UNCERTAINTY_KEYS",
    "evaluate_ensemble",
    "explore",
    "flat_bottom_restraint",
    "job_from_dict",
    "load_active_learning_yaml",
    "load_frames",
    "select_most_uncertain",
]
