#!/usr/bin/env python
"""Demo MD: an equivariant ML potential inside an OpenMM water simulation (~2 min on 2 cores).

The project's main job is ``protocols/polymer_cg.py`` (coarse-graining, see the README); this is
the short demonstration of the ML potential inside OpenMM. It builds a periodic TIP3P water box
with PME, adds the ML potential as a TorchForce (or PythonForce) acting on the waters nearest the
box centre (through ``particles=``), runs Langevin MD at 2 fs, and writes:

    OUT/demo.pdb, OUT/demo.dcd     trajectory (OpenMM reporters)
    OUT/energies.csv               StateDataReporter output
    OUT/energies.png               potential energy (total, and the ML force's share) and temperature
    OUT/summary.json               settings, speed (ns/day), final energies, whether all stayed finite

The ML force is *added* to the full TIP3P description of those waters, as a small correction: a
demonstration of the bridge, not an ML/MM partition (that needs the force field's terms inside
the ML region removed). Without ``--model`` the model is untrained and scaled to ~0.1 kJ/mol per
atom so the run stays physical; ``--model`` takes a checkpoint from protocols/train_potential.py
or ``save_model()`` (types H and O).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.cli import existing_file, nonnegative_int, output_dir, positive_float, positive_int, run_main  # noqa: E402
from multiscale.openmm.platforms import get_platform  # noqa: E402
import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from tqdm import tqdm  # noqa: E402

from multiscale.models import EquivariantPotential, load_model  # noqa: E402
from multiscale.openmm import BACKENDS, ML_FORCE_GROUP, topology_types, torch_force  # noqa: E402
from systems.water import tip3p_pme_system, water_box  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=output_dir, help="output directory")
    p.add_argument("--box-nm", type=positive_float, default=1.8, help="cubic water box edge in nm (default 1.8)")
    p.add_argument("--ml-waters", type=positive_int, default=20, help="waters treated by the ML potential (default 20)")
    p.add_argument("--steps", type=positive_int, default=2000, help="MD steps of 2 fs (default 2000 = 4 ps)")
    p.add_argument("--report-every", type=positive_int, default=50, help="steps between reports")
    p.add_argument("--temperature", type=positive_float, default=300.0, help="K")
    p.add_argument("--model", type=existing_file, default=None, help="checkpoint from save_model(); default: untrained")
    p.add_argument("--platform", default="CPU", help="OpenMM platform: CPU (default), CUDA, OpenCL, Reference")
    p.add_argument("--backend", default="torchforce", choices=BACKENDS)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    args = p.parse_args(argv)
    if args.steps < args.report_every or args.report_every < 1:
        p.error("--steps must be >= --report-every >= 1")
    if args.box_nm < 1.5:
        p.error("--box-nm must be at least 1.5 nm (twice the 0.75 nm PME cutoff used here)")
    if args.box_nm > 20:
        p.error(f"--box-nm {args.box_nm} is implausibly large for a demo; the edge is in nm")
    return args


def plot(csv_path: Path, png_path: Path, ml_energy) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.genfromtxt(csv_path, delimiter=",", names=True)
    time_ps, potential, temperature = (data[name] for name in data.dtype.names[:3])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    total = axes[0].plot(time_ps, potential, color="C0", label="total potential (left axis)")
    axes[0].set_xlabel("time (ps)")
    axes[0].set_ylabel("total potential energy (kJ/mol)", color="C0")
    ax2 = axes[0].twinx()
    ml = ax2.plot(time_ps, ml_energy, color="C1", label="ML force's energy (right axis)")
    ax2.set_ylabel("ML energy (kJ/mol)", color="C1")
    axes[0].legend(total + ml, [line.get_label() for line in total + ml], loc="best", fontsize="small")
    axes[0].set_title("potential energy")
    axes[1].plot(time_ps, temperature, color="C2")
    axes[1].set_xlabel("time (ps)")
    axes[1].set_ylabel("temperature (K)")
    axes[1].set_title("instantaneous temperature")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    platform = get_platform(args.platform)
    args.out.mkdir(parents=True, exist_ok=True)
    topology, positions, box = water_box(box_nm=args.box_nm, seed=args.seed)
    n_waters = topology.getNumResidues()
    if not 1 <= args.ml_waters <= n_waters:
        raise ValueError(f"--ml-waters must be between 1 and {n_waters} for this box")

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
    system.addForce(ml)

    integrator = openmm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed + 1)
    simulation = app.Simulation(topology, system, integrator, platform)
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
            state = simulation.context.getState(getEnergy=True, groups={ML_FORCE_GROUP})
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
    sys.exit(run_main(main))
