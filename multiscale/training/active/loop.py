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
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from multiscale.atomic import atomic_write_json
from multiscale.jobs import ResumableJob, Stage
from multiscale.data.configuration import Configuration
from multiscale.data.splits import split_dataset
from multiscale.data.store import load_dataset, save_dataset
from multiscale.models.ensemble import EnsemblePotential
from multiscale.models.io import load_model
# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)
from multiscale.openmm.exploration import UNCERTAINTY_KEYS, Exploration
from multiscale.training.config import TrainerConfig
from multiscale.training.workflow import JobConfig, fit_potential

PathLike = Union[str, "os.PathLike[str]"]

from multiscale.training.active.config import ActiveLearningConfig
from multiscale.training.active.evaluation import evaluate_ensemble
from multiscale.training.active.exploring import explore_round
from multiscale.training.active.frames import load_frames
from multiscale.training.active.selection import select_most_uncertain


STATE_FORMAT = "multiscale.ActiveLearningState"
STATE_FORMAT_VERSION = 2
#: a summary of the run's progress, rewritten after every stage (the stage markers of the
#: :class:`~multiscale.jobs.ResumableJob` in ``.stages/`` are what a resumed run trusts)
STATE_FILE = "state.json"
#: the settings fingerprint (active-learning settings, member job, model types)
SETTINGS_FILE = "settings.json"
ROUNDS_FILE = "rounds.json"
HELD_OUT_FILE = "held_out.npz"
#: stages of a round, in order; ``state["stage"]`` is the last one completed
STAGES = ("trained", "evaluated", "explored", "labelled")
#: settings that may differ when a run is resumed (everything else must match the stored run)
RESUMABLE_CHANGES = ("rounds",)


def _name(r: int, stage: str) -> str:
    """The runner's name of ``stage`` of round ``r`` (its marker: ``.stages/round_r.stage.done``)."""
    return f"round_{r}.{stage}"


# ---------------------------------------------------------------------------------- config
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
            if not (self.out / SETTINGS_FILE).is_file():
                raise ValueError(
                    f"{self.out} holds an active-learning run without {SETTINGS_FILE} (made by an older multiscale, or "
                    "the file was deleted), so its settings cannot be checked; start a new output directory"
                )
            model_types = self._stored_types()
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
        self.types = list(model_types)
        # the one resumable-job runner: settings fingerprint (only the number of rounds may change)
        # and an atomic completion marker per stage of every round
        self.runner = ResumableJob(
            self.out,
            {"config": config.to_dict(), "job": job.to_dict(), "types": self.types},
            self._stages(config.rounds),
            extendable=[f"config.{name}" for name in RESUMABLE_CHANGES],
            settings_file=SETTINGS_FILE,
            what="active-learning run",
        )
        if self.resumed:
            self.runner.begin()  # refuses other settings, naming each difference
            self.held_out = load_dataset(self.out / HELD_OUT_FILE)
            self.initial = load_dataset(self.out / "train_0.npz")
            self._check_resume(train, held_out)
            self.state = self._progress()
            self.train = load_dataset(self.out / self.state["train_file"])
            self._save_state()
            self.log(
                f"resuming {self.out}: round {self.state['round']}, last completed stage "
                f"{self.state['stage'] or '(none)'}; {len(self.train)} training configurations"
            )
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            save_dataset(self.out / HELD_OUT_FILE, held_out)
            save_dataset(self.out / "train_0.npz", train)
            self.train, self.held_out, self.initial = train, held_out, list(train)
            self.runner.restart()
            self.state = self._progress()
            self._save_state()
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

    def _stored_types(self) -> List[str]:
        path = self.out / SETTINGS_FILE
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return [str(t) for t in stored["types"]]
        except (ValueError, KeyError, TypeError):
            raise ValueError(
                f"{path} is damaged (not the JSON this loop writes); it is written atomically, so it was edited or is "
                "not ours: start a new output directory"
            ) from None

    def _stages(self, rounds: int) -> List[Stage]:
        stages: List[Stage] = []
        for r in range(int(rounds)):
            stages += [Stage(_name(r, f"member_{k}"), (f"round_{r}/member_{k}/model.ckpt",))
                       for k in range(self.config.ensemble_size)]
            stages += [Stage(_name(r, "trained")), Stage(_name(r, "evaluated")),
                       Stage(_name(r, "explored"), (f"round_{r}/explore.npz",)),
                       Stage(_name(r, "labelled"), (f"train_{r + 1}.npz",))]
        return stages

    def _round_stages(self, r: int) -> List[str]:
        return [_name(r, f"member_{k}") for k in range(self.config.ensemble_size)] + [_name(r, s) for s in STAGES]

    def _progress(self) -> Dict[str, Any]:
        """The run's state, rebuilt from the stage markers and the results stored with them."""
        done = self.runner.is_done
        r = 0
        while _name(r, "labelled") in self.runner.stages and done(_name(r, "labelled")):
            r += 1
        records: List[Dict[str, Any]] = []
        for q in range(r + 1):
            names = self._round_stages(q)
            if any(name not in self.runner.stages for name in names):
                break
            record: Dict[str, Any] = {"round": q}
            for stage in names:
                if not done(stage):
                    continue
                result = dict(self.runner.result(stage))
                members = result.pop("members", None)
                record.update(result)
                if members:
                    record.setdefault("members", {}).update(members)
            if len(record) > 1 or q < r:
                records.append(record)
        stage = None
        for name in STAGES[:-1]:
            if _name(r, name) in self.runner.stages and done(_name(r, name)):
                stage = name
        members_done = [k for k in range(self.config.ensemble_size)
                        if _name(r, f"member_{k}") in self.runner.stages and done(_name(r, f"member_{k}"))]
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_FORMAT_VERSION,
            "round": r,
            "stage": stage,
            "members_done": members_done,
            "train_file": f"train_{r}.npz",
            "initial_train_file": "train_0.npz",
            "held_out_file": HELD_OUT_FILE,
            "types": self.types,
            "config": self.config.to_dict(),
            "job": self.job.to_dict(),
            "rounds": records,
        }

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

    def _complete(self, r: int, stage: str, result: Dict[str, Any]) -> None:
        """Stage ``stage`` of round ``r`` is done: its marker (with ``result``, merged into the
        round's record) is written atomically after its outputs, then the state summary."""
        self._record(r).update(result)
        self.runner.complete(_name(r, stage), result)
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
            started = time.monotonic()
            model, result, _ = fit_potential(
                fit, valid, member_dir, self._member_job(k), types=self.types, resume=resume, progress=False, log=None
            )
            members.append(model)
            summary = {
                "n_fit": len(fit),
                "n_valid": len(valid),
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
                "stop_reason": result.stop_reason,
                "best_valid_loss": result.best_valid_loss,
                "seconds": time.monotonic() - started,
            }
            self.runner.complete(_name(r, f"member_{k}"), {"n_train": len(self.train), "members": {str(k): summary}})
            record.setdefault("members", {})[str(k)] = summary
            self.state["members_done"] = sorted(set(self.state["members_done"]) | {k})
            self._save_state()
            bar.update(1)
        seconds = sum(float(m.get("seconds", 0.0)) for m in record.get("members", {}).values())
        self._ensemble = EnsemblePotential(members).eval()
        self._complete(r, "trained", {"n_train": len(self.train), "train_seconds": seconds})

    def _load_ensemble(self, r: int) -> EnsemblePotential:
        if self._ensemble is None:
            paths = [self.round_dir(r) / f"member_{k}" / "model.ckpt" for k in range(self.config.ensemble_size)]
            self._ensemble = EnsemblePotential([load_model(p) for p in paths]).eval()
        return self._ensemble

    def _evaluate(self, r: int) -> None:
        ensemble = self._load_ensemble(r)
        metrics = evaluate_ensemble(ensemble, self.held_out)
        self._complete(r, "evaluated", metrics)

    def _explore(self, r: int) -> None:
        frames, summary = explore_round(
            self._load_ensemble(r), self.topology, self.initial, self.particle_types, self.config, r,
            self.round_dir(r), self.log, masses=self.masses,
        )
        self._frames = frames
        self._complete(r, "explored", summary)

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
        summary = (
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
        grown = self.train + labelled
        summary["n_train_after"] = len(grown)
        name = f"train_{r + 1}.npz"
        save_dataset(self.out / name, grown)
        # the stage marker is the commit point: a crash before it re-runs this stage
        record.update(summary)
        self.runner.complete(_name(r, "labelled"), summary)
        self.train = grown
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
        self.runner.add_stages(self._stages(total_rounds))
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

