"""TrainerConfig: every optimisation setting, loadable from YAML."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from multiscale.config import YamlConfig

_SCHEDULERS = ("plateau", "cosine", "none")


@dataclass
class TrainerConfig(YamlConfig):
    """Optimisation settings of :class:`multiscale.training.Trainer`.

    epochs: maximum number of passes over the training set.
    batch_size: configurations per optimiser step.
    learning_rate, weight_decay: AdamW settings.
    scheduler: "plateau" (halve on a validation plateau), "cosine" (anneal to lr·min_lr_factor
        over ``epochs``) or "none".
    plateau_patience, plateau_factor: ReduceLROnPlateau settings.
    min_lr_factor: the smallest learning rate, as a fraction of ``learning_rate``.
    ema_decay: exponential moving average of the weights used for validation and the saved
        model (0 disables it).
    grad_clip: max global gradient norm (0 disables clipping).
    early_stopping_patience: epochs without validation improvement before stopping (0: never).
    max_time: wall-clock budget of this run in seconds (None: unbounded). The run stops inside
        the budget and keeps the model with the best validation score.
    seed: seeds weight initialisation and the order of mini-batches (deterministic for a seed).
    device: "cpu", "cuda" or "auto".
    """

    SECTION = "trainer"
    DESCRIPTION = "trainer option"

    epochs: int = 500
    batch_size: int = 8
    learning_rate: float = 5e-3
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    min_lr_factor: float = 1e-2
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    early_stopping_patience: int = 60
    max_time: Optional[float] = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.scheduler not in _SCHEDULERS:
            raise ValueError(f"scheduler must be one of {_SCHEDULERS}, got {self.scheduler!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be a positive number of seconds, got {self.max_time}")
        for name in ("weight_decay", "grad_clip", "early_stopping_patience", "plateau_patience", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must lie in (0, 1) (the learning rate is multiplied by it), got {self.plateau_factor!r}")
        if not 0 < self.min_lr_factor <= 1:
            raise ValueError(f"min_lr_factor must lie in (0, 1], got {self.min_lr_factor!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")
