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
from multiscale.models import registry

FORMAT = "multiscale.EquivariantPotential"  # the equivariant family's tag (kept for old imports)
#: 2: the weights carry the cutoff they were trained with (``*.cutoff_nm``); version 1 still loads
FORMAT_VERSION = 2


def _format_of(model) -> str:
    return registry.family_of(model).checkpoint_format


def register_model_format(name: str, cls) -> None:
    """Let :func:`load_model` rebuild ``cls`` from checkpoints tagged ``name`` (a family named
    after the tag; new families call :func:`multiscale.models.registry.register_family`)."""
    registry.register_family(name, cls, name)


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


class CheckpointError(ValueError):
    """A file is not a valid, complete multiscale model checkpoint, or its contents disagree."""


#: state-dict keys added after format version 1, with how to fill them from the configuration
_ADDED_BUFFERS = ("radial_basis.cutoff_nm", "descriptor.cutoff_nm")


def _inferred_fields(state_dict: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Configuration fields that the weights themselves fix (for naming a mismatch)."""
    inferred: Dict[str, Any] = {}
    shift = state_dict.get("readout.shift")
    if isinstance(shift, torch.Tensor) and shift.dim() == 1:
        inferred["types (count)"] = int(shift.shape[0])
    frequencies = state_dict.get("radial_basis.frequencies")
    if isinstance(frequencies, torch.Tensor) and frequencies.dim() == 1:
        inferred["num_basis"] = int(frequencies.shape[0])
    trunk = sorted(k for k in state_dict if k.startswith("radial.trunk.") and k.endswith(".weight"))
    if trunk:
        inferred["radial_layers"] = len(trunk)
        inferred["radial_hidden"] = int(state_dict[trunk[0]].shape[0])
    layers = {k.split(".")[1] for k in state_dict if k.startswith("layers.")}
    if layers:
        inferred["num_layers"] = len(layers)
    embedding = state_dict.get("embedding.linear.weight")
    if isinstance(embedding, torch.Tensor) and "types (count)" in inferred and inferred["types (count)"] > 0:
        inferred["channels (scalar)"] = int(embedding.numel()) // inferred["types (count)"]
    return inferred


def _configured_fields(config) -> Dict[str, Any]:
    values = config.to_dict()
    out: Dict[str, Any] = {"types (count)": len(values.get("types", []))}
    for name in ("num_basis", "radial_layers", "radial_hidden", "num_layers"):
        if name in values:
            out[name] = values[name]
    if "channels" in values and not values.get("hidden_irreps"):
        out["channels (scalar)"] = values["channels"]
    return out


def _check_weights_match(model, state_dict: Dict[str, torch.Tensor], config) -> None:
    """Refuse weights that the configuration cannot hold, naming the fields that disagree."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or wrong_shape):
        return
    inferred, configured = _inferred_fields(state_dict), _configured_fields(config)
    fields = [
        f"{name}: {configured[name]} in the configuration but {inferred[name]} in the weights"
        for name in inferred if name in configured and configured[name] != inferred[name]
    ]
    details = []
    if wrong_shape:
        k = wrong_shape[0]
        got = tuple(state_dict[k].shape) if isinstance(state_dict[k], torch.Tensor) else type(state_dict[k]).__name__
        details.append(f"tensor {k!r} has shape {got} in the file, {tuple(expected[k].shape)} in the configured model")
    if missing:
        details.append(f"{len(missing)} tensor(s) missing, e.g. {missing[0]!r}")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]!r}")
    what = "; ".join(fields) if fields else "; ".join(details)
    raise CheckpointError(
        f"the stored configuration does not match the stored weights ({what}); the configuration was edited "
        "after saving, or the weights come from another model. Use the checkpoint as training wrote it"
    )


def model_from_state(state: Dict[str, Any], map_location: Union[str, torch.device] = "cpu"):
    """Rebuild a model from a checkpoint dictionary (see :func:`model_state`), checking that it is
    complete, that its configuration holds its weights, that the weights are finite, and that the
    cutoff the weights were trained with is the configured one."""
    if isinstance(state, dict) and state.get("format") == "multiscale.TrainingState":
        raise CheckpointError(
            "this is a training-state checkpoint (checkpoint.pt, for --resume), not a model; load the model.ckpt "
            "written next to it"
        )
    formats = registry.checkpoint_formats()
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise CheckpointError(
            f"not a multiscale model checkpoint (expected one of the formats {sorted(formats)})"
        )
    cls = formats[state["format"]]
    version = state.get("format_version", -1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"the checkpoint's format_version is {version!r}, not a version number; the file is damaged")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format_version {version} is newer than this multiscale "
            f"understands ({FORMAT_VERSION}); upgrade multiscale"
        )
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("state_dict"), dict):
        raise CheckpointError("the checkpoint lacks its configuration or its weights; the file is incomplete")
    try:
        config = cls.CONFIG_CLASS.from_dict(dict(state["config"]))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"the stored configuration is invalid: {err}") from None
    weights = dict(state["state_dict"])
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"weight {key!r} is a {type(value).__name__}, not a tensor; the file is damaged")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"weight tensor {key!r} contains NaN or Inf; the model diverged before it was saved or the file is "
                "damaged. Use an earlier checkpoint, or retrain with a lower learning rate"
            )
    if hasattr(cls, "from_config"):  # families built from parts (HybridPotential)
        model = cls.from_config(config)
    else:
        options = config.to_dict()
        model = cls(options.pop("types"), options.pop("cutoff"), dtype=options.pop("dtype"), **options)
    expected = model.state_dict()
    for key in _ADDED_BUFFERS:  # checkpoints written before the cutoff was saved with the weights
        if key in expected and key not in weights and version < 2:
            weights[key] = expected[key].clone()
    _check_weights_match(model, weights, config)
    model.load_state_dict(weights, strict=True)
    for key in _ADDED_BUFFERS:
        if key in weights:
            stored = float(weights[key])
            if abs(stored - float(config.cutoff)) > 1e-6 * max(abs(stored), 1.0):
                raise CheckpointError(
                    f"the stored configuration says cutoff={config.cutoff:g} nm but the weights were trained with a "
                    f"radial basis ending at {stored:g} nm; a model cannot change its cutoff after training. "
                    "Restore the configuration's cutoff, or train a model at the new cutoff"
                )
    return model.to(map_location)


def load_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu"):
    """Load a model written by :func:`save_model` (``torch.load(..., weights_only=True)``: no
    pickled code runs). A file that is empty, truncated, damaged or of another kind, or whose
    contents disagree, raises :class:`CheckpointError` (a ValueError) naming the file and what
    is wrong."""
    path = Path(path)
    if path.is_dir() and (path / "model.ckpt").is_file():
        path = path / "model.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"no model checkpoint at {path}; train one with protocols/train_potential.py or save_model()")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a multiscale model checkpoint; the write was interrupted or the file was truncated")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a damaged file)
        # torch's own message for such files suggests weights_only=False, which would execute code
        # from the file: never pass that on
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        reason = type(err).__name__ if "weights_only" in str(err) or len(first) > 200 else first
        raise CheckpointError(
            f"{path} is not a valid or complete multiscale model checkpoint ({reason}); it may be truncated (an "
            "interrupted copy or download), damaged, or another kind of file. Use a checkpoint written by "
            "save_model() or by a training run (model.ckpt)"
        ) from None
    try:
        return model_from_state(state, map_location)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
