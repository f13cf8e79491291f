"""Active learning with an ensemble: train, explore with ML MD, pick the most uncertain frames,
label them, add them to the training set, repeat.

One *round* ``r`` of :class:`ActiveLearningLoop`:

1. **train** K members (``ensemble_size``) on the current training set with
   :func:`multiscale.training.workflow.fit_potential`, member ``k`` with seed ``seed + k``, into
   ``out/round_r/member_k`` (``model.ckpt`` etc.; ``load_ensemble(out/round_r)`` loads them);
   each member holds out its own random ``valid_fraction`` of the training set for model
   selection (a different split per member, which also decorrelates the members);
2. **evaluate** the ensemble-mean energy and forces on a fixed held-out set (the same set every
   round, never used for training, selection or picking);
3. **explore**: Langevin MD driven by the ensemble-mean force (:func:`explore`), starting from a
   configuration of the *initial* training set drawn with ``(seed, r)``; a trajectory that passes
   ``stop_uncertainty_kj_mol_nm``, breaks a bond (``max_bond_stretch``) or blows up is ended and
   a new one started from another initial configuration, until ``md_steps`` steps are used in all;
4. **pick** the ``picks_per_round`` reported frames with the largest force uncertainty (not above
   ``pick_max_uncertainty_kj_mol_nm``), at least ``min_pick_separation_steps`` apart within a
   trajectory (:func:`select_most_uncertain`);
5. **label** them with the labeller (any object with ``.label(configs) -> LabelResult``);
   failures are logged and recorded, and skipped; the labelled picks are appended to the
   training set.

State (``out/state.json``, written atomically after every stage) records the round, the last
completed stage, the members trained so far and the current training-set file
(``out/train_r.npz``, :func:`multiscale.data.save_dataset`); ``out/rounds.json`` holds the
per-round metrics. ``ActiveLearningLoop(..., resume=True)`` continues from the last completed
stage (a member whose training was interrupted continues from its ``checkpoint.pt``).

Uncertainty: the per-particle force uncertainty of :meth:`EnsemblePotential.compute`,
sqrt(mean over members |F_m,i − F̄_i|²) in kJ/mol/nm; a frame's score is its maximum over
particles (``uncertainty: max``) or its mean (``uncertainty: mean``).

Units: positions nm, energies kJ/mol, forces and uncertainties kJ/mol/nm (meV/Å also reported),
temperature K, time step fs, friction 1/ps, restraint force constant kJ/mol/nm².
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from multiscale.atomic import atomic_write, atomic_write_json
from multiscale.config import YamlConfig, read_yaml
from multiscale.data.configuration import Configuration
from multiscale.data.splits import split_dataset
from multiscale.data.store import load_dataset, save_dataset
from multiscale.models.ensemble import EnsemblePotential
from multiscale.models.io import load_model
# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)
from multiscale.openmm.exploration import UNCERTAINTY_KEYS, Exploration, explore, flat_bottom_restraint  # noqa: F401
from multiscale.training.batch import build_graphs
from multiscale.training.config import TrainerConfig
from multiscale.training.metrics import KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM, KJ_PER_MOL_TO_MEV, evaluate
from multiscale.training.workflow import JobConfig, fit_potential

PathLike = Union[str, "os.PathLike[str]"]

STATE_FORMAT = "multiscale.ActiveLearningState"
STATE_FORMAT_VERSION = 1
STATE_FILE = "state.json"
ROUNDS_FILE = "rounds.json"
HELD_OUT_FILE = "held_out.npz"
#: stages of a round, in order; ``state["stage"]`` is the last one completed
STAGES = ("trained", "evaluated", "explored", "labelled")
#: settings that may differ when a run is resumed (everything else must match the stored run)
RESUMABLE_CHANGES = ("rounds",)


# ---------------------------------------------------------------------------------- config
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


def select_most_uncertain(
    frames: Sequence[Dict[str, Any]],
    n: int,
    min_separation_steps: int = 0,
    key: str = "max_force_uncertainty",
    max_uncertainty: Optional[float] = None,
) -> List[int]:
    """Indices of (at most) ``n`` frames with the largest ``frame[key]``, greedily, in order of
    decreasing uncertainty: a frame is taken only if its ``step`` is at least
    ``min_separation_steps`` away from every frame already taken from the same trajectory
    (``frame["trajectory"]``, default 0), so near-duplicates of a taken frame are skipped. Ties
    keep the earlier frame first. Frames with a non-finite uncertainty, or one above
    ``max_uncertainty`` (a trust ceiling, None: none), are never taken. Fewer than ``n`` indices
    come back when too few frames qualify.
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")
    if isinstance(min_separation_steps, bool) or int(min_separation_steps) != min_separation_steps or min_separation_steps < 0:
        raise ValueError(f"min_separation_steps must be a whole number >= 0, got {min_separation_steps!r}")
    scores = []
    for index, frame in enumerate(frames):
        if key not in frame or "step" not in frame:
            raise KeyError(f"frame {index} has no {key!r} or 'step' entry; frames come from explore() (keys {sorted(frame)})")
        value = float(frame[key])
        if math.isfinite(value) and (max_uncertainty is None or value <= max_uncertainty):
            scores.append((value, index))
    order = sorted(scores, key=lambda item: (-item[0], item[1]))
    chosen: List[int] = []
    taken: List[Tuple[Any, int]] = []
    for _, index in order:
        if len(chosen) >= n:
            break
        step, trajectory = int(frames[index]["step"]), frames[index].get("trajectory", 0)
        if all(t != trajectory or abs(step - other) >= min_separation_steps for t, other in taken):
            chosen.append(index)
            taken.append((trajectory, step))
    return chosen


# ---------------------------------------------------------------------------------- evaluation
def evaluate_ensemble(ensemble: EnsemblePotential, configs: Sequence[Configuration]) -> Dict[str, Any]:
    """Ensemble-mean errors on labelled configurations, plus each member's own force MAE.

    Returns force MAE/RMSE (kJ/mol/nm and meV/Å, over all force components), energy MAE per atom
    (kJ/mol/atom and meV/atom), the members' force MAEs and the mean over configurations of the
    largest per-particle force uncertainty (kJ/mol/nm).
    """
    if not configs:
        raise ValueError("the held-out set is empty; give at least one labelled configuration")
    e_err, f_err, unc = [], [], []
    for k, config in enumerate(configs):
        if config.forces is None or config.energy is None:
            raise ValueError(f"held-out configuration {k} has no energy or forces; label the held-out set first")
        out = ensemble.compute(config.positions, config.types, config.box)
        f_err.append((out["forces"].double().cpu().numpy() - config.forces).ravel())
        e_err.append((float(out["energy"]) - config.energy) / config.num_particles)
        unc.append(float(out["max_force_uncertainty"]))
    f_err = np.concatenate(f_err)
    e_err = np.asarray(e_err)
    graphs = build_graphs(list(configs), ensemble.type_names, ensemble.cutoff)
    members = [evaluate(m, graphs)["metrics"]["force_mae_kj_mol_nm"] for m in ensemble.members]
    force_mae = float(np.abs(f_err).mean())
    force_rmse = float(np.sqrt((f_err**2).mean()))
    energy_mae = float(np.abs(e_err).mean())
    return {
        "n_held_out": len(configs),
        "force_mae_kj_mol_nm": force_mae,
        "force_mae_mev_per_angstrom": force_mae * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM,
        "force_rmse_kj_mol_nm": force_rmse,
        "force_rmse_mev_per_angstrom": force_rmse * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM,
        "energy_mae_kj_mol_per_atom": energy_mae,
        "energy_mae_mev_per_atom": energy_mae * KJ_PER_MOL_TO_MEV,
        "member_force_mae_kj_mol_nm": [float(v) for v in members],
        "held_out_mean_max_uncertainty_kj_mol_nm": float(np.mean(unc)),
    }


# ---------------------------------------------------------------------------------- files
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


# ---------------------------------------------------------------------------------- the loop
class ActiveLearningLoop:
    """Rounds of train → evaluate → explore → pick → label (module docstring), resumable.

    Parameters
    ----------
    out_dir: output directory (``state.json``, ``rounds.json``, ``train_r.npz``,
        ``held_out.npz``, ``round_r/member_k/``, ``round_r/explore_t.csv`` (one per trajectory)
        and ``round_r/explore.npz`` (all frames, :func:`load_frames`)).
    config: :class:`ActiveLearningConfig`.
    job: :class:`JobConfig` for every member (its ``trainer.seed`` is replaced by seed + k).
    labeller: any object with ``.label(configs) -> LabelResult`` (e.g. ``GFN2xTBLabeller``).
    topology: OpenMM Topology of the explored system (masses from its elements unless
        ``masses`` is given).
    train: the initial labelled training set (same particles, in the Topology's order).
    held_out: the labelled held-out set, fixed for all rounds.
    resume: continue the run stored in ``out_dir``. ``train``/``held_out`` may then be omitted
        (the stored ones are used); when given they must equal the stored ones. Only
        ``config.rounds`` may differ from the stored run.
    particle_types: type per atom (default: element symbols of the Topology).
    types: model type list (default: sorted types of the initial training set).
    progress: a tqdm bar over the stages. log: called with each log line (default ``print``).

    Without ``resume``, an ``out_dir`` that already holds a run is refused.
    """

    def __init__(
        self,
        out_dir: PathLike,
        config: ActiveLearningConfig,
        job: JobConfig,
        labeller,
        topology,
        train: Optional[Sequence[Configuration]] = None,
        held_out: Optional[Sequence[Configuration]] = None,
        *,
        resume: bool = False,
        particle_types: Optional[Sequence[str]] = None,
        types: Optional[Sequence[str]] = None,
        masses: Optional[Sequence[float]] = None,
        progress: bool = True,
        log: Optional[Callable[[str], None]] = None,
    ):
        from multiscale.openmm.system import topology_types

        if not isinstance(config, ActiveLearningConfig):
            raise TypeError(f"config must be an ActiveLearningConfig, got {type(config).__name__}")
        if not isinstance(job, JobConfig):
            raise TypeError(f"job must be a JobConfig, got {type(job).__name__}")
        if not callable(getattr(labeller, "label", None)):
            raise TypeError(f"labeller {type(labeller).__name__} has no .label(configs) method returning a LabelResult")
        self.out = Path(out_dir)
        self.config = config
        self.job = job
        self.labeller = labeller
        self.topology = topology
        self.particle_types = list(particle_types) if particle_types is not None else topology_types(topology)
        if len(self.particle_types) != topology.getNumAtoms():
            raise ValueError(
                f"particle-count mismatch: {len(self.particle_types)} particle_types for a Topology of "
                f"{topology.getNumAtoms()} atoms"
            )
        self.masses = masses
        self.progress = progress
        self.log = log if log is not None else (lambda message: print(message, flush=True))

        state_path = self.out / STATE_FILE
        if state_path.is_file() and not resume:
            raise FileExistsError(
                f"{self.out} already holds an active-learning run ({state_path}); pass resume=True (--resume) to "
                "continue it, or choose another output directory"
            )
        self.resumed = bool(resume and state_path.is_file())
        if self.resumed:
            self.state = self._load_state(state_path)
            self._check_resume(train, held_out)
            self.log(
                f"resuming {self.out}: round {self.state['round']}, last completed stage "
                f"{self.state['stage'] or '(none)'}; {len(self.train)} training configurations"
            )
        else:
            if resume:
                self.log(f"resume requested but {state_path} does not exist; starting a new run")
            if train is None or held_out is None:
                raise ValueError("a new active-learning run needs the initial training set (train=...) and the held-out set (held_out=...)")
            train, held_out = list(train), list(held_out)
            self._check_sets(train, held_out)
            model_types = sorted({t for c in train for t in c.types}) if types is None else [str(t) for t in types]
            missing = sorted({t for c in held_out for t in c.types} - set(model_types))
            if missing:
                raise ValueError(
                    f"held-out configurations contain types {missing} that the initial training set lacks; "
                    "add configurations with them to the training set"
                )
            self.out.mkdir(parents=True, exist_ok=True)
            save_dataset(self.out / HELD_OUT_FILE, held_out)
            save_dataset(self.out / "train_0.npz", train)
            self.train, self.held_out, self.initial = train, held_out, list(train)
            self.state = {
                "format": STATE_FORMAT,
                "format_version": STATE_FORMAT_VERSION,
                "round": 0,
                "stage": None,
                "members_done": [],
                "train_file": "train_0.npz",
                "initial_train_file": "train_0.npz",
                "held_out_file": HELD_OUT_FILE,
                "types": model_types,
                "config": config.to_dict(),
                "job": job.to_dict(),
                "rounds": [],
            }
            self._save_state()
        self.types = list(self.state["types"])
        self._ensemble: Optional[EnsemblePotential] = None
        self._frames: Optional[Exploration] = None

    # ------------------------------------------------------------------ state
    def _check_sets(self, train, held_out) -> None:
        n = self.topology.getNumAtoms()
        for name, configs in (("train", train), ("held_out", held_out)):
            if not configs:
                raise ValueError(f"{name} is empty; give at least one labelled configuration")
            for k, c in enumerate(configs):
                if c.num_particles != n or list(c.types) != self.particle_types:
                    raise ValueError(
                        f"{name} configuration {k} does not match the Topology ({c.num_particles} particles, types "
                        f"{c.types[:6]}...; expected {n} particles {self.particle_types[:6]}...): every configuration "
                        "must list the Topology's atoms in its order"
                    )
                if c.energy is None or c.forces is None:
                    raise ValueError(f"{name} configuration {k} has no energy or forces; label it first")

    def _load_state(self, path: Path) -> Dict[str, Any]:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); it is written atomically, so it was edited or is not ours") from None
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path} is not an active-learning state file (format {state.get('format')!r})")
        if int(state.get("format_version", -1)) > STATE_FORMAT_VERSION:
            raise ValueError(
                f"{path}: state format_version {state['format_version']} is newer than this multiscale reads; upgrade multiscale"
            )
        stored = dict(state["config"])
        mine = self.config.to_dict()
        differ = sorted(k for k in set(stored) | set(mine) if k not in RESUMABLE_CHANGES and stored.get(k) != mine.get(k))
        if differ:
            details = ", ".join(f"{k}: stored {stored.get(k)!r} vs given {mine.get(k)!r}" for k in differ)
            raise ValueError(
                f"cannot resume {self.out} with different active-learning settings ({details}); resume with the "
                f"original settings (only {list(RESUMABLE_CHANGES)} may change) or start a new output directory"
            )
        if state["job"] != json.loads(json.dumps(self.job.to_dict())):
            raise ValueError(
                f"cannot resume {self.out} with different model/trainer/loss settings (stored {state['job']}, given "
                f"{self.job.to_dict()}); resume with the original settings or start a new output directory"
            )
        self.train = load_dataset(self.out / state["train_file"])
        self.held_out = load_dataset(self.out / state["held_out_file"])
        self.initial = load_dataset(self.out / state["initial_train_file"])
        state["config"] = mine  # rounds may have changed
        return state

    def _check_resume(self, train, held_out) -> None:
        for name, given, stored in (("train", train, self.initial), ("held_out", held_out, self.held_out)):
            if given is None:
                continue
            given = list(given)
            same = len(given) == len(stored) and all(
                np.allclose(a.positions, b.positions, rtol=0, atol=1e-9) for a, b in zip(given, stored)
            )
            if not same:
                raise ValueError(
                    f"the {name} set given to resume differs from the one stored in {self.out}; resume without "
                    f"passing it (the stored one is used) or start a new output directory"
                )

    def _save_state(self) -> None:
        atomic_write_json(self.out / ROUNDS_FILE, self.state["rounds"])
        atomic_write_json(self.out / STATE_FILE, self.state)

    def _complete(self, stage: str) -> None:
        self.state["stage"] = stage
        self._save_state()

    @property
    def next_round(self) -> int:
        """The round the next :meth:`run` works on (the current one if it is partly done)."""
        return int(self.state["round"])

    @property
    def records(self) -> List[Dict[str, Any]]:
        """Per-round metrics so far (the content of ``rounds.json``)."""
        return self.state["rounds"]

    def round_dir(self, r: int) -> Path:
        return self.out / f"round_{r}"

    def _record(self, r: int) -> Dict[str, Any]:
        while len(self.state["rounds"]) <= r:
            self.state["rounds"].append({"round": len(self.state["rounds"])})
        return self.state["rounds"][r]

    # ------------------------------------------------------------------ stages
    def _member_job(self, k: int) -> JobConfig:
        trainer = self.job.trainer.to_dict()
        trainer["seed"] = self.config.seed + k
        return JobConfig(model=dict(self.job.model), trainer=TrainerConfig.from_dict(trainer), loss=self.job.loss, family=self.job.family)

    def _train(self, r: int, bar) -> None:
        cfg = self.config
        record = self._record(r)
        record["n_train"] = len(self.train)
        started = time.monotonic()
        members = []
        for k in range(cfg.ensemble_size):
            member_dir = self.round_dir(r) / f"member_{k}"
            if k in self.state["members_done"]:
                members.append(load_model(member_dir / "model.ckpt"))
                continue
            bar.set_description(f"round {r}: train member {k + 1}/{cfg.ensemble_size}")
            # each member selects its model on its own random validation split
            if cfg.valid_fraction > 0:
                split_seed = cfg.seed * 1_000_003 + 1000 * r + k
                fit, valid, _ = split_dataset(self.train, (1.0 - cfg.valid_fraction, cfg.valid_fraction, 0.0), seed=split_seed)
            else:  # no split: every member fits everything and is selected on its training loss
                fit, valid = list(self.train), list(self.train)
            # a member interrupted in a resumed run continues from its checkpoint
            resume = self.resumed and (member_dir / "checkpoint.pt").is_file()
            model, result, _ = fit_potential(
                fit, valid, member_dir, self._member_job(k), types=self.types, resume=resume, progress=False, log=None
            )
            members.append(model)
            self.state["members_done"] = sorted(set(self.state["members_done"]) | {k})
            record.setdefault("members", {})[str(k)] = {
                "n_fit": len(fit),
                "n_valid": len(valid),
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "stop_reason": result.stop_reason,
                "best_valid_loss": result.best_valid_loss,
            }
            self._save_state()
            bar.update(1)
        record["train_seconds"] = record.get("train_seconds", 0.0) + time.monotonic() - started
        self._ensemble = EnsemblePotential(members).eval()
        self._complete("trained")

    def _load_ensemble(self, r: int) -> EnsemblePotential:
        if self._ensemble is None:
            paths = [self.round_dir(r) / f"member_{k}" / "model.ckpt" for k in range(self.config.ensemble_size)]
            self._ensemble = EnsemblePotential([load_model(p) for p in paths]).eval()
        return self._ensemble

    def _evaluate(self, r: int) -> None:
        ensemble = self._load_ensemble(r)
        metrics = evaluate_ensemble(ensemble, self.held_out)
        self._record(r).update(metrics)
        self._complete("evaluated")

    def _explore(self, r: int) -> None:
        cfg = self.config
        ensemble = self._load_ensemble(r)
        rng = np.random.default_rng([cfg.seed, r])
        started = time.monotonic()
        frames = Exploration(steps_requested=cfg.md_steps, trajectories=0)
        starts, errors = [], []
        stops = {"uncertainty": 0, "bond": 0}
        empty_in_a_row = 0
        # trajectories until md_steps are used: one, unless one is stopped (uncertainty, broken
        # bond) or blows up
        while frames.steps_completed < cfg.md_steps:
            t = frames.trajectories
            start = int(rng.integers(len(self.initial)))
            messages: List[str] = []
            part = explore(
                ensemble,
                self.topology,
                self.initial[start].positions,
                self.particle_types,
                steps=cfg.md_steps - frames.steps_completed,
                report_interval=cfg.report_interval,
                temperature=cfg.temperature_K,
                timestep_fs=cfg.timestep_fs,
                seed=cfg.seed * 1_000_003 + 1000 * r + t,
                friction_per_ps=cfg.friction_per_ps,
                restraint_radius_nm=cfg.restraint_radius_nm,
                restraint_force_constant=cfg.restraint_force_constant,
                restraint_center=cfg.restraint_center,
                stop_uncertainty=cfg.stop_uncertainty_kj_mol_nm,
                score=cfg.uncertainty,
                max_bond_stretch=cfg.max_bond_stretch,
                masses=self.masses,
                platform=cfg.platform,
                backend=cfg.backend,
                csv_file=self.round_dir(r) / f"explore_{t}.csv",
                log=messages.append,
            )
            for message in messages:
                self.log(f"round {r}, trajectory {t}: {message}")
            for frame in part:
                frame["trajectory"] = t
            frames.extend(part)
            starts.append(start)
            frames.trajectories += 1
            # a trajectory that ends before its first report still uses report_interval steps of
            # the budget, so the loop always ends
            frames.steps_completed += max(part.steps_completed, cfg.report_interval)
            frames.blew_up |= part.blew_up
            frames.stopped |= part.stopped
            frames.broken_bond |= part.broken_bond
            stops["uncertainty"] += part.stopped
            stops["bond"] += part.broken_bond
            if part.broken_bond:
                self.log(f"round {r}, trajectory {t}: ended, {part.stop_reason}")
            if part.error:
                errors.append(f"trajectory {t}: {part.error}")
            empty_in_a_row = 0 if len(part) else empty_in_a_row + 1
            if empty_in_a_row >= 3:
                self.log(
                    f"round {r}: 3 trajectories in a row ended before their first report "
                    f"({part.error or 'uncertainty above the stop limit at once'}); giving up on exploring this round — "
                    "check the model/platform, or raise stop_uncertainty_kj_mol_nm"
                )
                break
        frames.steps_completed = min(frames.steps_completed, cfg.md_steps)
        frames.error = "; ".join(errors) or None
        _save_frames(self.round_dir(r) / "explore.npz", frames)
        key = UNCERTAINTY_KEYS[cfg.uncertainty]
        values = np.array([f[key] for f in frames]) if frames else np.zeros(0)
        self._record(r).update(
            {
                "explore_start_indices": starts,
                "explore_trajectories": frames.trajectories,
                "explore_frames": len(frames),
                "explore_steps": frames.steps_completed,
                "explore_blew_up": frames.blew_up,
                "explore_error": frames.error,
                "explore_stops_uncertainty": stops["uncertainty"],
                "explore_stops_broken_bond": stops["bond"],
                "explore_mean_uncertainty_kj_mol_nm": float(values.mean()) if values.size else float("nan"),
                "explore_max_uncertainty_kj_mol_nm": float(values.max()) if values.size else float("nan"),
                "explore_seconds": time.monotonic() - started,
            }
        )
        self._frames = frames
        self._complete("explored")

    def _label(self, r: int) -> None:
        cfg = self.config
        frames = self._frames if self._frames is not None else load_frames(self.round_dir(r) / "explore.npz")
        key = UNCERTAINTY_KEYS[cfg.uncertainty]
        picked = select_most_uncertain(
            frames, cfg.picks_per_round, cfg.min_pick_separation_steps, key=key, max_uncertainty=cfg.pick_max_uncertainty_kj_mol_nm
        )
        record = self._record(r)
        if len(picked) < cfg.picks_per_round:
            above = 0 if cfg.pick_max_uncertainty_kj_mol_nm is None else sum(
                f[key] > cfg.pick_max_uncertainty_kj_mol_nm for f in frames
            )
            self.log(
                f"round {r}: only {len(picked)} of {cfg.picks_per_round} picks ({len(frames)} frames, {above} above the "
                f"pick ceiling, min_pick_separation_steps {cfg.min_pick_separation_steps}); explore longer, lower the "
                "separation or raise pick_max_uncertainty_kj_mol_nm"
            )
        template = self.initial[0]
        candidates = [
            Configuration(
                types=list(self.particle_types),
                positions=frames[i]["positions"],
                box=frames[i]["box"],
                total_charge=template.total_charge,
                multiplicity=template.multiplicity,
                info={
                    "source": "active_learning", "round": r, "trajectory": frames[i]["trajectory"],
                    "step": frames[i]["step"], "uncertainty_kj_mol_nm": frames[i][key],
                },
            )
            for i in picked
        ]
        started = time.monotonic()
        result = self.labeller.label(candidates) if candidates else None
        labelled = list(result.configurations) if result is not None else []
        failures = [[int(i), str(m)] for i, m in (result.failures if result is not None else [])]
        for index, message in failures:
            self.log(f"round {r}: labelling pick {index} (step {frames[picked[index]]['step']}) failed and is skipped: {message}")
        record.update(
            {
                "picked_steps": [frames[i]["step"] for i in picked],
                "picked_trajectories": [frames[i]["trajectory"] for i in picked],
                "picked_uncertainty_kj_mol_nm": [frames[i][key] for i in picked],
                "n_picked": len(picked),
                "n_labelled": len(labelled),
                "label_failures": failures,
                "label_seconds": time.monotonic() - started,
            }
        )
        self.train = self.train + labelled
        record["n_train_after"] = len(self.train)
        name = f"train_{r + 1}.npz"
        save_dataset(self.out / name, self.train)
        # the state update is the commit point: a crash before it re-runs this stage
        self.state.update(train_file=name, round=r + 1, stage=None, members_done=[])
        self._save_state()
        self._ensemble = None
        self._frames = None

    # ------------------------------------------------------------------ driver
    def run(self, rounds: Optional[int] = None) -> List[Dict[str, Any]]:
        """Run rounds until ``rounds`` (default ``config.rounds``) are complete; returns the
        per-round records (also in ``out/rounds.json``). Already completed rounds and stages are
        skipped, so calling it again, or on a resumed loop, continues where the run stopped."""
        from tqdm.auto import tqdm

        total_rounds = self.config.rounds if rounds is None else int(rounds)
        per_round = self.config.ensemble_size + 3
        done = min(self.next_round, total_rounds) * per_round
        if self.next_round < total_rounds:
            stage = self.state["stage"]
            if stage is None:
                done += len(self.state["members_done"])
            else:
                done += self.config.ensemble_size + STAGES.index(stage)
        total = total_rounds * per_round
        bar = tqdm(total=total, initial=min(done, total), desc="active learning", unit="stage", disable=not self.progress)
        try:
            while self.next_round < total_rounds:
                r = self.next_round
                stage = self.state["stage"]
                if stage is None:
                    self._train(r, bar)
                    stage = "trained"
                if stage == "trained":
                    bar.set_description(f"round {r}: evaluate")
                    self._evaluate(r)
                    bar.update(1)
                    stage = "evaluated"
                    rec = self.records[r]
                    self.log(
                        f"round {r}: n_train {rec['n_train']}, held-out force MAE {rec['force_mae_kj_mol_nm']:.1f} kJ/mol/nm "
                        f"({rec['force_mae_mev_per_angstrom']:.1f} meV/Å), energy MAE {rec['energy_mae_mev_per_atom']:.2f} meV/atom"
                    )
                if stage == "evaluated":
                    bar.set_description(f"round {r}: explore")
                    self._explore(r)
                    bar.update(1)
                    stage = "explored"
                if stage == "explored":
                    bar.set_description(f"round {r}: pick + label")
                    self._label(r)
                    bar.update(1)
                    rec = self.records[r]
                    how = []
                    if rec["explore_trajectories"] > 1:
                        how.append(f"{rec['explore_trajectories']} trajectories")
                    if rec["explore_blew_up"]:
                        how.append("a trajectory blew up")
                    self.log(
                        f"round {r}: explored {rec['explore_frames']} frames ({rec['explore_steps']} steps"
                        f"{', ' + ', '.join(how) if how else ''}), uncertainty mean {rec['explore_mean_uncertainty_kj_mol_nm']:.1f} / "
                        f"max {rec['explore_max_uncertainty_kj_mol_nm']:.1f} kJ/mol/nm; "
                        f"labelled {rec['n_labelled']} of {rec['n_picked']} picks"
                    )
        finally:
            bar.close()
        return self.records


__all__ = [
    "ActiveLearningConfig",
    "ActiveLearningLoop",
    "Exploration",
    "evaluate_ensemble",
    "explore",
    "flat_bottom_restraint",
    "job_from_dict",
    "load_active_learning_yaml",
    "load_frames",
    "select_most_uncertain",
]
