"""Explored frames on disk (``round_r/explore.npz``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from multiscale.atomic import atomic_write
# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)
from multiscale.openmm.exploration import Exploration

PathLike = Union[str, "os.PathLike[str]"]



def _save_frames(path: Path, frames: Exploration) -> None:
    """Explored frames to ``.npz`` (steps, positions (F, N, 3) nm, uncertainties kJ/mol/nm), atomically."""
    n_atoms = frames[0]["positions"].shape[0] if frames else 0
    arrays = {
        "step": np.array([f["step"] for f in frames], dtype=np.int64),
        "trajectory": np.array([f.get("trajectory", 0) for f in frames], dtype=np.int64),
        "time_ps": np.array([f["time_ps"] for f in frames], dtype=np.float64),
        "positions": np.stack([f["positions"] for f in frames]) if frames else np.zeros((0, n_atoms, 3)),
        "max_force_uncertainty": np.array([f["max_force_uncertainty"] for f in frames], dtype=np.float64),
        "mean_force_uncertainty": np.array([f["mean_force_uncertainty"] for f in frames], dtype=np.float64),
        "energy": np.array([f["energy"] for f in frames], dtype=np.float64),
        "energy_std": np.array([f["energy_std"] for f in frames], dtype=np.float64),
        "has_box": np.array([f["box"] is not None for f in frames], dtype=bool),
        "box": np.stack([f["box"] if f["box"] is not None else np.zeros((3, 3)) for f in frames]) if frames else np.zeros((0, 3, 3)),
        "steps_requested": np.array(frames.steps_requested),
        "steps_completed": np.array(frames.steps_completed),
        "blew_up": np.array(frames.blew_up),
        "error": np.array(frames.error or ""),
        "stopped": np.array(frames.stopped),
        "broken_bond": np.array(frames.broken_bond),
        "stop_reason": np.array(frames.stop_reason or ""),
        "trajectories": np.array(frames.trajectories),
    }
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_frames(path: PathLike) -> Exploration:
    """Frames written by the loop's explore stage (``round_r/explore.npz``), as an :class:`Exploration`."""
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    frames = []
    for i in range(len(d["step"])):
        frames.append(
            {
                "step": int(d["step"][i]),
                "time_ps": float(d["time_ps"][i]),
                "positions": d["positions"][i].copy(),
                "box": d["box"][i].copy() if d["has_box"][i] else None,
                "max_force_uncertainty": float(d["max_force_uncertainty"][i]),
                "mean_force_uncertainty": float(d["mean_force_uncertainty"][i]),
                "energy": float(d["energy"][i]),
                "energy_std": float(d["energy_std"][i]),
                "trajectory": int(d["trajectory"][i]),
            }
        )
    return Exploration(
        frames,
        steps_requested=int(d["steps_requested"]),
        steps_completed=int(d["steps_completed"]),
        blew_up=bool(d["blew_up"]),
        error=str(d["error"]) or None,
        stopped=bool(d["stopped"]),
        broken_bond=bool(d["broken_bond"]),
        stop_reason=str(d["stop_reason"]) or None,
        trajectories=int(d["trajectories"]),
    )

