#!/usr/bin/env python
"""Hybrid ML/MM MD: alanine dipeptide described by an ML potential in TIP3P water with PME.

    python protocols/hybrid_md.py [--quick] --out DIR [--model PATH]
                                  [--embedding mechanical|electrostatic] [--platform CPU|CUDA]

1. **System**: ACE-ALA-NME (``systems.molecules``) solvated in TIP3P (amber14 for everything), PME
   (cutoff 1.0 nm), X–H bonds constrained, 2 fs steps, Langevin 300 K (1/ps), Monte Carlo
   barostat 1 bar. MM minimisation and NPT equilibration.
2. **Model** (without ``--model``): the dipeptide is sampled in the gas phase with amber14 at 300 K
   and 500 K in each of the C7eq, C5, PII, αR and αL basins (φ/ψ held within ±40° by flat-bottomed
   torsion restraints) and at 400 K over a 60° grid of the whole φ/ψ plane (±30°: the barriers),
   labelled with GFN2-xTB (tblite), split
   80/10/10 and trained with the project's trainer: ``family: equivariant`` for mechanical
   embedding, ``family: hybrid`` (direct Coulomb, charge and dipole terms) for electrostatic
   embedding. Labels (DIR/data.npz) and model (DIR/model/) are cached: a re-run resumes.
3. **Runs**: the ML/MM System (``multiscale.openmm.create_mixed_system``; the dipeptide is the ML
   region) is equilibrated from the MM-equilibrated state, then production; the pure-MM reference
   runs the same length from the same MM-equilibrated state. Both resumable (checkpoints).
4. **NVE**: a short velocity-Verlet segment (1 fs) of the ML/MM System from the end of its
   production, and of the MM System from the end of its own (the control: same platform, same
   precision, same constraints).
5. **Report** (DIR/report.json): ns/day of ML/MM and MM measured here and their ratio; the NVE
   drift (kT/ns/dof); φ/ψ populations (C7eq, C5, αR, αL, other) of both runs; the model's test
   errors. DIR/ also holds hybrid.pdb, hybrid.dcd, mm.pdb, mm.dcd, ramachandran.png,
   energies.png and the energy logs (CSV).

``--quick`` (≤ 15 min on 2 CPU cores): small data and training budget, 20 ps of production (8 ps
with electrostatic embedding, whose ML force is ~3× dearer on CPU): enough to show that the run is
stable and how fast it is, not to converge the φ/ψ populations (barrier crossings take tens of
ps to ns); those need the defaults.
The defaults are the scientific run (2 ns of production each, meant for a GPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402,F401  (before openmm's plugins and openmmtorch)

import openmm  # noqa: E402
from openmm import app, unit  # noqa: E402

from multiscale.analysis.energy import energy_drift  # noqa: E402
from multiscale.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from multiscale.cli import existing_file, output_dir, run_main  # noqa: E402
from multiscale.data import load_dataset, save_dataset, split_dataset  # noqa: E402
from multiscale.jobs import ResumableJob, Stage  # noqa: E402
from multiscale.openmm import create_mixed_system  # noqa: E402
from multiscale.openmm.cg_simulation import CGSimulation  # noqa: E402
from multiscale.openmm.platforms import get_platform  # noqa: E402

TEMPERATURE_K = 300.0
PRESSURE_BAR = 1.0
TIMESTEP_PS = 0.002
FRICTION_PER_PS = 1.0
CUTOFF_NM = 1.0
SAMPLING_TEMPERATURE_K = 500.0
#: (φ, ψ) in degrees of the basins the gas-phase sampling starts from
SAMPLING_STARTS = {"C7eq": (-83.0, 73.0), "C5": (-155.0, 160.0), "PII": (-75.0, 145.0), "alphaR": (-65.0, -40.0),
                   "alphaL": (60.0, 45.0)}
#: φ/ψ regions (degrees, [low, high) on both) whose populations the report compares; ψ ranges may
#: wrap through ±180
BASINS = {
    "C5": {"phi": (-180.0, -120.0), "psi": ((120.0, 180.0), (-180.0, -150.0))},
    "C7eq": {"phi": (-120.0, -30.0), "psi": ((30.0, 180.0), (-180.0, -150.0))},
    "alphaR": {"phi": (-180.0, -30.0), "psi": ((-120.0, 30.0),)},
    "alphaL": {"phi": (30.0, 120.0), "psi": ((-60.0, 90.0),)},
}
EMBEDDINGS = ("mechanical", "electrostatic")
PLATFORMS = ("CPU", "CUDA")


@dataclass
class Settings:
    padding_nm: float
    samples_per_basin: int
    samples_per_grid_point: int
    sample_interval: int
    train_seconds: float
    epochs: int
    mm_equilibration_ps: float
    ml_equilibration_ps: float
    production_ps: float
    nve_ps: float
    report_interval: int
    checkpoint_interval: int
    channels: int
    xtb_processes: int


QUICK = Settings(padding_nm=1.25, samples_per_basin=100, samples_per_grid_point=8, sample_interval=100, train_seconds=270.0, epochs=400,
                 mm_equilibration_ps=10.0, ml_equilibration_ps=2.0, production_ps=20.0, nve_ps=1.0,
                 report_interval=250, checkpoint_interval=2500, channels=16, xtb_processes=2)
FULL = Settings(padding_nm=1.6, samples_per_basin=600, samples_per_grid_point=60, sample_interval=200, train_seconds=3600.0, epochs=3000,
                mm_equilibration_ps=200.0, ml_equilibration_ps=50.0, production_ps=2000.0, nve_ps=10.0,
                report_interval=500, checkpoint_interval=25000, channels=32, xtb_processes=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (≤ 15 min on 2 CPU cores)")
    p.add_argument("--out", type=output_dir, required=True, help="output folder (resumed when re-run)")
    p.add_argument("--model", type=existing_file, help="a trained checkpoint (model.ckpt) to use instead of training one")
    p.add_argument("--embedding", choices=EMBEDDINGS, default="mechanical", help="ML/MM electrostatics (default mechanical)")
    p.add_argument("--platform", choices=PLATFORMS, default="CPU", help="OpenMM platform of the MD runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def check_model(path: Path, embedding: str):
    """Load ``--model`` and refuse one that cannot describe the dipeptide with this embedding."""
    from multiscale.models import load_model

    try:
        model = load_model(path)
    except Exception as error:  # noqa: BLE001 (any unreadable checkpoint is the same input error)
        raise ValueError(f"--model {path} is not a multiscale checkpoint ({error}); pass a model.ckpt written by "
                         "train_potential.py or save_model") from error
    missing = sorted({"C", "H", "N", "O"} - set(model.type_names))
    if missing:
        raise ValueError(f"--model {path} knows types {model.type_names} but the dipeptide needs C, H, N, O (missing {missing})")
    if embedding == "electrostatic" and not getattr(model, "PREDICTS_CHARGES", False):
        raise ValueError(f"--embedding electrostatic needs a model with charges (family hybrid); {path} is a "
                         f"{type(model).__name__}. Use --embedding mechanical")
    return model


# --------------------------------------------------------------------------------------- system
def forcefield() -> app.ForceField:
    return app.ForceField("amber14-all.xml", "amber14/tip3p.xml")


def build_system(out: Path, s: Settings) -> Dict:
    """The solvated dipeptide (``padding`` as OpenMM's Modeller takes it: 1.25 nm gives a ~2.45 nm
    cube, 1.6 nm a ~3.2 nm one, both above twice the 1.0 nm cutoff under NPT)."""
    from systems.molecules import alanine_dipeptide

    top, pos = alanine_dipeptide()
    modeller = app.Modeller(top, pos * unit.nanometer)
    modeller.addSolvent(forcefield(), model="tip3p", padding=s.padding_nm * unit.nanometer)
    text = _pdb_text(modeller.topology, modeller.positions)
    atomic_write_text(out / "solvated.pdb", text)
    return {"atoms": modeller.topology.getNumAtoms(), "waters": modeller.topology.getNumResidues() - 3}


def _pdb_text(topology, positions) -> str:
    import io

    handle = io.StringIO()
    app.PDBFile.writeFile(topology, positions, handle, keepIds=True)
    return handle.getvalue()


def mm_system(topology) -> openmm.System:
    return forcefield().createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=CUTOFF_NM * unit.nanometer,
                                     constraints=app.HBonds, rigidWater=True, ewaldErrorTolerance=5e-4)


def with_barostat(system: openmm.System) -> openmm.System:
    system.addForce(openmm.MonteCarloBarostat(PRESSURE_BAR * unit.bar, TEMPERATURE_K * unit.kelvin, 25))
    return system


def equilibrate(system, topology, positions, box, steps: int, platform: str, seed: int, minimize: bool, progress: bool,
                what: str) -> str:
    """Langevin NPT from ``positions``; returns the final State as XML (positions, velocities, box)."""
    from tqdm import tqdm

    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond,
                                                 TIMESTEP_PS * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform))
    simulation.context.setPeriodicBoxVectors(*box)
    simulation.context.setPositions(positions)
    if minimize:
        simulation.minimizeEnergy(maxIterations=1000)
    simulation.context.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, seed)
    chunk = 250
    for _ in tqdm(range(0, steps, chunk), desc=what, unit="chunk", disable=not progress):
        simulation.step(chunk)
    state = simulation.context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    return openmm.XmlSerializer.serialize(state)


def read_state(path: Path):
    state = openmm.XmlSerializer.deserialize(path.read_text())
    return state.getPositions(asNumpy=True), state.getPeriodicBoxVectors()


# ---------------------------------------------------------------------------------------- model
def restrained_sampling_system(topology, phi_psi_deg, width_deg: float = 40.0) -> openmm.System:
    """The gas-phase sampling System with φ and ψ held near a centre by flat-bottomed torsion
    restraints (free within ±``width_deg``, then 200 kJ/mol/rad²): in vacuum αR and αL are not
    minima, so free MD started there leaves them within picoseconds and the model would never see
    them; and nothing unrestrained at 300–500 K visits the barriers between basins, where a model
    that never saw them invents wells (measured: a quick model without them had a 60 kJ/mol too
    low region at φ −65°, ψ −120°, and ML/MM MD went there)."""
    from systems.molecules import alanine_dipeptide_system

    system = alanine_dipeptide_system(topology)
    index = {(a.residue.index, a.name): a.index for a in topology.atoms()}
    torsions = {"phi": [(0, "C"), (1, "N"), (1, "CA"), (1, "C")], "psi": [(1, "N"), (1, "CA"), (1, "C"), (2, "N")]}
    restraint = openmm.CustomTorsionForce("0.5*k*max(0, abs(d)-width)^2; d = atan2(sin(theta-theta0), cos(theta-theta0))")
    restraint.addGlobalParameter("k", 200.0)
    restraint.addGlobalParameter("width", np.radians(width_deg))
    restraint.addPerTorsionParameter("theta0")
    for name, target in zip(("phi", "psi"), phi_psi_deg):
        restraint.addTorsion(*[index[key] for key in torsions[name]], [np.radians(target)])
    system.addForce(restraint)
    return system


def restrained_samples(phi: float, psi: float, width_deg: float, temperature: float, count: int, interval: int,
                       seed: int, progress: bool):
    """``count`` gas-phase configurations (amber14, Langevin at ``temperature``) with φ/ψ held
    within ±``width_deg`` of (``phi``, ``psi``), after 1 ps away from the built geometry."""
    from multiscale.data import sample_simulation
    from systems.molecules import alanine_dipeptide

    top, pos = alanine_dipeptide(phi, psi)
    integrator = openmm.LangevinMiddleIntegrator(temperature * unit.kelvin, 5.0 / unit.picosecond, 0.0005 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(top, restrained_sampling_system(top, (phi, psi), width_deg), integrator,
                                openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pos)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    simulation.step(2000)
    # labels come from GFN2-xTB, not from this (restrained) System
    return sample_simulation(simulation, count, interval, progress=progress)


def sample_and_label(out: Path, s: Settings, progress: bool) -> Dict:
    """Gas-phase configurations of the dipeptide in every basin (±40°, at 300 K and at
    SAMPLING_TEMPERATURE_K) and over the whole φ/ψ plane (a 60° grid of centres, ±30°, at 400 K:
    the barriers between basins), labelled by GFN2-xTB, written to DIR/data.npz."""
    from multiscale.labels import GFN2xTBLabeller

    configs = []
    for k, (basin, (phi, psi)) in enumerate(SAMPLING_STARTS.items()):
        for temperature in (TEMPERATURE_K, SAMPLING_TEMPERATURE_K):
            seed = 11 + 2 * k + (temperature > TEMPERATURE_K)
            for c in restrained_samples(phi, psi, 40.0, temperature, s.samples_per_basin // 2, s.sample_interval, seed, progress):
                c.info.update(basin=basin, temperature_K=temperature)
                configs.append(c)
    grid = np.arange(-150.0, 180.0, 60.0)
    for k, (phi, psi) in enumerate((a, b) for a in grid for b in grid):
        for c in restrained_samples(phi, psi, 30.0, 400.0, s.samples_per_grid_point, s.sample_interval, 101 + k, False):
            c.info.update(basin=f"grid {phi:g} {psi:g}", temperature_K=400.0)
            configs.append(c)
    labelled = GFN2xTBLabeller(processes=s.xtb_processes).label(configs)
    if len(labelled.failures) > 0.05 * len(configs):
        raise RuntimeError(f"GFN2-xTB failed on {len(labelled.failures)} of {len(configs)} configurations: "
                           f"{labelled.failures[:3]}")
    save_dataset(out / "data.npz", labelled.configurations)
    return {"configurations": len(labelled.configurations), "xtb_failures": len(labelled.failures)}


def training_job(embedding: str, s: Settings):
    from multiscale.training.config import TrainerConfig
    from multiscale.training.loss import LossConfig
    from multiscale.training.workflow import JobConfig

    model = {"cutoff": 0.5, "channels": s.channels, "num_layers": 2, "lmax": 1}
    loss = {}
    if embedding == "electrostatic":
        model["coulomb"] = {"cutoff": 1.0, "method": "direct"}
        loss = {"charge_weight": 1.0, "dipole_weight": 1.0}
    return JobConfig(
        family="hybrid" if embedding == "electrostatic" else "equivariant", model=model,
        trainer=TrainerConfig(epochs=s.epochs, batch_size=8, learning_rate=5e-3, max_time=s.train_seconds, seed=0,
                              device="cpu", early_stopping_patience=80),
        loss=LossConfig(**loss),
    )


def test_errors(model, test) -> Dict[str, float]:
    from multiscale.training.batch import build_graphs
    from multiscale.training.metrics import evaluate

    metrics = evaluate(model, build_graphs(test, model.type_names, model.cutoff), dtype="float64")["metrics"]
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


# ----------------------------------------------------------------------------------------- runs
def production(name: str, system, topology, state_path: Path, out: Path, s: Settings, platform: str, seed: int,
               progress: bool) -> Dict:
    positions, box = read_state(state_path)
    system.setDefaultPeriodicBoxVectors(*box)
    sim = CGSimulation(topology, system, positions.value_in_unit(unit.nanometer), out, name=name,
                       temperature_K=TEMPERATURE_K, friction_per_ps=FRICTION_PER_PS, timestep_ps=TIMESTEP_PS,
                       report_interval=s.report_interval, checkpoint_interval=s.checkpoint_interval,
                       platform=platform, seed=seed, log_energies=True)
    steps = int(round(s.production_ps / TIMESTEP_PS))
    result = sim.run(steps, minimize=False, progress=progress)
    per_day = 86400.0 / 1000.0
    result["ns_per_day"] = result["simulated_ps_per_wall_second"] * per_day
    segments = [v * per_day for v in result.get("segment_ps_per_wall_second", [])]
    if segments:
        result["segment_ns_per_day"] = {"min": min(segments), "median": float(np.median(segments)), "max": max(segments),
                                        "segments": len(segments)}
    return result


def nve_segment(make_system, checkpoint: Path, s: Settings, platform: str, progress: bool, what: str) -> Dict:
    """Velocity Verlet (1 fs) of a System without barostat from the end of its production run
    (``make_system(barostat)`` builds it with or without the barostat; ``checkpoint`` that run's)."""
    from tqdm import tqdm

    system, nve = make_system(True), make_system(False)
    dt = 0.001
    integrator = openmm.VerletIntegrator(dt * unit.picosecond)
    context = openmm.Context(nve, integrator, openmm.Platform.getPlatformByName(platform))
    checkpoint_context = openmm.Context(system, openmm.VerletIntegrator(dt), openmm.Platform.getPlatformByName(platform))
    checkpoint_context.loadCheckpoint(checkpoint.read_bytes())
    state = checkpoint_context.getState(getPositions=True, getVelocities=True)
    del checkpoint_context
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    context.applyConstraints(1e-8)
    context.applyVelocityConstraints(1e-8)
    steps = int(round(s.nve_ps / dt))
    every = 10
    times, totals = [], []
    for _ in tqdm(range(steps // every), desc=f"{what} NVE", unit="x10 steps", disable=not progress):
        integrator.step(every)
        st = context.getState(getEnergy=True)
        times.append(st.getTime().value_in_unit(unit.picosecond))
        totals.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    dof = 3 * nve.getNumParticles() - nve.getNumConstraints() - 3
    return {"timestep_ps": dt, "steps": steps, "platform": platform, "dof": dof,
            "drift_kT_per_ns_per_dof": energy_drift(times, totals, dof, TEMPERATURE_K),
            "total_energy_spread_kj_mol": float(np.ptp(totals)), "times_ps": times, "total_energy_kj_mol": totals}


# --------------------------------------------------------------------------------------- report
def backbone(trajectory_path: Path, pdb_path: Path):
    """(φ, ψ) in degrees of every frame of a DCD (mdtraj)."""
    import mdtraj

    traj = mdtraj.load_dcd(str(trajectory_path), top=str(pdb_path))
    _, phi = mdtraj.compute_phi(traj)
    _, psi = mdtraj.compute_psi(traj)
    return np.degrees(phi[:, 0]), np.degrees(psi[:, 0])


def populations(phi: np.ndarray, psi: np.ndarray) -> Dict[str, float]:
    """Fractions of frames in each :data:`BASINS` region (first match wins), and "other"."""
    taken = np.zeros(phi.shape, bool)
    out = {}
    for name, region in BASINS.items():
        in_phi = (phi >= region["phi"][0]) & (phi < region["phi"][1])
        in_psi = np.zeros(phi.shape, bool)
        for lo, hi in region["psi"]:
            in_psi |= (psi >= lo) & (psi < hi)
        mine = in_phi & in_psi & ~taken
        taken |= mine
        out[name] = float(mine.mean()) if phi.size else float("nan")
    out["other"] = float((~taken).mean()) if phi.size else float("nan")
    return out


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def plot_ramachandran(angles: Dict[str, tuple], pops: Dict[str, Dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, (label, (phi, psi)) in zip(axes, angles.items()):
        ax.hist2d(phi, psi, bins=36, range=[[-180, 180], [-180, 180]], cmap="viridis", cmin=1)
        for name, region in BASINS.items():
            for lo, hi in region["psi"]:
                ax.add_patch(matplotlib.patches.Rectangle((region["phi"][0], lo), region["phi"][1] - region["phi"][0],
                                                          hi - lo, fill=False, ec="0.3", lw=0.8, ls="--"))
            ax.text(region["phi"][0] + 3, region["psi"][0][0] + 4, f"{name} {pops[label][name]:.2f}", color="k", fontsize=8)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xlabel("φ (degrees)")
        ax.set_title(f"{label}: {len(phi)} frames")
    axes[0].set_ylabel("ψ (degrees)")
    fig.tight_layout()
    _save(fig, path)


def plot_energies(out: Path, nve: Dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for name, color in (("hybrid", "tab:blue"), ("mm", "tab:gray")):
        data = np.genfromtxt(out / f"{name}_energies.csv", delimiter=",", names=True)
        if data.size < 2:
            continue
        t = data["time_ps"]
        axes[0].plot(t, data["potential_kj_mol"] - data["potential_kj_mol"][0], color=color, label=name)
        axes[1].plot(t, data["temperature_K"], color=color, label=name)
        axes[2].plot(t, data["volume_nm3"], color=color, label=name)
    axes[0].set_ylabel("E_pot − E_pot(0) (kJ/mol)")
    axes[1].axhline(TEMPERATURE_K, color="k", lw=0.8, ls="--")
    axes[1].set_ylabel("temperature (K)")
    axes[2].set_ylabel("volume (nm³)")
    for ax in axes[:3]:
        ax.set_xlabel("time (ps)")
        ax.legend()
    for name, color in (("hybrid", "tab:blue"), ("mm", "tab:gray")):
        e = np.asarray(nve[name]["total_energy_kj_mol"])
        axes[3].plot(nve[name]["times_ps"], e - e[0], color=color,
                     label=f"{name}: drift {nve[name]['drift_kT_per_ns_per_dof']:.2g} kT/ns/dof")
    axes[3].set_xlabel("time (ps)")
    axes[3].set_ylabel("E_total − E_total(0) (kJ/mol)")
    axes[3].set_title(f"NVE, velocity Verlet {nve['hybrid']['timestep_ps'] * 1000:g} fs")
    axes[3].legend()
    fig.tight_layout()
    _save(fig, path)


# ----------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    s = QUICK if args.quick else FULL
    if args.quick and args.embedding == "electrostatic":
        # its ML force (the cross term's in-model PME over every MM charge) costs ~3x the mechanical
        # one on CPU, so the quick run is shorter to stay within its 15 minutes
        s = replace(s, ml_equilibration_ps=1.0, production_ps=8.0, nve_ps=0.5)
    get_platform(args.platform)  # a missing platform is refused (with how to get it) before any work
    given = check_model(args.model, args.embedding) if args.model else None
    progress = not args.no_progress
    settings = {"quick": bool(args.quick), "embedding": args.embedding, "model": str(args.model) if args.model else None,
                **asdict(s)}
    stages = [Stage("system", ("solvated.pdb",)), Stage("mm_equilibration", ("mm_equilibrated.xml",))]
    if given is None:
        stages += [Stage("label", ("data.npz",)), Stage("train", ("model/model.ckpt",))]
    stages += [Stage("ml_equilibration", ("hybrid_equilibrated.xml",)), Stage("hybrid", ("hybrid.dcd",)),
               Stage("mm", ("mm.dcd",)), Stage("nve", ("nve.json",))]
    # the platform may change between a crash and its resume (checkpoints are platform-specific,
    # so a finished stage is kept and an interrupted one starts on the new platform's terms)
    job = ResumableJob(out, settings, stages, what="hybrid_md job").begin()
    started = time.perf_counter()

    info = job.run("system", lambda: build_system(out, s))
    pdb = app.PDBFile(str(out / "solvated.pdb"))
    topology = pdb.topology
    ml_atoms = [a.index for a in topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")]
    print(f"system: alanine dipeptide (ML, {len(ml_atoms)} atoms) in {info['waters']} TIP3P waters, "
          f"{info['atoms']} atoms", flush=True)

    def mm_equilibrate():
        steps = int(round(s.mm_equilibration_ps / TIMESTEP_PS))
        xml = equilibrate(with_barostat(mm_system(topology)), topology, pdb.positions, topology.getPeriodicBoxVectors(),
                          steps, args.platform, 1, True, progress, "MM equilibration")
        atomic_write_text(out / "mm_equilibrated.xml", xml)
        return {"ps": s.mm_equilibration_ps}

    job.run("mm_equilibration", mm_equilibrate)

    # ---- the model
    from multiscale.models import load_model

    data_info: Dict = {}
    if given is None:
        data_info = job.run("label", lambda: sample_and_label(out, s, progress))
        data = load_dataset(out / "data.npz")
        train, valid, test = split_dataset(data, (0.8, 0.1, 0.1), seed=0)

        def train_model():
            from multiscale.training.workflow import fit_potential

            _, result, _ = fit_potential(train, valid, out / "model", training_job(args.embedding, s), resume=True,
                                         progress=progress, log=lambda m: None)
            return {"epochs": len(result.history), "stop_reason": result.stop_reason}

        data_info["training"] = job.run("train", train_model)
        model = load_model(out / "model" / "model.ckpt")
        errors = test_errors(model, test)
        errors["test_configurations"] = len(test)
        print(f"model: {data_info['configurations']} GFN2-xTB configurations, trained {data_info['training']['epochs']} epochs; "
              f"test energy RMSE {errors.get('energy_rmse_kj_mol_per_atom', float('nan')):.3f} kJ/mol/atom, force RMSE "
              f"{errors.get('force_rmse_kj_mol_nm', float('nan')):.1f} kJ/mol/nm", flush=True)
    else:
        model = given
        errors = {"note": "model given with --model; test errors are those of its own training (its metrics.json)"}

    # ---- ML/MM and MM
    def mixed(barostat: bool = True) -> openmm.System:
        system = create_mixed_system(topology, mm_system(topology), ml_atoms, model, args.embedding)
        return with_barostat(system) if barostat else system

    def ml_equilibrate():
        positions, box = read_state(out / "mm_equilibrated.xml")
        steps = int(round(s.ml_equilibration_ps / TIMESTEP_PS))
        # no minimisation with the ML model: a descent can run into a region the training data never
        # covered (measured: a quick model minimised into a collapse); the MM-equilibrated state is
        # already a thermal structure
        xml = equilibrate(mixed(), topology, positions, box, steps, args.platform, 2, False, progress, "ML/MM equilibration")
        atomic_write_text(out / "hybrid_equilibrated.xml", xml)
        return {"ps": s.ml_equilibration_ps}

    job.run("ml_equilibration", ml_equilibrate)
    hybrid = job.run("hybrid", lambda: production("hybrid", mixed(), topology, out / "hybrid_equilibrated.xml", out, s,
                                                  args.platform, 3, progress))
    print(f"ML/MM production: {s.production_ps:g} ps at {hybrid['ns_per_day']:.2f} ns/day", flush=True)
    mm = job.run("mm", lambda: production("mm", with_barostat(mm_system(topology)), topology, out / "mm_equilibrated.xml",
                                          out, s, args.platform, 3, progress))
    print(f"MM production: {s.production_ps:g} ps at {mm['ns_per_day']:.2f} ns/day", flush=True)

    def run_nve():
        def plain_mm(barostat: bool) -> openmm.System:
            return with_barostat(mm_system(topology)) if barostat else mm_system(topology)

        result = {"hybrid": nve_segment(mixed, out / "hybrid.chk", s, args.platform, progress, "ML/MM"),
                  "mm": nve_segment(plain_mm, out / "mm.chk", s, args.platform, progress, "MM")}
        atomic_write_json(out / "nve.json", result)
        return {run: {k: v for k, v in r.items() if k not in ("times_ps", "total_energy_kj_mol")} for run, r in result.items()}

    nve_info = job.run("nve", run_nve)
    import json

    nve = json.loads((out / "nve.json").read_text())
    print(f"NVE ({nve['hybrid']['steps']} steps of {nve['hybrid']['timestep_ps'] * 1000:g} fs, {args.platform}): drift ML/MM "
          f"{nve['hybrid']['drift_kT_per_ns_per_dof']:.2e}, MM {nve['mm']['drift_kT_per_ns_per_dof']:.2e} kT/ns/dof", flush=True)

    # ---- analysis
    angles = {"ML/MM": backbone(out / "hybrid.dcd", out / "hybrid.pdb"), "MM": backbone(out / "mm.dcd", out / "mm.pdb")}
    pops = {label: populations(*a) for label, a in angles.items()}
    plot_ramachandran(angles, pops, out / "ramachandran.png")
    plot_energies(out, nve, out / "energies.png")
    ratio = hybrid["ns_per_day"] / mm["ns_per_day"]
    report = {
        "settings": settings,
        "system": {**info, "ml_atoms": len(ml_atoms), "temperature_K": TEMPERATURE_K, "pressure_bar": PRESSURE_BAR,
                   "timestep_ps": TIMESTEP_PS, "cutoff_nm": CUTOFF_NM, "constraints": "HBonds", "electrostatics": "PME"},
        "speed": {"platform": args.platform, "hybrid_ns_per_day": hybrid["ns_per_day"], "mm_ns_per_day": mm["ns_per_day"],
                  "hybrid_over_mm": ratio, "slowdown": 1.0 / ratio,
                  "hybrid_segments_ns_per_day": hybrid.get("segment_ns_per_day"),
                  "mm_segments_ns_per_day": mm.get("segment_ns_per_day")},
        "nve": nve_info,
        "populations": pops,
        "basins_deg": BASINS,
        "frames": {label: int(len(a[0])) for label, a in angles.items()},
        "model": {"family": type(model).__name__, "embedding": args.embedding, "test_errors": errors, **data_info},
        "wall_seconds_this_invocation": time.perf_counter() - started,
        "units": {"speed": "ns/day", "drift": "kT/ns/dof", "energy": "kJ/mol", "forces": "kJ/mol/nm"},
    }
    atomic_write_json(out / "report.json", report)
    for label in pops:
        print(f"{label:6s} populations: " + ", ".join(f"{k} {v:.2f}" for k, v in pops[label].items()), flush=True)
    print(f"speed: ML/MM {hybrid['ns_per_day']:.2f} ns/day, MM {mm['ns_per_day']:.2f} ns/day (ratio {ratio:.3f})", flush=True)
    print(f"wrote {out / 'report.json'}, ramachandran.png, energies.png, hybrid.pdb, hybrid.dcd, mm.dcd", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
