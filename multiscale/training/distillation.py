"""Distillation: many cheap teacher labels plus a few high-level labels in one objective.

    L = Σ_sources w_source · (that source's loss terms),

implemented through per-configuration loss weights (see :class:`EnergyForceLoss`). Energies of
different label sources usually have different zeros (a force field's energy is not a GFN2-xTB
total energy), so by default a source contributes forces only unless ``use_energies=True``;
per-type reference energies are then fitted on the sources that keep their energies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from multiscale.data.configuration import Configuration


@dataclass
class LabelSource:
    """A set of labelled configurations with its weight in the composite objective."""

    configurations: Sequence[Configuration]
    weight: float = 1.0
    use_energies: bool = True
    name: str = ""

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError(f"label source {self.name!r}: weight must be > 0, got {self.weight}")
        if not self.configurations:
            raise ValueError(f"label source {self.name!r} has no configurations")


def combine_sources(sources: Sequence[LabelSource]) -> Tuple[List[Configuration], List[float]]:
    """All configurations of all sources, with per-configuration weights.

    Sources with ``use_energies=False`` have their energies removed (forces and virials kept).
    """
    if not sources:
        raise ValueError("no label sources given")
    configs: List[Configuration] = []
    weights: List[float] = []
    for source in sources:
        for config in source.configurations:
            if not source.use_energies:
                config = config.with_labels(energy=None)
            config.info.setdefault("label_source", source.name)
            configs.append(config)
            weights.append(float(source.weight))
    return configs, weights
