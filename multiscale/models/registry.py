"""The one registry of model families: name → model class, configuration class, checkpoint tag,
and the options that training derives from the data.

Each family registers itself where its class is defined (``register_family``); checkpoints
(:mod:`multiscale.models.io`), training (:mod:`multiscale.training.workflow`) and the OpenMM bridge
look families up here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Family:
    """A model family. ``model_class`` is built as ``cls(types, cutoff, dtype=..., **options)``;
    ``derived`` are the configuration fields that training fills in from the data."""

    name: str
    model_class: type
    config_class: type
    checkpoint_format: str
    derived: Tuple[str, ...] = ("types",)


FAMILIES: Dict[str, Family] = {}


def register_family(
    name: str, model_class: type, checkpoint_format: str, derived: Tuple[str, ...] = ("types",)
) -> Family:
    """Register ``model_class`` (whose ``CONFIG_CLASS`` is its configuration) under ``name``."""
    family = Family(name, model_class, model_class.CONFIG_CLASS, checkpoint_format, tuple(derived))
    FAMILIES[name] = family
    return family


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def family_of(model) -> Family:
    """The family of a model instance (exact class match)."""
    for entry in FAMILIES.values():
        if type(model) is entry.model_class:
            return entry
    raise TypeError(f"{type(model).__name__} is not a registered multiscale model class")


def family_by_format(checkpoint_format: str) -> Family:
    for entry in FAMILIES.values():
        if entry.checkpoint_format == checkpoint_format:
            return entry
    raise KeyError(checkpoint_format)


def checkpoint_formats() -> Dict[str, type]:
    """Checkpoint tag → model class, for every registered family."""
    return {entry.checkpoint_format: entry.model_class for entry in FAMILIES.values()}
