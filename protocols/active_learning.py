#!/usr/bin/env python
"""Active learning on a 4-water cluster: does the held-out error drop round by round?

    python protocols/active_learning.py --out DIR [--rounds R] [--quick] [--resume] [--config job.yaml]

Data (generated once, stored in DIR):
    initial training set  16 configurations of flexible-TIP3P Langevin MD at 300 K (one every
                          100 fs), labelled with GFN2-xTB (tblite)
    held-out set          40 configurations of flexible-TIP3P MD at 350 K (another trajectory,
                          one every 100 fs), labelled with GFN2-xTB; the same set every round and
                          never used for training, model selection or picking

Each round (multiscale.training.active.ActiveLearningLoop): train an ensemble of K members,
evaluate the ensemble-mean force/energy errors on the held-out set, explore 400 steps of 0.5 fs
Langevin MD at 350 K driven by the ensemble-mean force (flat-bottom restraint of radius 0.5 nm
around the centre of mass so that no molecule evaporates), pick the 12 most uncertain frames
(at least 10 steps apart), label them with GFN2-xTB and add them to the training set.
Trust levels: a trajectory whose largest per-atom force uncertainty passes 6000 kJ/mol/nm is
ended (the early, poor models tear O-H bonds apart within ~20 fs) and a new one is started from
another training configuration until the 400 steps are used; frames above 3000 kJ/mol/nm are
not picked (such geometries are unphysical, xTB's SCF often fails on them, and their enormous
forces would swamp the loss). A trajectory in which an O-H bond stretches past 1.5x its start
length is ended as well (the ensemble spread can stay low while an H atom leaves).

--quick: 3 rounds, 3 members of a small model (8 channels, lmax 1), 100 epochs each (about
3-4 minutes on 2 otherwise idle CPU cores); the default: 5 rounds, 4 members of a larger model (16 channels,
lmax 2), 200 epochs each (tens of minutes). --config YAML overrides either preset
(sections active_learning:, family:, model:, trainer:, loss:). --rounds overrides the number of
rounds. --resume continues an interrupted run (or extends a finished one with a larger
--rounds); without --quick/--config it reuses the stored settings.

Writes to DIR:
    rounds.json           per round: n_train, held-out force MAE (kJ/mol/nm, meV/Å), energy MAE
                          (meV/atom), explored-frame uncertainty mean/max (kJ/mol/nm), blow-up, ...
    active_learning.png   held-out error vs round, and uncertainty vs round
    state.json, train_R.npz, held_out.npz, round_R/member_K/, round_R/explore.{csv,npz}
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from multiscale.cli import nonnegative_int, output_dir, run_main  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from openmm import app, unit  # noqa: E402

from multiscale.data import sample_simulation  # noqa: E402
from multiscale.labels import GFN2xTBLabeller  # noqa: E402
from multiscale.training.active import (  # noqa: E402
    SETTINGS_FILE,
    STATE_FILE,
    ActiveLearningConfig,
    ActiveLearningLoop,
    job_from_dict,
)
from systems.water import flexible_water_system, water_cluster  # noqa: E402

NUM_WATERS = 4
TRAIN_CONFIGS, TRAIN_TEMPERATURE_K = 16, 300.0
HELD_OUT_CONFIGS, HELD_OUT_TEMPERATURE_K = 40, 350.0
SAMPLE_EVERY_STEPS = 200  # 100 fs at 0.5 fs
EQUILIBRATION_STEPS = 2000

COMMON = {
    "md_steps": 400,
    "report_interval": 5,
    "timestep_fs": 0.5,
    "temperature_K": HELD_OUT_TEMPERATURE_K,
    "friction_per_ps": 5.0,
    "picks_per_round": 12,
    "min_pick_separation_steps": 10,
    "uncertainty": "max",
    # trust levels (kJ/mol/nm; the reference forces reach ~3000 kJ/mol/nm in this cluster): a
    # trajectory whose largest per-atom uncertainty passes 6000 has left what the ensemble knows
    # (with a poor model an O-H bond tears apart) and is restarted from another configuration;
    # frames above 3000 are not picked (unphysical, xTB's SCF often fails, huge forces)
    "stop_uncertainty_kj_mol_nm": 6000.0,
    "pick_max_uncertainty_kj_mol_nm": 3000.0,
    # the ensemble spread can stay low while an H atom leaves its oxygen (all members agree on a
    # wrong, smooth dissociation; xTB then fails on the radical fragments): a trajectory whose O-H
    # bond passes 1.5x its start length is ended too, and that frame dropped
    "max_bond_stretch": 1.5,
    "restraint_radius_nm": 0.5,
    "restraint_force_constant": 5000.0,
    "restraint_center": "com",
    "platform": "CPU",
    "backend": "torchforce",
}
PRESETS = {
    "quick": {
        "active_learning": dict(COMMON, rounds=3, ensemble_size=3, valid_fraction=0.0),
        "family": "equivariant",
        "model": {"cutoff": 0.45, "channels": 8, "num_layers": 2, "lmax": 1, "radial_hidden": 16, "num_basis": 6},
        "trainer": {
            "epochs": 100, "batch_size": 4, "learning_rate": 0.01, "device": "cpu", "early_stopping_patience": 0,
            "scheduler": "cosine", "max_time": 30.0,
        },
        "loss": {"energy_weight": 1.0, "force_weight": 10.0},
    },
    "thorough": {
        "active_learning": dict(COMMON, rounds=5, ensemble_size=4, valid_fraction=0.0),
        "family": "equivariant",
        "model": {"cutoff": 0.5, "channels": 16, "num_layers": 2, "lmax": 2, "radial_hidden": 32, "num_basis": 8},
        "trainer": {
            "epochs": 200, "batch_size": 4, "learning_rate": 0.01, "device": "auto", "early_stopping_patience": 0,
            "scheduler": "cosine", "max_time": 400.0,
        },
        "loss": {"energy_weight": 1.0, "force_weight": 10.0},
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.add_argument("--rounds", type=int, help="number of rounds (default: 3 with --quick, else 5)")
    p.add_argument("--quick", action="store_true", help="small model, short training, 3 rounds (< ~5 min on 2 cores)")
    p.add_argument("--resume", action="store_true", help="continue the run stored in --out")
    p.add_argument("--config", type=Path, help="YAML overriding the preset: active_learning:, family:, model:, trainer:, loss:")
    p.add_argument("--seed", type=nonnegative_int, default=None, help="seed of the data generation and the loop (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (tblite shares them; default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.config is not None and not args.config.is_file():
        p.error(f"--config {args.config}: no such file")
    if args.rounds is not None and args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def merged_settings(args) -> dict:
    """The preset, overridden section by section (key by key) by --config, then by --rounds/--seed."""
    settings = copy.deepcopy(PRESETS["quick" if args.quick else "thorough"])
    if args.config is not None:
        with open(args.config) as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise SystemExit(f"--config {args.config}: expected a mapping with sections {sorted(settings)}")
        unknown = sorted(set(data) - set(settings))
        if unknown:
            raise SystemExit(f"--config {args.config}: unknown section(s) {unknown}; use {sorted(settings)}")
        for section, value in data.items():
            if section == "family":
                settings["family"] = value
            elif value is not None:
                if not isinstance(value, dict):
                    raise SystemExit(f"--config {args.config}: section {section}: must be a mapping")
                settings[section].update(value)
    if args.rounds is not None:
        settings["active_learning"]["rounds"] = args.rounds
    if args.seed is not None:
        settings["active_learning"]["seed"] = args.seed
    return settings


def stored_settings(out: Path, args) -> dict:
    """Settings of the run stored in ``out`` (for --resume without --quick/--config)."""
    try:
        stored = json.loads((out / SETTINGS_FILE).read_text())
        settings = {"active_learning": dict(stored["config"]), **stored["job"]}
    except (OSError, ValueError, KeyError, TypeError):
        raise SystemExit(f"{out / SETTINGS_FILE} is missing or damaged, so the stored run's settings are unknown; "
                         "pass the run's --config (or --quick) to resume, or start a new --out") from None
    if args.rounds is not None:
        settings["active_learning"]["rounds"] = args.rounds
    if args.seed is not None and args.seed != settings["active_learning"]["seed"]:
        stored = settings["active_learning"]["seed"]
        raise SystemExit(f"--seed {args.seed} differs from the stored run's seed {stored}; drop --seed to resume")
    return settings


def flexible_tip3p_samples(topology, positions, temperature_k: float, count: int, seed: int, progress: bool):
    """``count`` configurations of flexible-TIP3P Langevin MD (0.5 fs), one every SAMPLE_EVERY_STEPS."""
    system = flexible_water_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(temperature_k * unit.kelvin, 5 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed + 1)
    simulation.step(EQUILIBRATION_STEPS)
    return sample_simulation(simulation, count, SAMPLE_EVERY_STEPS, progress=progress)


def make_data(topology, positions, labeller, seed: int, progress: bool):
    sets = {}
    for name, temperature, count, run_seed in (
        ("training", TRAIN_TEMPERATURE_K, TRAIN_CONFIGS, 2 * seed + 1),
        ("held-out", HELD_OUT_TEMPERATURE_K, HELD_OUT_CONFIGS, 2 * seed + 2),
    ):
        t0 = time.monotonic()
        configs = flexible_tip3p_samples(topology, positions, temperature, count, run_seed, progress)
        result = labeller.label(configs)
        for index, message in result.failures:
            print(f"{name} configuration {index} failed to label with GFN2-xTB and is dropped: {message}", flush=True)
        if not result.configurations:
            raise SystemExit(f"no {name} configuration could be labelled with GFN2-xTB; see the messages above")
        # the labels are GFN2-xTB's; the flexible-TIP3P energies and forces of the sampler are replaced
        sets[name] = result.configurations
        print(
            f"{name} set: {len(result.configurations)} configurations of flexible-TIP3P MD at {temperature:.0f} K, "
            f"GFN2-xTB labels ({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
    return sets["training"], sets["held-out"]


def print_table(records) -> None:
    header = (
        f"{'round':>5} {'n_train':>7} {'F MAE kJ/mol/nm':>16} {'F MAE meV/Å':>12} {'E MAE meV/atom':>15} "
        f"{'unc mean':>9} {'unc max':>9} {'blow-up':>7} {'traj':>4} {'picks':>5}"
    )
    print(header)
    print("-" * len(header))
    for rec in records:
        if "force_mae_kj_mol_nm" not in rec:
            continue
        explored = "explore_blew_up" in rec
        print(
            f"{rec['round']:>5} {rec['n_train']:>7} {rec['force_mae_kj_mol_nm']:>16.1f} {rec['force_mae_mev_per_angstrom']:>12.1f} "
            f"{rec['energy_mae_mev_per_atom']:>15.2f} {rec.get('explore_mean_uncertainty_kj_mol_nm', float('nan')):>9.1f} "
            f"{rec.get('explore_max_uncertainty_kj_mol_nm', float('nan')):>9.1f} "
            f"{('yes' if rec['explore_blew_up'] else 'no') if explored else '-':>7} "
            f"{rec.get('explore_trajectories', '-'):>4} {rec.get('n_labelled', '-'):>5}"
        )
    print(
        "F/E MAE: ensemble-mean error on the held-out set; unc: largest per-atom force uncertainty (ensemble spread) "
        "of the explored frames, kJ/mol/nm;\nblow-up: an exploration trajectory hit NaN/an OpenMM error; traj: "
        "trajectories needed for the step budget (>1: some were ended — uncertainty above the limit or a bond "
        "broken — and restarted)"
    )


def plot(records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from multiscale.training.metrics import KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM as TO_MEV

    records = [r for r in records if "force_mae_kj_mol_nm" in r]
    rounds = [r["round"] for r in records]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.3))

    ax1.plot(rounds, [r["force_mae_kj_mol_nm"] for r in records], "o-", label="ensemble mean")
    ax1.plot(rounds, [np.mean(r["member_force_mae_kj_mol_nm"]) for r in records], "s--", alpha=0.6, label="single member (average)")
    for r in records:
        ax1.annotate(f"n={r['n_train']}", (r["round"], r["force_mae_kj_mol_nm"]), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax1.set_ylabel("held-out force MAE (kJ/mol/nm)")
    right = ax1.secondary_yaxis("right", functions=(lambda x: x * TO_MEV, lambda x: x / TO_MEV))
    right.set_ylabel("meV/Å")
    ax1.set_title(f"held-out forces ({records[0].get('n_held_out', '?')} configurations, same every round)" if records else "")
    ax1.legend(fontsize=8)

    ax2.plot(rounds, [r["energy_mae_mev_per_atom"] for r in records], "^-", color="C3")
    ax2.set_ylabel("held-out energy MAE (meV/atom)")
    ax2.set_title("held-out energies (ensemble mean)")

    explored = [r for r in records if "explore_mean_uncertainty_kj_mol_nm" in r]
    xr = [r["round"] for r in explored]
    ax3.plot(xr, [r["explore_mean_uncertainty_kj_mol_nm"] for r in explored], "o-", label="explored frames: mean")
    ax3.plot(xr, [r["explore_max_uncertainty_kj_mol_nm"] for r in explored], "s-", label="explored frames: max")
    ax3.plot(rounds, [r["held_out_mean_max_uncertainty_kj_mol_nm"] for r in records], "^--", label="held-out frames: mean")
    for r in explored:
        if r.get("explore_trajectories", 1) > 1:
            ax3.annotate(
                f"{r['explore_trajectories']} traj.", (r["round"], r["explore_max_uncertainty_kj_mol_nm"]),
                textcoords="offset points", xytext=(5, 4), fontsize=8,
            )
    blown = [r for r in explored if r.get("explore_blew_up")]
    if blown:
        ax3.scatter(
            [r["round"] for r in blown], [r["explore_max_uncertainty_kj_mol_nm"] for r in blown],
            s=140, facecolors="none", edgecolors="red", label="a trajectory blew up",
        )
    ax3.set_yscale("log")
    ax3.set_ylabel("largest per-atom force uncertainty (kJ/mol/nm)")
    ax3.set_title("ensemble uncertainty")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("round")
        ax.set_xticks(rounds)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    resuming = args.resume and (out / STATE_FILE).is_file()
    if not args.resume and (out / STATE_FILE).is_file():
        raise SystemExit(f"{out} already holds an active-learning run; pass --resume to continue it, or choose another --out")
    if resuming and not args.quick and args.config is None:
        settings = stored_settings(out, args)
    else:
        settings = merged_settings(args)
    try:
        config = ActiveLearningConfig.from_dict(dict(settings["active_learning"]))
        job = job_from_dict(settings)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"invalid settings: {err}") from None

    topology, positions = water_cluster(NUM_WATERS)
    labeller = GFN2xTBLabeller(processes=1)
    train = held_out = None
    if not resuming:
        out.mkdir(parents=True, exist_ok=True)
        train, held_out = make_data(topology, positions, labeller, config.seed, progress=not args.no_progress)
    try:
        loop = ActiveLearningLoop(
            out, config, job, labeller, topology, train, held_out, resume=args.resume, progress=not args.no_progress,
            log=lambda message: print(message, flush=True),
        )
    except (ValueError, FileExistsError) as err:  # e.g. resuming with other settings: the message names the fix
        raise SystemExit(str(err)) from None
    records = loop.run()
    print()
    print_table(records)
    plot(records, out / "active_learning.png")
    evaluated = [r for r in records if "force_mae_kj_mol_nm" in r]
    if len(evaluated) >= 2:
        first, last = evaluated[0]["force_mae_kj_mol_nm"], evaluated[-1]["force_mae_kj_mol_nm"]
        steps = [b["force_mae_kj_mol_nm"] < a["force_mae_kj_mol_nm"] for a, b in zip(evaluated, evaluated[1:])]
        trend = "dropped every round" if all(steps) else f"dropped in {sum(steps)} of {len(steps)} rounds"
        print(
            f"held-out force MAE {first:.1f} -> {last:.1f} kJ/mol/nm ({100 * (last - first) / first:+.0f} %), {trend}; "
            f"training set {evaluated[0]['n_train']} -> {evaluated[-1]['n_train']} configurations"
        )
    print(f"wrote {out / 'rounds.json'} and {out / 'active_learning.png'} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
