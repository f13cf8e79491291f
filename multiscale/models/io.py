"""Checkpoints of EquivariantPotential: hyper-parameters plus weights, safe to load.

The file is a plain ``torch.save`` of ``{"format", "format_version", "config", "state_dict"}``
with only strings, numbers, lists, dicts and tensors, so it loads with ``weights_only=True``
(no pickled code is ever executed). Writes are atomic: a temporary file, then ``os.replace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from multiscale.atomic import atomic_write
from multiscale.models.potential import EquivariantPotential

FORMAT = "multiscale.EquivariantPotential"
FORMAT_VERSION = 1

#: checkpoint format tag → model class. A model class registered here has a ``config`` with
#: ``to_dict()``, a ``CONFIG_CLASS`` with ``from_dict``, and is built as
#: ``cls(types, cutoff, dtype=..., **other_options)``.
MODEL_FORMATS = {FORMAT: EquivariantPotential}


def register_model_format(name: str, cls) -> None:
    """Let :func:`load_model` rebuild ``cls`` from checkpoints tagged ``name``."""
    MODEL_FORMATS[name] = cls


def _format_of(model) -> str:
    for name, cls in MODEL_FORMATS.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered multiscale model class")


def atomic_torch_save(obj: Any, path: Union[str, Path]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def model_state(model, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The checkpoint dictionary of ``model`` (what :func:`save_model` writes)."""
    return {
        "format": _format_of(model),
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }


def with_dtype(model, dtype: str):
    """A copy of ``model`` computing in ``dtype`` ("float32" or "float64"), e.g. a float64 copy of a
    float32 model for finite differences of its energy. The original is left untouched."""
    state = model_state(model)
    state["config"] = {**state["config"], "dtype": str(dtype)}
    return model_from_state(state)


def save_model(model, path: Union[str, Path], metadata: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` (hyper-parameters + weights) to ``path`` atomically."""
    atomic_torch_save(model_state(model, metadata), path)


def model_from_state(state: Dict[str, Any], map_location: Union[str, torch.device] = "cpu"):
    """Rebuild a model from a checkpoint dictionary (see :func:`model_state`)."""
    if not isinstance(state, dict) or state.get("format") not in MODEL_FORMATS:
        raise ValueError(f"not a multiscale model checkpoint (expected one of the formats {sorted(MODEL_FORMATS)})")
    cls = MODEL_FORMATS[state["format"]]
    if int(state.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"checkpoint format_version {state['format_version']} is newer than this multiscale "
            f"understands ({FORMAT_VERSION}); upgrade multiscale"
        )
    config = cls.CONFIG_CLASS.from_dict(dict(state["config"]))
    options = config.to_dict()
    model = cls(options.pop("types"), options.pop("cutoff"), dtype=options.pop("dtype"), **options)
    model.load_state_dict(state["state_dict"], strict=True)
    return model.to(map_location)


def load_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu"):
    """Load a model written by :func:`save_model` (``torch.load(..., weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path}; train one with protocols/train_potential.py or save_model()")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return model_from_state(state, map_location)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
