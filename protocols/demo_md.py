#!/usr/bin/env python
"""Demo MD: an equivariant ML potential inside an OpenMM water simulation.

Until the polymer coarse-graining main job lands, this is the README's main-job command. It
builds a periodic TIP3P water box, adds the ML potential as a TorchForce (or PythonForce) on a
subset of the waters (the ML/MM pattern), runs Langevin MD, and writes:

    OUT/demo.pdb, OUT/demo.dcd     trajectory (OpenMM reporters)
    OUT/energies.csv               StateDataReporter output
    OUT/energies.png               potential energy (total and ML part) and temperature
    OUT/summary.json               settings, speed (ns/day), energies, drift-free check

The ML model is untrained unless --model points at a checkpoint (see protocols/train_potential.py
once it exists); untrained, it is scaled to a small correction so the run is physically stable.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from multiscale.atomic import atomic_write_json  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.models import EquivariantPotential, load_model  # noqa: E402
from multiscale.openmm import BACKENDS, topology_types, torch_force  # noqa: E402
from systems.water import tip3p_pme_system, water_box  # noqa: E402


def parse_args(argv=None):
    platforms = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--box-nm", type=float, default=1.8, help="cubic water box edge in nm (default 1.8)")
    p.add_argument("--ml-waters", type=int, default=20, help="waters treated by the ML potential (default 20)")
    p.add_argument("--steps", type=int, default=2000, help="MD steps of 2 fs (default 2000 = 4 ps)")
    p.add_argument("--report-every", type=int, default=50, help="steps between reports")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--model", type=Path, default=None, help="checkpoint from save_model(); default: untrained")
    p.add_argument("--platform", default="CPU", choices=platforms)
    p.add_argument("--backend", default="torchforce", choices=BACKENDS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < args.report_every or args.report_every < 1:
        p.error("--steps must be >= --report-every >= 1")
    if args.box_nm < 1.5:
        p.error("--box-nm must be at least 1.5 nm (twice the 0.75 nm PME cutoff used here)")
    return args


def plot(csv_path: Path, png_path: Path, ml_energy) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.genfromtxt(csv_path, delimiter=",", names=True)
    time_ps, potential, temperature = (data[name] for name in data.dtype.names[:3])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(time_ps, potential, label="total potential")
    axes[0].set_xlabel("time (ps)")
    axes[0].set_ylabel("potential energy (kJ/mol)")
    ax2 = axes[0].twinx()
    ax2.plot(time_ps, ml_energy, color="C1", label="ML part")
    ax2.set_ylabel("ML energy (kJ/mol)", color="C1")
    axes[1].plot(time_ps, temperature, color="C2")
    axes[1].set_xlabel("time (ps)")
    axes[1].set_ylabel("temperature (K)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    topology, positions, box = water_box(box_nm=args.box_nm, seed=args.seed)
    n_waters = topology.getNumResidues()
    if not 1 <= args.ml_waters <= n_waters:
        raise SystemExit(f"--ml-waters must be between 1 and {n_waters} for this box")

    if args.model is not None:
        model = load_model(args.model)
    else:
        torch.manual_seed(args.seed)
        model = EquivariantPotential(["H", "O"], cutoff=0.5)
        with torch.no_grad():  # untrained: a small, smooth correction of ~0.1 kJ/mol per atom
            model.readout.scale.fill_(0.1)

    # ML region: the waters nearest the box centre (whole molecules)
    centre = box.sum(axis=0) / 2
    residues = list(topology.residues())
    distance = [np.linalg.norm(positions[[a.index for a in r.atoms()]].mean(axis=0) - centre) for r in residues]
    chosen = [residues[k] for k in np.argsort(distance)[: args.ml_waters]]
    particles = sorted(a.index for r in chosen for a in r.atoms())
    all_types = topology_types(topology)

    system = tip3p_pme_system(topology, cutoff_nm=0.75)
    ml = torch_force(model, [all_types[i] for i in particles], periodic=True, particles=particles, backend=args.backend)
    ml.setForceGroup(1)
    system.addForce(ml)

    integrator = openmm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed + 1)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, args.seed + 2)

    csv_path = args.out / "energies.csv"
    simulation.reporters.append(app.DCDReporter(str(args.out / "demo.dcd"), args.report_every))
    simulation.reporters.append(
        app.StateDataReporter(str(csv_path), args.report_every, time=True, potentialEnergy=True, temperature=True)
    )
    ml_energy = []
    start = time.perf_counter()
    with tqdm(total=args.steps, desc="demo MD", unit="step") as bar:
        for _ in range(args.steps // args.report_every):
            simulation.step(args.report_every)
            state = simulation.context.getState(getEnergy=True, groups={1})
            ml_energy.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            bar.update(args.report_every)
    elapsed = time.perf_counter() - start
    state = simulation.context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=True)
    with open(args.out / "demo.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, state.getPositions(), handle)
    ns_per_day = args.steps * 0.002 / 1000.0 / (elapsed / 86400.0)
    final_temperature = float(np.genfromtxt(csv_path, delimiter=",", names=True)[-1][-1])
    plot(csv_path, args.out / "energies.png", ml_energy)
    summary = {
        "atoms": topology.getNumAtoms(),
        "ml_atoms": len(particles),
        "steps": args.steps,
        "timestep_ps": 0.002,
        "platform": args.platform,
        "backend": args.backend,
        "model": str(args.model) if args.model else "untrained (demo)",
        "model_config": model.config.to_dict(),
        "ns_per_day": ns_per_day,
        "final_potential_energy_kj_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        "final_ml_energy_kj_mol": ml_energy[-1],
        "final_temperature_K": final_temperature,
        "finite": bool(np.isfinite(ml_energy).all()),
    }
    atomic_write_json(args.out / "summary.json", summary)
    print(
        f"{topology.getNumAtoms()} atoms ({len(particles)} ML), {args.steps} steps on {args.platform}/{args.backend}: "
        f"{ns_per_day:.2f} ns/day, final T = {final_temperature:.0f} K, outputs in {args.out}"
    )
    return 0 if summary["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
