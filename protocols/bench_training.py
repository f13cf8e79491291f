#!/usr/bin/env python
"""Learning curves and training throughput of the two model families on GFN2-xTB data, and a
check of the "good model within 10 minutes" requirement.

    python protocols/bench_training.py --out DIR [--quick] [--threads T] [--systems ...]

Steps (each resumes: re-running with the same --out skips what is done):

1. Data, per system (``water4``: a 4-water cluster, flexible amber14 TIP3P MD at 350 K;
   ``alanine_dipeptide``: ACE-ALA-NME, gas-phase AMBER ff14SB MD at 400 K, see
   ``systems/molecules.py``): LangevinMiddleIntegrator (1/ps friction, 0.5 fs steps) after an
   energy minimisation and 2 ps of equilibration, one configuration every ``--interval`` steps
   (default 50 = 25 fs). The water cluster carries a flat-bottom restraint on the oxygens
   (0.45 nm from their centroid, 2000 kJ/mol/nm²): without it a water evaporates within ~10 ps at
   350 K in some runs. The force fields only sample; every configuration is labelled by GFN2-xTB
   (tblite, inline, one OpenMP thread). Labelled sets are cached as ``DIR/data/{system}.npz``
   (+ ``.xyz`` extended XYZ in ASE units for ``train_potential.py``, + ``.json`` with sampling and
   labelling facts: xTB seconds per configuration, failures by index, reference spread).
2. A fixed split per system (seeded permutation): test, validation, and a training pool whose
   first N entries form the training set of size N (nested subsets).
3. Learning curves: for each system, family (``equivariant`` with JobConfig/ModelConfig defaults;
   ``behler_parrinello`` with BPConfig defaults; cutoff 0.5 nm for both) and N, one fit with
   identical TrainerConfig defaults except a fixed wall-clock budget (``--fit-time``), a large
   epoch limit and device cpu; test-set force and energy MAE. Results go to
   ``DIR/bench_training.json`` after every fit (atomically).
4. Throughput per system and family: training configurations/s from a timed run of the Trainer's
   own optimiser step (batch_size 8: collate, forces by autograd with create_graph, backward,
   clipping, AdamW, EMA; median of 3 repeats after warm-up), evaluation configurations/s
   (``multiscale.training.evaluate``, energies + forces, batch 16) and single-configuration
   latency; the equivariant/BP ratios measured in the same run.
5. The requirement "defaults must give a good model on a few hundred configurations of a small
   molecule or a water cluster within 10 minutes on 2 CPU cores": ``protocols/train_potential.py
   --train DIR/data/water4.xyz --out DIR/default_water --max-time 600`` (a subprocess, defaults
   otherwise; its own 80/10/10 split), with its wall time and test MAEs. "Good" is judged as
   force MAE < 10 % of the RMS reference force component of the test set.
6. ``DIR/learning_curves.png`` (log-log MAE vs N) and a printed summary table.

Defaults: 360 configurations per system; test 60, validation 30; N = 25, 50, 100, 200;
60 s per fit; 600 s for the default run. ``--quick``: 80; 16, 8; N = 10, 20, 40; 15 s; 120 s.

Threads: ``--threads`` (default 1) sets torch's thread count for training and evaluation here and
OMP_NUM_THREADS of the train_potential.py subprocess; 1 keeps the benchmark polite on a shared
machine and makes the 10-minute check conservative (the requirement allows 2 cores; use
``--threads 2`` on an idle machine to measure exactly that). xTB labelling always runs on one
thread (tblite shares torch's OpenMP pool; more threads were 3-100x slower here).

Units: OpenMM units inside (nm, kJ/mol, kJ/mol/nm); errors are reported in meV/Å (forces) and
meV/atom (energies) as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform as host  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Dict, List, Sequence, Tuple  # noqa: E402

import multiscale  # noqa: E402,F401  (imports torch before anything can import openmmtorch)
from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.cli import nonnegative_int, output_dir, run_main  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.data import Configuration, load_dataset, sample_simulation, save_dataset, write_extxyz  # noqa: E402
from multiscale.labels.xtb import GFN2xTBLabeller  # noqa: E402
from multiscale.openmm.exploration import flat_bottom_restraint  # noqa: E402
from multiscale.openmm.system import topology_types  # noqa: E402
from multiscale.training import EnergyForceLoss, Trainer, TrainerConfig, build_graphs, evaluate, loss_scales  # noqa: E402
from multiscale.training.metrics import KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM, KJ_PER_MOL_TO_MEV  # noqa: E402
from multiscale.training.workflow import JobConfig, build_model, fit_potential, types_of  # noqa: E402
from systems.molecules import alanine_dipeptide, alanine_dipeptide_system, backbone_dihedrals  # noqa: E402
from systems.water import flexible_water_system, water_cluster  # noqa: E402

JSON_NAME = "bench_training.json"
PNG_NAME = "learning_curves.png"
FAMILIES = ("equivariant", "behler_parrinello")
CUTOFF_NM = 0.5
FULL = dict(configs=360, test=60, valid=30, sizes=[25, 50, 100, 200], fit_time=60.0, default_time=600.0)
QUICK = dict(configs=80, test=16, valid=8, sizes=[10, 20, 40], fit_time=15.0, default_time=120.0)
TIME_STEP_PS = 0.0005
FRICTION_PER_PS = 1.0
EQUILIBRATION_STEPS = 4000
LABEL_CHUNK = 10
#: "good": force MAE below this fraction of the RMS reference force component
GOOD_FORCE_FRACTION = 0.10
#: water-cluster sampling restraint (flat-bottom, on each O from the O centroid)
CLUSTER_RADIUS_NM = 0.45
CLUSTER_K_KJ_MOL_NM2 = 2000.0
THROUGHPUT_BATCH = 8
THROUGHPUT_STEPS = 10
THROUGHPUT_REPEATS = 3
#: settings that must match for a re-run to reuse DIR's data and fits
RESUME_KEYS = ("configs", "test", "valid", "fit_time", "interval", "seed", "threads")


# --------------------------------------------------------------------------- small helpers
def load_json(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise SystemExit(f"{path} is not valid JSON ({error}); delete it to start this part of the benchmark afresh") from error


def say(message: str) -> None:
    tqdm.write(message)
    sys.stdout.flush()


def cluster_restraint(topology: app.Topology) -> openmm.Force:
    """Flat-bottom restraint of every water oxygen to the centroid of all oxygens (sampling only)."""
    oxygens = [atom.index for atom in topology.atoms() if atom.element is not None and atom.element.symbol == "O"]
    masses = [atom.element.mass.value_in_unit(unit.dalton) if atom.element is not None else 0.0 for atom in topology.atoms()]
    return flat_bottom_restraint(topology.getNumAtoms(), CLUSTER_RADIUS_NM, CLUSTER_K_KJ_MOL_NM2, "com", masses,
                                 particles=oxygens)


def water4_builder() -> Tuple[app.Topology, np.ndarray, openmm.System]:
    topology, positions = water_cluster(4)
    system = flexible_water_system(topology)
    system.addForce(cluster_restraint(topology))
    return topology, positions, system


def dipeptide_builder() -> Tuple[app.Topology, np.ndarray, openmm.System]:
    topology, positions = alanine_dipeptide()
    return topology, positions, alanine_dipeptide_system(topology)


#: system name → (builder, MD temperature in K, description)
SYSTEMS: Dict[str, Tuple[Callable[[], Tuple[app.Topology, np.ndarray, openmm.System]], float, str]] = {
    "water4": (water4_builder, 350.0, "(H2O)4 cluster, flexible amber14 TIP3P + flat-bottom cluster restraint"),
    "alanine_dipeptide": (dipeptide_builder, 400.0, "ACE-ALA-NME, gas-phase AMBER ff14SB (amber14-all.xml)"),
}


# --------------------------------------------------------------------------- data
def reference_spread(configs: Sequence[Configuration]) -> Dict[str, float]:
    """Scale of the labels: RMS force component, and the standard deviation of the energy per atom."""
    forces = np.concatenate([c.forces.ravel() for c in configs])
    energy = np.array([c.energy / c.num_particles for c in configs])
    rms = float(np.sqrt(np.mean(forces**2)))
    std = float(np.std(energy))
    return {
        "force_rms_kj_mol_nm": rms,
        "force_rms_mev_per_angstrom": rms * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM,
        "energy_std_kj_mol_per_atom": std,
        "energy_std_mev_per_atom": std * KJ_PER_MOL_TO_MEV,
    }


def sample_system(name: str, count: int, interval: int, seed: int) -> Tuple[List[Configuration], Dict[str, Any]]:
    """Unlabelled configurations from MD with the system's sampling force field."""
    builder, temperature, description = SYSTEMS[name]
    topology, positions, system = builder()
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, FRICTION_PER_PS / unit.picosecond, TIME_STEP_PS * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)  # 0 would mean "random"
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions * unit.nanometer)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    started = time.monotonic()
    simulation.step(EQUILIBRATION_STEPS)
    sampled = sample_simulation(simulation, count, interval, progress=True)
    types = topology_types(topology)
    configs = [
        Configuration(types=types, positions=c.positions, info={"system": name, "md_step": c.info["step"]})
        for c in sampled
    ]
    meta: Dict[str, Any] = {
        "description": description,
        "atoms": topology.getNumAtoms(),
        "temperature_K": temperature,
        "time_step_ps": TIME_STEP_PS,
        "friction_per_ps": FRICTION_PER_PS,
        "equilibration_steps": EQUILIBRATION_STEPS,
        "interval_steps": interval,
        "sampling_seconds": time.monotonic() - started,
        "md_energy_kj_mol_mean": float(np.mean([c.energy for c in sampled])),
    }
    if name == "alanine_dipeptide":
        angles = np.array([backbone_dihedrals(topology, c.positions) for c in configs])
        meta["phi_range_deg"] = [float(angles[:, 0].min()), float(angles[:, 0].max())]
        meta["psi_range_deg"] = [float(angles[:, 1].min()), float(angles[:, 1].max())]
    if name == "water4":
        radius = [float(np.linalg.norm(c.positions[0::3] - c.positions[0::3].mean(axis=0), axis=1).max()) for c in configs]
        meta["max_oxygen_centroid_distance_nm"] = max(radius)
    return configs, meta


def label(configs: Sequence[Configuration], threads: int) -> Tuple[List[Configuration], List[Tuple[int, str]], float]:
    """GFN2-xTB labels, inline on one OpenMP thread (tblite shares torch's pool); chunked for progress.
    Returns (labelled configurations, failures as (index, message), seconds)."""
    labeller = GFN2xTBLabeller(processes=1)
    labelled: List[Configuration] = []
    failures: List[Tuple[int, str]] = []
    torch.set_num_threads(1)
    started = time.monotonic()
    try:
        with tqdm(total=len(configs), desc="xTB labels", unit="config") as bar:
            for start in range(0, len(configs), LABEL_CHUNK):
                result = labeller.label(configs[start : start + LABEL_CHUNK])
                for config, index in zip(result.configurations, result.indices):
                    info = dict(config.info)
                    info["label_index"] = start + index
                    labelled.append(config.with_labels(info=info))
                failures += [(start + index, message) for index, message in result.failures]
                bar.update(min(LABEL_CHUNK, len(configs) - start))
    finally:
        torch.set_num_threads(threads)
    return labelled, failures, time.monotonic() - started


def dataset(name: str, settings: Dict[str, Any], data_dir: Path) -> Tuple[List[Configuration], Dict[str, Any]]:
    """The labelled set of ``name``: from DIR/data when present, else sampled and labelled now."""
    npz, xyz, meta_path = (data_dir / f"{name}{suffix}" for suffix in (".npz", ".xyz", ".json"))
    if npz.exists() and meta_path.exists():
        meta = load_json(meta_path)
        if meta.get("requested") != settings["configs"] or meta.get("interval_steps") != settings["interval"] or meta.get("seed") != settings["seed"]:
            raise SystemExit(
                f"{npz} holds {meta.get('requested')} configurations sampled every {meta.get('interval_steps')} steps "
                f"with seed {meta.get('seed')}, but this run asks for {settings['configs']}, every {settings['interval']}, "
                f"seed {settings['seed']}; use another --out, or delete {data_dir} to resample"
            )
        configs = load_dataset(npz)
        if not xyz.exists():
            write_extxyz(xyz, configs)
        say(f"[{name}] reusing {len(configs)} labelled configurations from {npz}")
        return configs, meta

    say(f"[{name}] sampling {settings['configs']} configurations by MD ({SYSTEMS[name][2]}, {SYSTEMS[name][1]:.0f} K)")
    raw, meta = sample_system(name, settings["configs"], settings["interval"], settings["seed"])
    configs, failures, seconds = label(raw, settings["threads"])
    meta.update(
        requested=settings["configs"],
        seed=settings["seed"],
        labelled=len(configs),
        labeller="GFN2-xTB/tblite, 1 OpenMP thread, inline",
        xtb_seconds=seconds,
        xtb_seconds_per_config=seconds / len(raw),
        failures=[{"index": i, "message": m} for i, m in failures],
        reference=reference_spread(configs) if configs else {},
    )
    if failures:
        say(f"[{name}] xTB failed on {len(failures)} configuration(s), indices {[i for i, _ in failures]}; they are left out")
    if not configs:
        raise SystemExit(f"[{name}] xTB labelled none of the {len(raw)} configurations; see the failures above")
    save_dataset(npz, configs)
    write_extxyz(xyz, configs)
    atomic_write_json(meta_path, meta)
    say(f"[{name}] {len(configs)} labelled in {seconds:.1f} s ({1000 * meta['xtb_seconds_per_config']:.1f} ms/config); "
        f"RMS force {meta['reference']['force_rms_mev_per_angstrom']:.0f} meV/Å → {npz}")
    return configs, meta


def split(configs: Sequence[Configuration], n_test: int, n_valid: int, seed: int, name: str):
    """(pool, valid, test): a seeded permutation; the pool keeps the permuted order (nested subsets)."""
    if len(configs) < n_test + n_valid + 1:
        raise SystemExit(
            f"[{name}] only {len(configs)} labelled configurations for {n_test} test + {n_valid} validation + a training "
            "pool; ask for more with --configs"
        )
    order = np.random.default_rng(seed).permutation(len(configs))
    test = [configs[i] for i in order[:n_test]]
    valid = [configs[i] for i in order[n_test : n_test + n_valid]]
    pool = [configs[i] for i in order[n_test + n_valid :]]
    return pool, valid, test


# --------------------------------------------------------------------------- fits
def job_for(family: str, fit_time: float, seed: int) -> JobConfig:
    trainer = TrainerConfig(max_time=fit_time, epochs=1_000_000, device="cpu", seed=seed)
    return JobConfig(family=family, model={"cutoff": CUTOFF_NM}, trainer=trainer)


def run_fit(system: str, family: str, size: int, pool, valid, test, types, settings, fit_dir: Path) -> Dict[str, Any]:
    if fit_dir.exists():
        shutil.rmtree(fit_dir)  # an interrupted earlier attempt: start clean
    job = job_for(family, settings["fit_time"], settings["seed"])
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    model, result, _ = fit_potential(pool[:size], valid, fit_dir, job, types=types, progress=False)
    seconds = time.monotonic() - started
    metrics = evaluate(model, build_graphs(test, model.type_names, model.cutoff), batch_size=16)["metrics"]
    steps_per_epoch = -(-size // job.trainer.batch_size)
    return {
        "system": system,
        "family": family,
        "n_train": size,
        "test": metrics,
        "fit_seconds": seconds,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "optimizer_steps": result.epochs_run * steps_per_epoch,
        "train_configs_per_second_incl_validation": size * result.epochs_run / seconds,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "loadavg_1min_before_after": [load_before, os.getloadavg()[0]],
        "dir": str(fit_dir),
    }


# --------------------------------------------------------------------------- throughput
def measure_throughput(family: str, pool, test, types, seed: int, work_dir: Path) -> Dict[str, Any]:
    """Training configurations/s of the Trainer's optimiser step and evaluation speed (weights as
    initialised from the data; speed does not depend on the weight values)."""
    job = job_for(family, 60.0, seed)
    model = build_model(pool, types, job.model, seed, job.loss, family)
    e0 = {t: float(v) for t, v in zip(model.type_names, model.readout.shift.tolist())}
    loss = EnergyForceLoss(job.loss, loss_scales(pool, types, e0))
    trainer = Trainer(model, loss, TrainerConfig(device="cpu", batch_size=THROUGHPUT_BATCH, seed=seed), work_dir, progress=False)
    graphs = build_graphs(pool, types, model.cutoff)
    batches = [graphs[k : k + THROUGHPUT_BATCH] for k in range(0, len(graphs) - THROUGHPUT_BATCH + 1, THROUGHPUT_BATCH)]
    if not batches:
        raise SystemExit(f"the training pool has {len(graphs)} configurations, fewer than one batch of {THROUGHPUT_BATCH}")
    for k in range(3):  # warm-up
        trainer.train_step(batches[k % len(batches)])
    rates = []
    for _ in range(THROUGHPUT_REPEATS):
        t0 = time.perf_counter()
        for k in range(THROUGHPUT_STEPS):
            trainer.train_step(batches[k % len(batches)])
        rates.append(THROUGHPUT_STEPS * THROUGHPUT_BATCH / (time.perf_counter() - t0))

    test_graphs = build_graphs(test, types, model.cutoff)
    evaluate(model, test_graphs[:16], batch_size=16)  # warm-up
    eval_rates = []
    for _ in range(THROUGHPUT_REPEATS):
        t0 = time.perf_counter()
        evaluate(model, test_graphs, batch_size=16)
        eval_rates.append(len(test_graphs) / (time.perf_counter() - t0))
    latencies = []
    for graph in test_graphs[: 3 * THROUGHPUT_REPEATS]:
        t0 = time.perf_counter()
        evaluate(model, [graph], batch_size=1)
        latencies.append(time.perf_counter() - t0)
    return {
        "train_configs_per_second": statistics.median(rates),
        "train_configs_per_second_repeats": rates,
        "eval_configs_per_second": statistics.median(eval_rates),
        "eval_single_config_ms": 1000 * statistics.median(latencies),
        "batch_size": THROUGHPUT_BATCH,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


# --------------------------------------------------------------------------- the 10-minute check
def default_water_run(out: Path, max_time: float, threads: int) -> Dict[str, Any]:
    """protocols/train_potential.py on DIR/data/water4.xyz with all defaults but --max-time."""
    run_dir = out / "default_water"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log_path = out / "default_water.log"
    command = [
        sys.executable, str(REPO_ROOT / "protocols" / "train_potential.py"),
        "--train", str(out / "data" / "water4.xyz"), "--out", str(run_dir), "--max-time", f"{max_time:g}", "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    say(f"[default] {' '.join(command[1:])}  (OMP_NUM_THREADS={threads}; log {log_path})")
    started = time.monotonic()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT).returncode
    wall = time.monotonic() - started
    record: Dict[str, Any] = {"command": command, "threads": threads, "max_time_s": max_time, "wall_seconds": wall, "log": str(log_path)}
    metrics_path = run_dir / "metrics.json"
    if code != 0 or not metrics_path.exists():
        tail = log_path.read_text()[-2000:]
        record["error"] = f"train_potential.py exited with status {code}; see {log_path}. Last output:\n{tail}"
        return record
    summary = load_json(metrics_path)
    test = summary["metrics"]["test"]
    rms = test["force_rms_reference_kj_mol_nm"]
    record.update(
        test=test,
        n_train=summary["metrics"]["train"]["num_configurations"],
        stop_reason=summary["stop_reason"],
        best_epoch=summary["best_epoch"],
        protocol_wall_time_s=summary["wall_time_s"],
        force_mae_fraction_of_rms=test["force_mae_kj_mol_nm"] / rms,
        good=bool(test["force_mae_kj_mol_nm"] < GOOD_FORCE_FRACTION * rms),
        within_10_minutes=bool(wall <= 600.0),
    )
    return record


# --------------------------------------------------------------------------- outputs
def plot(results: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    systems = [s for s in results["settings"]["systems"]]
    fig, axes = plt.subplots(2, len(systems), figsize=(5.0 * len(systems), 8.0), squeeze=False)
    for column, system in enumerate(systems):
        for row, (metric, label) in enumerate((("force_mae_mev_per_angstrom", "test force MAE (meV/Å)"), ("energy_mae_mev_per_atom", "test energy MAE (meV/atom)"))):
            ax = axes[row][column]
            for family, marker in zip(FAMILIES, ("o", "s")):
                fits = sorted((f for f in results["fits"].values() if f["system"] == system and f["family"] == family), key=lambda f: f["n_train"])
                if fits:
                    ax.plot([f["n_train"] for f in fits], [f["test"][metric] for f in fits], marker=marker, label=family)
            reference = results["data"].get(system, {}).get("reference", {})
            if row == 0 and "force_rms_mev_per_angstrom" in reference:
                ax.axhline(GOOD_FORCE_FRACTION * reference["force_rms_mev_per_angstrom"], color="0.5", ls="--", lw=1,
                           label=f"{GOOD_FORCE_FRACTION:.0%} of RMS force")
            ax.set_xscale("log")
            ax.set_yscale("log")
            sizes = sorted({f["n_train"] for f in results["fits"].values() if f["system"] == system})
            if sizes:
                ax.set_xticks(sizes)
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("training configurations N")
            ax.set_ylabel(label)
            ax.set_title(system)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def summary_table(results: Dict[str, Any]) -> str:
    lines = []
    for system in results["settings"]["systems"]:
        data = results["data"].get(system, {})
        ref = data.get("reference", {})
        lines.append(
            f"\n{system}: {data.get('labelled')} configurations, xTB {1000 * data.get('xtb_seconds_per_config', float('nan')):.1f} ms/config, "
            f"{len(data.get('failures', []))} failures; RMS force {ref.get('force_rms_mev_per_angstrom', float('nan')):.0f} meV/Å, "
            f"energy std {ref.get('energy_std_mev_per_atom', float('nan')):.1f} meV/atom"
        )
        lines.append(f"  {'N':>5} | {'force MAE meV/Å':>20} | {'energy MAE meV/atom':>20} | {'epochs':>11}")
        lines.append(f"  {'':>5} | {'equiv':>9}  {'BP':>9} | {'equiv':>9}  {'BP':>9} | {'equiv':>5} {'BP':>5}")
        sizes = sorted({f["n_train"] for f in results["fits"].values() if f["system"] == system})
        for n in sizes:
            fits = {f["family"]: f for f in results["fits"].values() if f["system"] == system and f["n_train"] == n}
            cell = lambda fam, key: f"{fits[fam]['test'][key]:9.2f}" if fam in fits else f"{'-':>9}"  # noqa: E731
            epochs = lambda fam: f"{fits[fam]['epochs_run']:5d}" if fam in fits else f"{'-':>5}"  # noqa: E731
            lines.append(
                f"  {n:5d} | {cell('equivariant', 'force_mae_mev_per_angstrom')}  {cell('behler_parrinello', 'force_mae_mev_per_angstrom')} | "
                f"{cell('equivariant', 'energy_mae_mev_per_atom')}  {cell('behler_parrinello', 'energy_mae_mev_per_atom')} | "
                f"{epochs('equivariant')} {epochs('behler_parrinello')}"
            )
        tp = results["throughput"].get(system)
        if tp and all(f in tp for f in FAMILIES):
            eq, bp = tp["equivariant"], tp["behler_parrinello"]
            lines.append(
                f"  throughput (configs/s, {results['settings']['threads']} thread(s)): train equiv {eq['train_configs_per_second']:.1f}, "
                f"BP {bp['train_configs_per_second']:.1f} (ratio {tp['ratio_train']:.3f}); eval equiv {eq['eval_configs_per_second']:.1f}, "
                f"BP {bp['eval_configs_per_second']:.1f} (ratio {tp['ratio_eval']:.3f}); single config {eq['eval_single_config_ms']:.1f} vs "
                f"{bp['eval_single_config_ms']:.1f} ms"
            )
    default = results.get("default_water")
    if default:
        if "error" in default:
            lines.append(f"\ndefault train_potential.py on water4: FAILED: {default['error']}")
        else:
            t = default["test"]
            lines.append(
                f"\ndefault train_potential.py on water4 (--max-time {default['max_time_s']:g}, {default['threads']} thread(s), "
                f"{default['n_train']} train): wall {default['wall_seconds']:.0f} s, test force MAE "
                f"{t['force_mae_mev_per_angstrom']:.1f} meV/Å = {100 * default['force_mae_fraction_of_rms']:.1f} % of RMS force, "
                f"energy MAE {t['energy_mae_mev_per_atom']:.2f} meV/atom → good (< {GOOD_FORCE_FRACTION:.0%}): {default['good']}, "
                f"within 10 min: {default['within_10_minutes']}"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=output_dir, help="output directory (re-use it to resume)")
    p.add_argument("--quick", action="store_true", help="80 configurations, N = 10/20/40, 15 s fits, 120 s default run")
    p.add_argument("--systems", nargs="+", choices=sorted(SYSTEMS), default=list(SYSTEMS))
    p.add_argument("--configs", type=int, help="configurations sampled per system (default 360; quick 80)")
    p.add_argument("--sizes", type=int, nargs="+", help="training-set sizes (default 25 50 100 200; quick 10 20 40)")
    p.add_argument("--fit-time", type=float, help="wall-clock seconds per fit (default 60; quick 15)")
    p.add_argument("--default-time", type=float, help="--max-time of the train_potential.py run (default 600; quick 120)")
    p.add_argument("--skip-default", action="store_true", help="skip the train_potential.py run")
    p.add_argument("--interval", type=int, default=50, help="MD steps (0.5 fs) between samples")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training/evaluation (xTB always uses 1)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.configs = args.configs if args.configs is not None else preset["configs"]
    args.sizes = sorted(set(args.sizes if args.sizes else preset["sizes"]))
    args.fit_time = args.fit_time if args.fit_time is not None else preset["fit_time"]
    args.default_time = args.default_time if args.default_time is not None else preset["default_time"]
    args.test, args.valid = preset["test"], preset["valid"]
    if args.configs < 1 or args.interval < 1 or args.threads < 1 or min(args.sizes) < 1:
        p.error("--configs, --interval, --threads and --sizes must be positive integers")
    if args.fit_time <= 0:
        p.error("--fit-time must be a positive number of seconds")
    if not args.skip_default and args.default_time <= 15:
        p.error("--default-time must exceed 15 s (train_potential.py keeps 15 s for its final evaluation)")
    if not args.skip_default and "water4" not in args.systems:
        p.error("the default train_potential.py run uses the water4 data; add water4 to --systems or pass --skip-default")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    (out / "data").mkdir(parents=True, exist_ok=True)
    json_path = out / JSON_NAME
    settings = {
        "quick": args.quick, "systems": args.systems, "configs": args.configs, "test": args.test, "valid": args.valid,
        "sizes": args.sizes, "fit_time": args.fit_time, "default_time": args.default_time, "interval": args.interval,
        "threads": args.threads, "seed": args.seed, "cutoff_nm": CUTOFF_NM, "families": list(FAMILIES),
        "trainer": {f: job_for(f, args.fit_time, args.seed).to_dict() for f in FAMILIES},
        "good_force_fraction_of_rms": GOOD_FORCE_FRACTION,
    }
    if json_path.exists():
        results = load_json(json_path)
        old = results.get("settings", {})
        changed = [k for k in RESUME_KEYS if old.get(k) != settings[k]]
        if changed:
            raise SystemExit(
                f"{json_path} was written with different settings ({', '.join(f'{k}: {old.get(k)} → {settings[k]}' for k in changed)}); "
                "its fits cannot be mixed with this run's. Use another --out, or delete the file to redo the fits"
            )
        say(f"resuming {json_path}: {len(results.get('fits', {}))} fit(s) done")
        results["settings"] = settings
    else:
        results = {"settings": settings, "data": {}, "splits": {}, "fits": {}, "throughput": {}}
    results["environment"] = {
        "python": host.python_version(), "torch": torch.__version__, "openmm": openmm.__version__,
        "cpu_count": os.cpu_count(), "machine": host.machine(), "loadavg_at_start": list(os.getloadavg()),
    }
    atomic_write_json(json_path, results)

    # 1-2: data and splits
    sets = {}
    for system in args.systems:
        configs, meta = dataset(system, settings, out / "data")
        results["data"][system] = meta
        pool, valid, test = split(configs, args.test, args.valid, args.seed, system)
        types = types_of(configs)
        sets[system] = (pool, valid, test, types)
        results["splits"][system] = {"pool": len(pool), "valid": len(valid), "test": len(test), "types": types}
        atomic_write_json(json_path, results)

    # 3: learning curves
    plan = []
    for system in args.systems:
        pool = sets[system][0]
        for family in FAMILIES:
            for size in sorted({min(n, len(pool)) for n in args.sizes}):
                plan.append((system, family, size))
    todo = [p for p in plan if f"{p[0]}/{p[1]}/{p[2]}" not in results["fits"]]
    say(f"{len(plan)} fits of {args.fit_time:g} s each ({len(plan) - len(todo)} done already)")
    with tqdm(total=len(plan), initial=len(plan) - len(todo), desc="fits", unit="fit") as bar:
        for system, family, size in todo:
            pool, valid, test, types = sets[system]
            bar.set_postfix_str(f"{system} {family} N={size}")
            record = run_fit(system, family, size, pool, valid, test, types, settings, out / "fits" / system / family / f"N{size}")
            results["fits"][f"{system}/{family}/{size}"] = record
            atomic_write_json(json_path, results)
            t = record["test"]
            say(f"[{system} {family} N={size}] force MAE {t['force_mae_mev_per_angstrom']:.1f} meV/Å, energy MAE "
                f"{t['energy_mae_mev_per_atom']:.2f} meV/atom ({record['epochs_run']} epochs, {record['stop_reason']})")
            bar.update(1)
            plot(results, out / PNG_NAME)

    # 4: throughput
    for system in args.systems:
        pool, _, test, types = sets[system]
        entry = results["throughput"].setdefault(system, {})
        for family in FAMILIES:
            if family not in entry:
                say(f"[{system}] timing {family} training and evaluation")
                entry[family] = measure_throughput(family, pool, test, types, args.seed, out / "throughput" / f"{system}_{family}")
        entry["ratio_train"] = entry["equivariant"]["train_configs_per_second"] / entry["behler_parrinello"]["train_configs_per_second"]
        entry["ratio_eval"] = entry["equivariant"]["eval_configs_per_second"] / entry["behler_parrinello"]["eval_configs_per_second"]
        atomic_write_json(json_path, results)

    # 5: the 10-minute requirement
    failed = False
    if not args.skip_default:
        previous = results.get("default_water")
        if previous and "error" not in previous and previous.get("max_time_s") == args.default_time and (out / "default_water" / "metrics.json").exists():
            say("[default] reusing the earlier train_potential.py run")
        else:
            results["default_water"] = default_water_run(out, args.default_time, args.threads)
            atomic_write_json(json_path, results)
        failed = "error" in results["default_water"]

    # 6: outputs
    results["wall_seconds_this_invocation"] = time.monotonic() - started
    atomic_write_json(json_path, results)
    plot(results, out / PNG_NAME)
    print(summary_table(results), flush=True)
    print(f"\n→ {json_path}, {out / PNG_NAME} ({results['wall_seconds_this_invocation']:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
