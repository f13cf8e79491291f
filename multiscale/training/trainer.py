"""Trainer: AdamW + LR schedule + EMA + clipping + early stopping, checkpointed every epoch.

Files in ``out_dir``:

* ``checkpoint.pt``: the full training state (model, EMA, optimiser, scheduler, epoch, history,
  best score), written atomically after every epoch; ``fit(..., resume=True)`` continues from it,
  also after kill -9, and the log records that it resumed.
* ``model.ckpt``: the best model so far (EMA weights) by validation loss, loadable with
  :func:`multiscale.models.load_model`, written atomically whenever validation improves.
* ``log.csv``: one row per epoch (rewritten atomically).
* ``training.log``: human-readable log lines (appended).

Determinism: weights are initialised by the caller under ``torch.manual_seed(seed)``; the
mini-batch order of epoch k comes from a generator seeded with (seed, k), so a resumed run sees
exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm import tqdm

from multiscale.atomic import atomic_write_text
from multiscale.models.io import atomic_torch_save, model_state, save_model
from multiscale.models.potential import EquivariantPotential
from multiscale.training.batch import Graph, collate, predict
from multiscale.training import distributed
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import EnergyForceLoss
from multiscale.training.metrics import evaluate

CHECKPOINT_FORMAT = "multiscale.TrainingState"
#: trainer settings that may change when a run is resumed: they bound this run, not the fit
RESUMABLE_TRAINER_CHANGES = ("epochs", "max_time", "device", "early_stopping_patience")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no CUDA device; use device='cpu' or 'auto'")
    return torch.device(name)


class ExponentialMovingAverage:
    """Shadow copy of the parameters, θ̄ ← d·θ̄ + (1−d)·θ, with the usual warm-up
    d_eff = min(d, (1 + n)/(10 + n)) so early averages are not dominated by the initial weights."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for name, p in model.named_parameters():
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module):
        """Temporarily load the averaged weights into ``model``."""
        if self.decay == 0.0:
            yield model
            return
        saved = {name: p.detach().clone() for name, p in model.named_parameters()}
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.shadow[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in model.named_parameters():
                    p.copy_(saved[name])

    def state_dict(self):
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state, device) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.to(device) for k, v in state["shadow"].items()}


@dataclass
class TrainingResult:
    best_epoch: int
    best_valid_loss: float
    epochs_run: int
    stop_reason: str
    resumed_from_epoch: Optional[int]
    history: List[Dict[str, float]] = field(default_factory=list)


def write_csv_atomic(path: Path, rows: Sequence[Dict[str, float]]) -> None:
    if not rows:
        return
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class Trainer:
    """Fits a model to graphs with a loss; see the module docstring for files and guarantees."""

    def __init__(
        self,
        model: EquivariantPotential,
        loss: EnergyForceLoss,
        config: TrainerConfig,
        out_dir,
        *,
        progress: bool = True,
        log: Optional[Callable[[str], None]] = None,
    ):
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.dtype = model.dtype
        self.loss = loss
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self._external_log = log
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        if config.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                factor=config.plateau_factor,
                patience=config.plateau_patience,
                min_lr=config.learning_rate * config.min_lr_factor,
            )
        elif config.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=config.epochs, eta_min=config.learning_rate * config.min_lr_factor
            )
        else:
            self.scheduler = None
        self.ema = ExponentialMovingAverage(self.model, config.ema_decay)

    # ------------------------------------------------------------------ logging and state
    def log(self, message: str) -> None:
        if not distributed.is_main_process():
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.out_dir / "training.log", "a") as handle:
            handle.write(f"[{stamp}] {message}\n")
        if self._external_log is not None:
            self._external_log(message)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    def _state(self, epoch: int, best: Dict, history: List[Dict]) -> Dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": model_state(self.model),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "best": best,
            "history": history,
            "trainer_config": self.config.to_dict(),
            "loss_config": dataclasses.asdict(self.loss.config),
        }

    def _load(self) -> Dict:
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (torch raises many kinds for a damaged file)
            raise ValueError(
                f"{self.checkpoint_path} is not a valid or complete training checkpoint ({type(err).__name__}); "
                "it is damaged or truncated. Delete it to train from scratch (without --resume), or use a new output folder"
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.checkpoint_path} is not a multiscale training checkpoint")
        self._check_same_settings(state)
        weights = dict(state["model"]["state_dict"])
        for key, value in self.model.state_dict().items():  # checkpoints from before a buffer existed
            if key.endswith("cutoff_nm") and key not in weights:
                weights[key] = value
        self.model.load_state_dict(weights)
        self.model.to(self.device)
        self.ema.load_state_dict(state["ema"], self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        return state

    def _check_same_settings(self, state: Dict) -> None:
        """Refuse to resume a run made with other settings, listing every difference: resuming
        would silently keep the old ones (the optimizer state, the weights) under the new labels."""
        changes = []
        stored_model = dict(state.get("model", {}).get("config", {}))
        current_model = self.model.config.to_dict()
        for key in sorted(set(stored_model) | set(current_model)):
            if stored_model.get(key) != current_model.get(key):
                changes.append(f"model.{key}: {stored_model.get(key)!r} -> {current_model.get(key)!r}")
        if state.get("model", {}).get("format") not in (None, model_state(self.model)["format"]):
            changes.append(f"model family: {state['model']['format']} -> {model_state(self.model)['format']}")
        stored_trainer = dict(state.get("trainer_config", {}))
        current_trainer = self.config.to_dict()
        for key in sorted(set(stored_trainer) | set(current_trainer)):
            if key not in RESUMABLE_TRAINER_CHANGES and stored_trainer.get(key) != current_trainer.get(key):
                changes.append(f"trainer.{key}: {stored_trainer.get(key)!r} -> {current_trainer.get(key)!r}")
        stored_loss = state.get("loss_config")
        current_loss = dataclasses.asdict(self.loss.config)
        if stored_loss is not None:
            for key in sorted(set(stored_loss) | set(current_loss)):
                if stored_loss.get(key) != current_loss.get(key):
                    changes.append(f"loss.{key}: {stored_loss.get(key)!r} -> {current_loss.get(key)!r}")
        if changes:
            raise ValueError(
                f"cannot resume from {self.checkpoint_path}: that run was made with other settings ("
                + "; ".join(changes)
                + "). Resume with the same settings (only "
                + ", ".join(RESUMABLE_TRAINER_CHANGES)
                + " may change), or train into a new output folder. (A different training set changes the "
                "settings derived from it, such as types and avg_num_neighbors.)"
            )

    # ------------------------------------------------------------------ training
    def train_step(self, graphs: Sequence[Graph]) -> Dict[str, float]:
        """One optimiser step on the mini-batch ``graphs`` (also what throughput benchmarks time);
        returns the loss and its terms."""
        return self._step(graphs)

    def _step(self, graphs: Sequence[Graph]) -> Dict[str, float]:
        full = collate(graphs, self.device, self.dtype) if distributed.is_distributed() else None
        graphs = distributed.shard(graphs)
        batch = collate(graphs, self.device, self.dtype)
        self.model.train()
        prediction = predict(
            self.model, batch, forces=True, virial=self.loss.config.uses_virial, create_graph=True
        )
        denominators = None if full is None else self.loss.denominators(full)
        total, terms = self.loss(prediction, batch, denominators)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        distributed.sum_gradients(self.model.parameters())
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        if full is not None:  # report the global loss, identical on every process
            values = distributed.all_sum(torch.stack([total.detach()] + [terms.get(k, total.new_zeros(())) for k in self.loss.TERMS]))
            return {"loss": float(values[0]), **{k: float(v) for k, v in zip(self.loss.TERMS, values[1:]) if k in self._active_terms()}}
        return {"loss": float(total.detach()), **{k: float(v) for k, v in terms.items()}}

    def _active_terms(self):
        return {k for k, on in self.loss.active_terms().items() if on}

    def validation_loss(self, graphs: Sequence[Graph]) -> Dict[str, float]:
        """Loss terms on ``graphs`` with the EMA weights (no parameter update)."""
        totals: Dict[str, float] = {}
        count = 0
        with self.ema.applied(self.model):
            for start in range(0, len(graphs), self.config.batch_size):
                chunk = graphs[start : start + self.config.batch_size]
                batch = collate(chunk, self.device, self.dtype)
                prediction = predict(self.model, batch, forces=True, virial=self.loss.config.uses_virial)
                total, terms = self.loss(prediction, batch)
                for key, value in {"loss": total.detach(), **terms}.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * len(chunk)
                count += len(chunk)
        return {k: v / count for k, v in totals.items()}

    def fit(self, train: Sequence[Graph], valid: Sequence[Graph], *, resume: bool = False) -> TrainingResult:
        if not train:
            raise ValueError("the training set is empty")
        if not valid:
            raise ValueError("the validation set is empty; early stopping and model selection need one")
        cfg = self.config
        started = time.monotonic()
        start_epoch, history = 0, []
        best = {"epoch": -1, "valid_loss": math.inf}
        resumed_from = None
        if resume and self.checkpoint_path.exists():
            state = self._load()
            start_epoch, history, best = state["epoch"] + 1, list(state["history"]), dict(state["best"])
            resumed_from = state["epoch"]
            self.log(f"resumed from checkpoint at epoch {state['epoch']} (best valid loss {best['valid_loss']:.6g} at epoch {best['epoch']})")
        elif resume:
            self.log("--resume given but no checkpoint.pt found; starting from scratch")
        else:
            self.log(f"training {sum(p.numel() for p in self.model.parameters())} parameters on {len(train)} configurations ({self.device})")

        stop_reason = "epochs"
        epoch_seconds, valid_seconds = 0.0, 0.0
        epochs = range(start_epoch, cfg.epochs)
        bar = tqdm(
            epochs, desc="training", unit="epoch", initial=start_epoch, total=cfg.epochs,
            disable=not (self.progress and distributed.is_main_process()),
        )
        for epoch in bar:
            elapsed = time.monotonic() - started
            if cfg.max_time is not None and elapsed + epoch_seconds + valid_seconds > cfg.max_time:
                stop_reason = "max_time"
                break
            t0 = time.monotonic()
            generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(len(train), generator=generator).tolist()
            sums: Dict[str, float] = {}
            steps = 0
            out_of_time = False
            for start in range(0, len(order), cfg.batch_size):
                terms = self._step([train[k] for k in order[start : start + cfg.batch_size]])
                if not math.isfinite(terms["loss"]):
                    raise FloatingPointError(
                        f"the training loss became {terms['loss']} at epoch {epoch} (mini-batch {steps}); the "
                        f"weights diverged. Lower learning_rate (now {cfg.learning_rate:g}) or grad_clip, and check "
                        "the labels for outliers; the last finite state is in checkpoint.pt"
                    )
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                steps += 1
                if cfg.max_time is not None and time.monotonic() - started + valid_seconds > cfg.max_time:
                    out_of_time = True
                    break
            epoch_seconds = time.monotonic() - t0
            t1 = time.monotonic()
            valid_terms = self.validation_loss(list(valid))
            if not math.isfinite(valid_terms["loss"]):
                raise FloatingPointError(
                    f"the validation loss is {valid_terms['loss']} at epoch {epoch} while the training loss is finite; "
                    "check the validation configurations (labels in the wrong unit, NaN) or lower learning_rate"
                )
            valid_seconds = time.monotonic() - t1
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update({f"train_{k}": v / max(steps, 1) for k, v in sums.items()})
            row.update({f"valid_{k}": v for k, v in valid_terms.items()})
            row["seconds"] = epoch_seconds + valid_seconds
            history.append(row)
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(valid_terms["loss"])
            elif self.scheduler is not None:
                self.scheduler.step()
            main = distributed.is_main_process()
            if valid_terms["loss"] < best["valid_loss"]:
                best = {"epoch": epoch, "valid_loss": valid_terms["loss"]}
                if main:
                    with self.ema.applied(self.model):
                        save_model(self.model, self.out_dir / "model.ckpt", metadata={"epoch": epoch, "valid_loss": valid_terms["loss"]})
            if main:
                atomic_torch_save(self._state(epoch, best, history), self.checkpoint_path)
                write_csv_atomic(self.out_dir / "log.csv", history)
            distributed.barrier()
            if cfg.max_time is not None and distributed.is_distributed():
                # every process must stop at the same epoch: agree on the slowest clock
                flag = torch.tensor([1.0 if out_of_time else 0.0])
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                out_of_time = bool(flag.item() > 0)
            bar.set_postfix(train=f"{row.get('train_loss', float('nan')):.4g}", valid=f"{valid_terms['loss']:.4g}", best=best["epoch"])
            if out_of_time:
                stop_reason = "max_time"
                break
            if cfg.early_stopping_patience and epoch - best["epoch"] >= cfg.early_stopping_patience:
                stop_reason = "early_stopping"
                break
        bar.close()
        epochs_run = len(history)
        self.log(f"stopped ({stop_reason}) after epoch {history[-1]['epoch'] if history else start_epoch - 1}; best epoch {best['epoch']} valid loss {best['valid_loss']:.6g}")
        return TrainingResult(best["epoch"], best["valid_loss"], epochs_run, stop_reason, resumed_from, history)

    def evaluate(self, graphs: Sequence[Graph], *, dtype: str = "float32") -> Dict:
        """Metrics of the EMA model on ``graphs`` (see :func:`multiscale.training.metrics.evaluate`)."""
        with self.ema.applied(self.model):
            return evaluate(self.model, graphs, batch_size=self.config.batch_size, device=self.device, dtype=dtype)
