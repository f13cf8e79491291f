"""Settings of an active-learning run (:class:`ActiveLearningConfig`, YAML section
``active_learning``) and the one-file YAML loader of a run."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from multiscale.config import YamlConfig, read_yaml
# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)
from multiscale.openmm.exploration import UNCERTAINTY_KEYS
from multiscale.training.workflow import JobConfig

PathLike = Union[str, "os.PathLike[str]"]



@dataclass
class ActiveLearningConfig(YamlConfig):
    """Settings of :class:`ActiveLearningLoop` (YAML section ``active_learning:``).

    rounds: number of rounds (train → evaluate → explore → pick → label each).
    ensemble_size: members K per round (≥ 2: the uncertainty is their spread); seeds seed..seed+K−1.
    valid_fraction: fraction of the training set each member keeps for model selection (a
        different random split per member); 0 trains every member on the whole set and selects
        on the training loss (for fixed schedules such as ``scheduler: cosine``, tiny data sets).
    md_steps: exploration MD steps per round.
    report_interval: steps between uncertainty reports (candidate frames).
    timestep_fs: MD time step, fs.
    temperature_K: Langevin temperature, K.
    friction_per_ps: Langevin friction, 1/ps.
    picks_per_round: frames labelled per round (fewer when not enough frames are far enough apart).
    min_pick_separation_steps: picks are at least this many MD steps apart.
    uncertainty: frame score, "max" (largest per-particle force uncertainty) or "mean".
    stop_uncertainty_kj_mol_nm: end a trajectory at the first frame whose score exceeds this
        (None: never). Beyond it the MD has left what the ensemble knows and what follows is an
        artefact of the model (with a poor model, molecules dissociate). The exploration then
        restarts from another start configuration until ``md_steps`` steps are used in all.
    pick_max_uncertainty_kj_mol_nm: frames scoring above this are never picked (None: no
        ceiling) — a trust ceiling: such frames are usually unphysical (bonds torn apart, atoms
        overlapping), the reference method may not even converge on them, and their enormous
        forces would dominate the loss.
    max_bond_stretch: end a trajectory when a bond of the Topology is longer than this factor
        times its start length (e.g. 1.5; None: no check), dropping that frame, and restart as for
        ``stop_uncertainty``. The ensemble spread alone can miss a bond breaking.
    seed: seeds members, validation splits, start frames and the Langevin noise.
    restraint_radius_nm: flat-bottom spherical restraint for clusters (None: none), see
        :func:`explore`; restraint_force_constant in kJ/mol/nm²; restraint_center "com" or "origin".
    platform: OpenMM platform of the exploration ("CPU", "Reference", "CUDA", ...).
    backend: ensemble force backend, "torchforce" or "pythonforce".
    """

    SECTION = "active_learning"
    DESCRIPTION = "active-learning option"

    rounds: int = 3
    ensemble_size: int = 3
    valid_fraction: float = 0.15
    md_steps: int = 400
    report_interval: int = 5
    timestep_fs: float = 0.5
    temperature_K: float = 300.0
    friction_per_ps: float = 5.0
    picks_per_round: int = 12
    min_pick_separation_steps: int = 10
    uncertainty: str = "max"
    stop_uncertainty_kj_mol_nm: Optional[float] = None
    pick_max_uncertainty_kj_mol_nm: Optional[float] = None
    max_bond_stretch: Optional[float] = None
    seed: int = 0
    restraint_radius_nm: Optional[float] = None
    restraint_force_constant: float = 5000.0
    restraint_center: str = "com"
    platform: str = "CPU"
    backend: str = "torchforce"

    def __post_init__(self):
        def whole(name, minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"active-learning option {name} must be a whole number >= {minimum}, got {value!r}")
            setattr(self, name, int(value))

        whole("rounds", 0)
        whole("ensemble_size", 2)
        whole("md_steps", 1)
        whole("report_interval", 1)
        whole("picks_per_round", 1)
        whole("min_pick_separation_steps", 0)
        whole("seed", 0)
        if self.report_interval > self.md_steps:
            raise ValueError(
                f"report_interval ({self.report_interval}) exceeds md_steps ({self.md_steps}): no frame would be "
                "reported; lower report_interval or raise md_steps"
            )
        if not 0.0 <= float(self.valid_fraction) < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction!r} (e.g. 0.15, or 0 for no split)")
        self.valid_fraction = float(self.valid_fraction)
        if self.max_bond_stretch is not None:
            stretch = self.max_bond_stretch
            if isinstance(stretch, bool) or not (math.isfinite(float(stretch)) and float(stretch) > 1.0):
                raise ValueError(f"max_bond_stretch must be a factor > 1 (e.g. 1.5) or null, got {stretch!r}")
            self.max_bond_stretch = float(stretch)
        for name in ("stop_uncertainty_kj_mol_nm", "pick_max_uncertainty_kj_mol_nm"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not (math.isfinite(float(value)) and float(value) > 0):
                    raise ValueError(f"{name} must be a positive force uncertainty in kJ/mol/nm or null, got {value!r}")
                setattr(self, name, float(value))
        for name in ("timestep_fs", "temperature_K", "friction_per_ps", "restraint_force_constant"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"active-learning option {name} must be a positive number, got {getattr(self, name)!r}")
            setattr(self, name, value)
        if self.restraint_radius_nm is not None:
            radius = float(self.restraint_radius_nm)
            if not (math.isfinite(radius) and radius > 0):
                raise ValueError(f"restraint_radius_nm must be a positive radius in nm or null, got {self.restraint_radius_nm!r}")
            self.restraint_radius_nm = radius
        if self.restraint_center not in ("com", "origin"):
            raise ValueError(f"restraint_center must be 'com' or 'origin', got {self.restraint_center!r}")
        if self.uncertainty not in UNCERTAINTY_KEYS:
            raise ValueError(f"uncertainty must be one of {sorted(UNCERTAINTY_KEYS)}, got {self.uncertainty!r}")
        if self.backend not in ("torchforce", "pythonforce"):
            raise ValueError(f"backend must be 'torchforce' or 'pythonforce', got {self.backend!r}")


def job_from_dict(data: Dict[str, Any]) -> JobConfig:
    """A :class:`JobConfig` from a mapping with optional ``family``, ``model``, ``trainer``, ``loss``."""
    return JobConfig.from_dict(data)


def load_active_learning_yaml(path: PathLike) -> Tuple[ActiveLearningConfig, JobConfig]:
    """Read one YAML file with sections ``active_learning:`` (:class:`ActiveLearningConfig`) and
    ``family:``, ``model:``, ``trainer:``, ``loss:`` (:class:`JobConfig`); every section is optional
    and unknown sections or keys are refused, naming them."""
    data = read_yaml(path)
    known = {"active_learning", "family", "model", "trainer", "loss"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; use {sorted(known)}")
    try:
        config = ActiveLearningConfig.from_dict(dict(data.get("active_learning") or {}))
        job = job_from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None
    return config, job

