#!/usr/bin/env python
"""Train an equivariant potential on reference energies and forces.

    python protocols/train_potential.py --train FILE [--valid FILE] [--test FILE] --out DIR
        [--cutoff NM] [--max-time SECONDS] [--epochs N] [--ensemble K] [--seed S] [--resume]
        [--config job.yaml] [--batch-size B] [--lr LR] [--force-only] [--device cpu|cuda|auto]

Multi-process (data-parallel; gloo on CPU, nccl on GPU):
    torchrun --standalone --nproc_per_node 2 protocols/train_potential.py --train FILE --out DIR

Input: extended XYZ in ASE units (Å, eV, eV/Å; converted to nm and kJ/mol on reading) or the
binary .npz store. Without --valid/--test the --train set is split 80/10/10 (seeded).

Writes to DIR:
    model.ckpt      best model (EMA weights, by validation loss): multiscale.models.load_model,
                    multiscale.openmm.torch_force
    metrics.json    train/valid/test metrics in OpenMM units and in meV/atom, meV/Å; settings
    log.csv         one row per epoch (of member 0 with --ensemble)
    parity.png      test-set parity plots of energies and forces
    checkpoint.pt   training state; --resume continues from it (also after kill -9)
    ensemble/member_K/...  with --ensemble K > 1: one directory per member; model.ckpt is member 0
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.jobs import ResumableJob  # noqa: E402
from multiscale.cli import existing_file, nonnegative_int, output_dir, positive_float, positive_int, run_main  # noqa: E402
from multiscale.units import check_cutoff_nm  # noqa: E402
from multiscale.data import read_configurations, split_dataset  # noqa: E402
from multiscale.training import build_graphs, distributed, evaluate, parity_plot  # noqa: E402
from multiscale.training.trainer import RESUMABLE_TRAINER_CHANGES, resolve_device  # noqa: E402
from multiscale.training.workflow import FAMILIES, JobConfig, fit_potential, remaining, types_of  # noqa: E402

#: seconds kept aside from --max-time for the final test evaluation and writing outputs
FINAL_RESERVE_S = 15.0
#: settings a --resume may change (they bound this run, not the fit)
RESUMABLE_SETTINGS = tuple(f"trainer.{name}" for name in RESUMABLE_TRAINER_CHANGES)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes: the data's identity, wherever the file lies."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, type=existing_file, help="training configurations (.xyz/.extxyz in ASE units, or .npz)")
    p.add_argument("--valid", type=existing_file, help="validation configurations (default: split from --train)")
    p.add_argument("--test", type=existing_file, help="test configurations (default: split from --train)")
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.add_argument("--cutoff", type=positive_float, help="cutoff in nm (default 0.5, or the config file's)")
    p.add_argument("--max-time", type=positive_float, help="wall-clock budget of the whole run in seconds")
    p.add_argument("--epochs", type=positive_int, help="maximum epochs (default 500)")
    p.add_argument("--ensemble", type=positive_int, default=1, help="train K models with seeds S..S+K-1")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--config", type=existing_file, help="YAML with model:, trainer:, loss: sections")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--force-only", action="store_true", help="fit forces only (force matching)")
    p.add_argument("--family", choices=sorted(FAMILIES),
                   help="model family (default: the config file's, else equivariant)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.max_time is not None and args.max_time <= FINAL_RESERVE_S:
        p.error(f"--max-time must exceed {FINAL_RESERVE_S:.0f} s (time is kept for the final evaluation)")
    if args.cutoff is not None:
        try:
            check_cutoff_nm(args.cutoff, "--cutoff")
        except ValueError as err:
            p.error(str(err))
    return args


def job_from_args(args) -> JobConfig:
    job = JobConfig.from_yaml(args.config) if args.config else JobConfig()
    if args.cutoff is not None:
        job = JobConfig(model={**job.model, "cutoff": args.cutoff}, trainer=job.trainer, loss=job.loss, family=job.family)
    trainer = job.trainer.to_dict()
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("learning_rate", args.lr), ("device", args.device)):
        if value is not None:
            trainer[key] = value
    trainer["seed"] = args.seed
    job.trainer = type(job.trainer).from_dict(trainer)
    if args.force_only:
        job.loss = type(job.loss).from_dict({**job.loss.to_dict(), "force_only": True})
    if args.family is not None:
        job = JobConfig(model=job.model, trainer=job.trainer, loss=job.loss, family=args.family)
    return job


def main(argv=None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    deadline = None if args.max_time is None else started + args.max_time - FINAL_RESERVE_S
    job = job_from_args(args)  # every setting is checked before the output folder is touched
    if args.resume and not (args.out / "checkpoint.pt").exists() and not (args.out / "ensemble").exists():
        print(f"--resume: no checkpoint.pt in {args.out} yet; starting from scratch", flush=True)
    # Under torchrun (WORLD_SIZE > 1) every process joins the group; rank 0 writes the outputs.
    distributed.init_from_environment(str(resolve_device(job.trainer.device)))
    main_process = distributed.is_main_process()

    train = read_configurations(args.train)
    if args.valid is None or args.test is None:
        split_train, split_valid, split_test = split_dataset(train, (0.8, 0.1, 0.1), seed=args.seed)
        train = split_train
        valid = read_configurations(args.valid) if args.valid else split_valid
        test = read_configurations(args.test) if args.test else split_test
    else:
        valid, test = read_configurations(args.valid), read_configurations(args.test)
    types = types_of(train, valid, test)
    if main_process:
        print(f"{len(train)} train / {len(valid)} valid / {len(test)} test configurations; types {types}", flush=True)
    # The run's settings, stored in OUT/settings.json: --resume refuses a folder made with other
    # settings (listing them; each member's trainer checks its own checkpoint the same way), a
    # fresh run starts the folder over. The data enter by content, not by path.
    settings = {
        "family": job.family, "model": {**job.model, "types": types}, "trainer": job.trainer.to_dict(),
        "loss": job.loss.to_dict(), "ensemble": args.ensemble, "seed": args.seed,
        "data": {name: file_digest(path) for name, path in (("train", args.train), ("valid", args.valid), ("test", args.test))
                 if path is not None},
    }
    run = ResumableJob(args.out, settings, extendable=RESUMABLE_SETTINGS, what="training run")
    if main_process:
        run.begin() if args.resume else run.restart()

    members = []
    for k in range(args.ensemble):
        member_dir = args.out if args.ensemble == 1 else args.out / "ensemble" / f"member_{k}"
        left = remaining(deadline)
        budget = None if left is None else left / (args.ensemble - k)
        if budget is not None and budget < 1.0:
            raise ValueError(f"--max-time is exhausted before ensemble member {k}; give more time or fewer members")
        member_job = JobConfig(model=dict(job.model), trainer=job.trainer, loss=job.loss, family=job.family)
        options = member_job.trainer.to_dict()
        options.update(seed=args.seed + k, max_time=budget)
        member_job.trainer = type(job.trainer).from_dict(options)
        model, result, trainer = fit_potential(
            train, valid, member_dir, member_job, types=types, resume=args.resume,
            progress=not args.no_progress, log=(lambda m: print(m, flush=True)) if main_process else None,
        )
        members.append((member_dir, model, result))
    if not main_process:
        return 0
    if args.ensemble > 1:
        for name in ("model.ckpt", "log.csv"):
            shutil.copyfile(members[0][0] / name, args.out / f".{name}.tmp")
            os.replace(args.out / f".{name}.tmp", args.out / name)

    model = members[0][1]
    metrics = {}
    results = {}
    for name, configs in (("train", train), ("valid", valid), ("test", test)):
        if configs:
            results[name] = evaluate(model, build_graphs(configs, model.type_names, model.cutoff), batch_size=16)
            metrics[name] = results[name]["metrics"]
    if "test" in results:
        parity_plot(results["test"], args.out / "parity.png", title="test set")
    summary = {
        "metrics": metrics,
        "units": {"energy": "kJ/mol per atom (and meV/atom)", "forces": "kJ/mol/nm (and meV/Å)",
                  "charges": "e", "dipole": "e·nm (and debye)"},
        "stop_reason": [m[2].stop_reason for m in members],
        "best_epoch": [m[2].best_epoch for m in members],
        "resumed_from_epoch": [m[2].resumed_from_epoch for m in members],
        "ensemble": [str(m[0]) for m in members] if args.ensemble > 1 else None,
        "types": types,
        "job": job.to_dict(),
        "model": model.config.to_dict(),
        "wall_time_s": time.monotonic() - started,
        "inputs": {"train": str(args.train), "valid": str(args.valid), "test": str(args.test)},
    }
    atomic_write_json(args.out / "metrics.json", summary)
    test_metrics = metrics.get("test", {})
    print(
        f"done in {summary['wall_time_s']:.0f} s: test energy MAE {test_metrics.get('energy_mae_mev_per_atom', float('nan')):.2f} meV/atom, "
        f"force MAE {test_metrics.get('force_mae_mev_per_angstrom', float('nan')):.1f} meV/Å → {args.out / 'model.ckpt'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
