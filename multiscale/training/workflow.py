"""From configurations to a trained potential in one call: the library side of
``protocols/train_potential.py``.

``JobConfig`` groups the three dataclasses (model options, trainer, loss) and loads from one
YAML file with sections ``model:``, ``trainer:`` and ``loss:``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from multiscale.config import YamlConfig, read_yaml

from multiscale.data.configuration import Configuration
from multiscale.models import registry
from multiscale.models.io import load_model
from multiscale.training.batch import build_graphs
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import EnergyForceLoss, LossConfig
from multiscale.training.statistics import initialise_readout, loss_scales, reference_energies
from multiscale.training.trainer import Trainer, TrainingResult

#: model families (the registry of multiscale.models.registry, where each family registers itself)
FAMILIES = registry.FAMILIES


@dataclass
class JobConfig(YamlConfig):
    """Model family and options (its config-class fields except those derived from the data),
    trainer and loss. YAML: ``family:`` plus ``model:``, ``trainer:``, ``loss:`` sections (the
    whole file, so no SECTION of its own)."""

    DESCRIPTION = "section"

    model: Dict[str, Any] = field(default_factory=lambda: {"cutoff": 0.5})
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    family: str = "equivariant"

    def __post_init__(self):
        entry = registry.family(self.family)
        if (self.loss.charge_weight > 0 or self.loss.dipole_weight > 0) and not getattr(entry.model_class, "PREDICTS_CHARGES", False):
            raise ValueError(
                f"loss charge_weight/dipole_weight > 0 needs a model that predicts charges; family {self.family!r} "
                "does not: use family: hybrid, or set them to 0"
            )
        self.model.setdefault("cutoff", 0.5)
        # check every model option now, so that "0.5nm" or channels: 2.7 fail before any data is
        # read or any model is built
        entry.model_class.check_options(self.model, entry.derived)

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "JobConfig":
        data = read_yaml(path)
        unknown = sorted(set(data) - {"family", "model", "trainer", "loss"})
        if unknown:
            raise ValueError(f"{path}: unknown section(s) {unknown}; use family:, model:, trainer:, loss:")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "JobConfig":
        """From a mapping with optional ``family`` and ``model``, ``trainer``, ``loss`` sections."""
        sections = {}
        for name in ("model", "trainer", "loss"):
            section = data.get(name)
            if name in data and section is None:
                raise ValueError(f"the section {name}: is empty; give its options or delete the section line")
            if section is not None and not isinstance(section, dict):
                raise ValueError(f"the section {name}: must hold option: value lines, got {section!r}")
            sections[name] = dict(section or {})
        family = data.get("family", "equivariant")
        if not isinstance(family, str):
            raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
        return cls(
            family=family,
            model=sections["model"],
            trainer=TrainerConfig.from_dict(sections["trainer"]),
            loss=LossConfig.from_dict(sections["loss"]),
        )

    def to_dict(self) -> Dict[str, Any]:
        return {
            "family": self.family,
            "model": dict(self.model),
            "trainer": self.trainer.to_dict(),
            "loss": dataclasses.asdict(self.loss),
        }


def types_of(*sets: Sequence[Configuration]) -> list:
    """Sorted type names present in any of the configuration sets."""
    return sorted({t for configs in sets for c in configs for t in c.types})


def build_model(
    train: Sequence[Configuration],
    types: Sequence[str],
    model_options: Dict[str, Any],
    seed: int,
    loss: LossConfig,
    family: str = "equivariant",
    *,
    graphs: Optional[Sequence] = None,
):
    """A model initialised from the training data: per-type E0 and energy scale in the readout;
    average neighbour count (equivariant) or descriptor standardisation (Behler–Parrinello).
    ``graphs``: the training graphs at the model's cutoff, when the caller has them already."""
    model_class = registry.family(family).model_class
    options = dict(model_options)
    cutoff = float(options.pop("cutoff"))
    dtype = options.pop("dtype", "float32")
    if graphs is None:
        graphs = build_graphs(train, types, cutoff)
    torch.manual_seed(seed)
    options.update(model_class.options_from_data(graphs))
    model = model_class.build(list(types), cutoff, dtype=dtype, **options)
    model.initialise_from_data(graphs)
    e0 = reference_energies(train, types) if not loss.force_only else {t: 0.0 for t in types}
    initialise_readout(model, e0, loss_scales(train, types, e0))
    return model


def fit_potential(
    train: Sequence[Configuration],
    valid: Sequence[Configuration],
    out_dir: Union[str, Path],
    job: JobConfig,
    *,
    types: Optional[Sequence[str]] = None,
    train_weights: Optional[Sequence[float]] = None,
    resume: bool = False,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
) -> tuple:
    """Train one model into ``out_dir``; returns (best model, TrainingResult, Trainer).

    The readout initialisation and loss scales come from ``train``; ``job.trainer.max_time``
    bounds the training loop. ``train_weights`` (one per training configuration) weight each
    configuration's loss terms (distillation: see :mod:`multiscale.training.distillation`).
    """
    types = list(types) if types is not None else types_of(train, valid)
    if train_weights is not None and len(train_weights) != len(train):
        raise ValueError(f"train_weights has {len(train_weights)} entries for {len(train)} training configurations")
    # the training graphs are built once: for the data-derived settings and for training
    train_graphs = build_graphs(train, types, float(job.model["cutoff"]), weights=train_weights)
    model = build_model(train, types, job.model, job.trainer.seed, job.loss, job.family, graphs=train_graphs)
    e0 = {t: float(v) for t, v in zip(model.type_names, model.readout.shift.tolist())}
    scales = loss_scales(train, types, e0 if not job.loss.force_only else {t: 0.0 for t in types})
    loss = EnergyForceLoss(job.loss, scales)
    trainer = Trainer(model, loss, job.trainer, out_dir, progress=progress, log=log)
    valid_graphs = build_graphs(valid, types, model.cutoff)
    result: TrainingResult = trainer.fit(train_graphs, valid_graphs, resume=resume)
    best = load_model(Path(out_dir) / "model.ckpt")
    return best, result, trainer


def remaining(deadline: Optional[float]) -> Optional[float]:
    """Seconds left before a monotonic-clock deadline (None: unbounded)."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)
