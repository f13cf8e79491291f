#!/usr/bin/env python
"""Learning the long range: a short-range equivariant model against the hybrid model (the same
network plus Coulomb with predicted charges), trained at the same cutoff on the same GFN2-xTB
data with the same time budget.

    python protocols/learn_long_range.py --out DIR [--quick] [--seeds 0 1 2] [--budget 180]

1. Data (``systems.ion_water_pairs``): Na⁺(H₂O)···H₂O (+1 e), H₂O···H₂O (0) and
   Na⁺(H₂O)···Na⁺(H₂O) (+2 e) at separations from contact out to 1.6 nm, random orientations,
   labelled by GFN2-xTB (tblite, electronic temperature 1000 K: at 300 K the ion-water SCF fails
   beyond ~0.7 nm): energies, forces, charges, dipoles. Written to DIR/data.npz.
   A binding curve (one orientation of each kind, 0.45-1.6 nm) is labelled for the plot.
2. Split 70/10/20 (train/valid/test), the test set held out.
3. For every seed: train the short-range model (``family: equivariant``) and the hybrid
   (``family: hybrid``, direct Coulomb sum, charge and dipole loss terms) with the same
   architecture, cutoff, epochs cap and ``--budget`` seconds each.
4. Test errors: energy per configuration (kJ/mol) and force components (kJ/mol/nm), overall and
   by separation (inside the cutoff, cutoff-1 nm, beyond 1 nm); charges (e) and dipoles (debye)
   against GFN2-xTB's for the hybrid. Mean and spread (min, max) over the seeds.
5. The first seed's hybrid in OpenMM (TorchForce, CPU platform): the Na⁺(H₂O)···Na⁺(H₂O)
   binding-curve point nearest 0.8 nm (beyond the cutoff; curves are never trained on) (total charge +2 e), its OpenMM energy against the model's, then NVE
   (velocity Verlet, 0.25 fs, 2 ps from 300 K): the drift of the total energy and how far the
   two ions, which only the Coulomb term couples at first, move apart.

Writes DIR/learn_long_range.json and DIR/learn_long_range.png; resumes (finished stages are
kept, an interrupted training continues from its checkpoint) when re-run with the same settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from multiscale.atomic import atomic_write_json  # noqa: E402
from multiscale.cli import nonnegative_int, output_dir, positive_float, positive_int, run_main  # noqa: E402
from multiscale.data import load_dataset, save_dataset, split_dataset  # noqa: E402
from multiscale.jobs import ResumableJob, Stage  # noqa: E402
from multiscale.labels import GFN2xTBLabeller  # noqa: E402
from multiscale.models import load_model  # noqa: E402
from multiscale.training.batch import build_graphs, collate, predict  # noqa: E402
from multiscale.training.config import TrainerConfig  # noqa: E402
from multiscale.training.loss import LossConfig  # noqa: E402
from multiscale.training.workflow import JobConfig, fit_potential  # noqa: E402
from multiscale.units import DEBYE_TO_E_NM  # noqa: E402
from systems.ion_water_pairs import KINDS, pair_configurations, pair_dataset  # noqa: E402

CUTOFF_NM = 0.5
#: separation bins (nm) of the error report: inside the cutoff, out to 1 nm, beyond
BINS = ((0.0, CUTOFF_NM), (CUTOFF_NM, 1.0), (1.0, np.inf))
MAX_SEPARATION_NM = 1.6
#: Fermi smearing of the labels: at tblite's 300 K the SCF of Na⁺(H₂O)···H₂O failed to converge in 7
#: of 12 separations from 0.73 nm on; at 1000 K (kT = 0.09 eV, far below water's gap) all converge
XTB_ELECTRONIC_TEMPERATURE_K = 1000.0
FAMILIES = ("short_range", "hybrid")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=output_dir, required=True, help="output folder (resumed when re-run)")
    p.add_argument("--quick", action="store_true", help="small data and budget (a minute or two)")
    p.add_argument("--per-kind", type=positive_int, help="configurations per pair kind (default 400; quick 40)")
    p.add_argument("--budget", type=positive_float, help="training seconds per model (default 240; quick 15)")
    p.add_argument("--epochs", type=positive_int, help="epochs cap per model (default 400; quick 20)")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", help="training seeds (default 0 1 2; quick 0)")
    p.add_argument("--processes", type=positive_int, default=1, help="tblite worker processes")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.per_kind = args.per_kind or (40 if args.quick else 400)
    args.budget = args.budget or (15.0 if args.quick else 240.0)
    args.epochs = args.epochs or (20 if args.quick else 400)
    args.seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    return args


def job_for(family: str, seed: int, args) -> JobConfig:
    model = {"cutoff": CUTOFF_NM, "channels": 8, "num_layers": 2, "lmax": 1}
    loss = {}
    if family == "hybrid":
        model["coulomb"] = {"cutoff": 1.0, "method": "direct"}
        loss = {"charge_weight": 1.0, "dipole_weight": 1.0}
    return JobConfig(
        family="hybrid" if family == "hybrid" else "equivariant",
        model=model,
        trainer=TrainerConfig(epochs=args.epochs, batch_size=8, learning_rate=5e-3, max_time=args.budget, seed=seed,
                              device="cpu", early_stopping_patience=60),
        loss=LossConfig(**loss),
    )


def label(configs, args, what: str):
    result = GFN2xTBLabeller(processes=args.processes, electronic_temperature=XTB_ELECTRONIC_TEMPERATURE_K).label(configs)
    if len(result.failures) > 0.05 * len(configs):
        raise RuntimeError(f"GFN2-xTB failed on {len(result.failures)} of {len(configs)} {what}: {result.failures[:3]}")
    return result.configurations, len(result.failures)


def predictions(model, configs) -> Dict[str, List[np.ndarray]]:
    """Per configuration: energy (kJ/mol), forces, and (hybrid) charges and dipole, in float64."""
    model = model.to(torch.float64)
    graphs = build_graphs(configs, model.type_names, model.cutoff)
    out = {"energy": [], "forces": [], "charges": [], "dipole": []}
    for start in range(0, len(graphs), 32):
        chunk = graphs[start:start + 32]
        pred = predict(model, collate(chunk, dtype=torch.float64), forces=True)
        sizes = [g.num_particles for g in chunk]
        out["energy"] += [float(e) for e in pred["energy"].detach()]
        out["forces"] += list(torch.split(pred["forces"].detach(), sizes))
        if "charges" in pred:
            out["charges"] += list(torch.split(pred["charges"].detach(), sizes))
            out["dipole"] += list(pred["dipole"].detach())
    return {k: [np.asarray(v, dtype=float) for v in vals] for k, vals in out.items()}


def errors(model, test) -> Dict[str, object]:
    pred = predictions(model, test)
    separation = np.array([c.info["separation_nm"] for c in test])
    e_err = np.array(pred["energy"]) - np.array([c.energy for c in test])
    f_err = [p - c.forces for p, c in zip(pred["forces"], test)]
    report = {"overall": _bin_errors(e_err, f_err, np.ones(len(test), bool)), "by_separation": {}}
    for lo, hi in BINS:
        mask = (separation >= lo) & (separation < hi)
        report["by_separation"][f"{lo:g}-{hi:g} nm"] = _bin_errors(e_err, f_err, mask)
    if pred["charges"]:
        q_err = np.concatenate([p - c.charges for p, c in zip(pred["charges"], test)])
        d_err = np.stack([p - c.dipole for p, c in zip(pred["dipole"], test)])
        report["charge_rmse_e"] = float(np.sqrt(np.mean(q_err**2)))
        report["charge_rms_reference_e"] = float(np.sqrt(np.mean(np.concatenate([c.charges for c in test]) ** 2)))
        report["dipole_rmse_debye"] = float(np.sqrt(np.mean(np.sum(d_err**2, axis=1)))) / DEBYE_TO_E_NM
    report["per_configuration"] = {"separation_nm": separation.tolist(), "energy_error_kj_mol": e_err.tolist(),
                                   "force_rmse_kj_mol_nm": [float(np.sqrt(np.mean(f**2))) for f in f_err]}
    return report


def _bin_errors(e_err, f_err, mask) -> Dict[str, float]:
    if not mask.any():
        return {"count": 0}
    forces = np.concatenate([f.ravel() for f, m in zip(f_err, mask) if m])
    return {"count": int(mask.sum()), "energy_rmse_kj_mol": float(np.sqrt(np.mean(e_err[mask] ** 2))),
            "energy_mae_kj_mol": float(np.mean(np.abs(e_err[mask]))), "force_rmse_kj_mol_nm": float(np.sqrt(np.mean(forces**2)))}


def openmm_run(model, config, steps: int = 8000, dt_ps: float = 0.00025) -> Dict[str, float]:
    """The hybrid deployed in OpenMM on one configuration: energy agreement and a short NVE run."""
    import openmm
    from openmm import app, unit

    from multiscale.openmm.assembly import MLTerm, assemble_system

    model = model.to(torch.float64).set_total_charge(config.total_charge)
    masses = [app.element.get_by_symbol(t).mass.value_in_unit(unit.dalton) for t in config.types]
    system = assemble_system(masses, terms=[MLTerm(model, config.types, periodic=False)])
    integrator = openmm.VerletIntegrator(dt_ps)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(config.positions)
    context.setVelocitiesToTemperature(300.0, 1)
    state = context.getState(getEnergy=True)
    openmm_energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    model_energy = float(model.compute(config.positions, config.types, forces=False)["energy"])
    na = [k for k, t in enumerate(config.types) if t == "Na"]
    totals = []
    for _ in range(steps // 100):
        integrator.step(100)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return {"openmm_energy_kj_mol": openmm_energy, "model_energy_kj_mol": model_energy,
            "relative_difference": abs(openmm_energy - model_energy) / abs(model_energy),
            "steps": steps, "timestep_ps": dt_ps, "total_energy_drift_kj_mol": float(totals[-1] - totals[0]),
            "total_energy_spread_kj_mol": float(np.ptp(totals)),
            "na_na_start_nm": float(np.linalg.norm(config.positions[na[1]] - config.positions[na[0]])),
            "na_na_end_nm": float(np.linalg.norm(final[na[1]] - final[na[0]]))}


def spread(values: List[float]) -> Dict[str, float]:
    values = [v for v in values if v is not None]
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)), "runs": len(values)}


def summarise(runs: Dict[str, List[dict]]) -> Dict[str, dict]:
    summary: Dict[str, dict] = {}
    for family, reports in runs.items():
        s = {"overall": {k: spread([r["overall"][k] for r in reports]) for k in ("energy_rmse_kj_mol", "force_rmse_kj_mol_nm")}}
        s["by_separation"] = {}
        for name in reports[0]["by_separation"]:
            if reports[0]["by_separation"][name].get("count", 0):
                s["by_separation"][name] = {k: spread([r["by_separation"][name][k] for r in reports])
                                            for k in ("energy_rmse_kj_mol", "force_rmse_kj_mol_nm")}
        for key in ("charge_rmse_e", "dipole_rmse_debye"):
            if key in reports[0]:
                s[key] = spread([r[key] for r in reports])
        summary[family] = s
    return summary


def plot(runs, curves, curve_preds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"short_range": "tab:red", "hybrid": "tab:blue"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for family, reports in runs.items():
        r = reports[0]["per_configuration"]
        axes[0].scatter(r["separation_nm"], np.abs(r["energy_error_kj_mol"]), s=6, alpha=0.6, color=colors[family], label=family)
        axes[1].scatter(r["separation_nm"], r["force_rmse_kj_mol_nm"], s=6, alpha=0.6, color=colors[family], label=family)
    for ax, label in ((axes[0], "|energy error| (kJ/mol)"), (axes[1], "force RMSE per configuration (kJ/mol/nm)")):
        ax.axvline(CUTOFF_NM, color="0.5", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("separation (nm)")
        ax.set_ylabel(label)
        ax.legend()
    axes[0].set_title(f"held-out test set (cutoff {CUTOFF_NM} nm, dashed)")
    kind = "Na+(H2O) Na+(H2O)"
    sep = np.array([c.info["separation_nm"] for c in curves[kind]])
    ref = np.array([c.energy for c in curves[kind]])
    axes[2].plot(sep, ref - ref[-1], "k-", lw=2, label="GFN2-xTB")
    for family, energies in curve_preds.items():
        e = np.array(energies[kind])
        axes[2].plot(sep, e - e[-1], "--", color=colors[family], label=family)
    axes[2].axvline(CUTOFF_NM, color="0.5", ls="--", lw=1)
    axes[2].set_xlabel("Na–Na separation (nm)")
    axes[2].set_ylabel(f"E(r) − E({MAX_SEPARATION_NM} nm) (kJ/mol)")
    axes[2].set_title("binding curve, Na⁺(H₂O)···Na⁺(H₂O)")
    axes[2].legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out
    settings = {"per_kind": args.per_kind, "budget_s": args.budget, "epochs": args.epochs, "seeds": args.seeds,
                "cutoff_nm": CUTOFF_NM}
    stages = [Stage("label", ("data.npz", "curves.npz"))] + [
        Stage(f"{family}_seed{seed}", (f"{family}_seed{seed}/model.ckpt",)) for seed in args.seeds for family in FAMILIES
    ] + [Stage("openmm")]
    job = ResumableJob(out, settings, stages, what="learn_long_range job").begin()

    def make_data():
        data, failed = label(pair_dataset(args.per_kind, MAX_SEPARATION_NM, seed=0), args, "pair configurations")
        save_dataset(out / "data.npz", data)
        curve = []
        for k, kind in enumerate(sorted(KINDS)):
            closest = max(KINDS[kind][3], 0.45)
            separations = np.linspace(closest, MAX_SEPARATION_NM, 24)
            # one orientation for the whole curve: the same seed draws the same fragments for every point
            curve += [pair_configurations(kind, [d], seed=1000 + k)[0] for d in separations]
        labelled, curve_failed = label(curve, args, "binding-curve points")
        save_dataset(out / "curves.npz", labelled)
        return {"configurations": len(data), "xtb_failures": failed + curve_failed}

    labelled = job.run("label", make_data)
    print(f"GFN2-xTB labels: {labelled['configurations']} configurations ({labelled['xtb_failures']} SCF failures dropped)", flush=True)
    data = load_dataset(out / "data.npz")
    train, valid, test = split_dataset(data, (0.7, 0.1, 0.2), seed=0)
    curve_configs = load_dataset(out / "curves.npz")
    curves = {kind: [c for c in curve_configs if c.info["kind"] == kind] for kind in KINDS}

    runs: Dict[str, List[dict]] = {family: [] for family in FAMILIES}
    curve_preds: Dict[str, Dict[str, List[float]]] = {}
    for seed in args.seeds:
        for family in FAMILIES:
            folder = out / f"{family}_seed{seed}"

            def train_one():
                model, result, _ = fit_potential(train, valid, folder, job_for(family, seed, args), resume=True,
                                                 progress=not args.no_progress, log=lambda m: None)
                return {"epochs": len(result.history), "stop_reason": result.stop_reason}

            info = job.run(f"{family}_seed{seed}", train_one)
            model = load_model(folder / "model.ckpt")
            report = errors(model, test)
            report["training"] = info
            runs[family].append(report)
            if seed == args.seeds[0]:
                curve_preds[family] = {kind: predictions(model, curves[kind])["energy"] for kind in curves}
            o = report["overall"]
            print(f"seed {seed} {family:11s}: energy RMSE {o['energy_rmse_kj_mol']:.2f} kJ/mol, force RMSE "
                  f"{o['force_rmse_kj_mol_nm']:.1f} kJ/mol/nm ({info['epochs']} epochs)", flush=True)

    # a binding-curve point (never trained on) beyond the cutoff
    start = min(curves["Na+(H2O) Na+(H2O)"], key=lambda c: abs(c.info["separation_nm"] - 0.8))
    deployed = job.run("openmm", lambda: openmm_run(load_model(out / f"hybrid_seed{args.seeds[0]}" / "model.ckpt"),
                                                    start, steps=800 if args.quick else 8000))
    print(f"hybrid in OpenMM: energy {deployed['openmm_energy_kj_mol']:.3f} vs model {deployed['model_energy_kj_mol']:.3f} kJ/mol; "
          f"NVE {deployed['steps']} steps: total energy drift {deployed['total_energy_drift_kj_mol']:.3f} kJ/mol; "
          f"Na-Na {deployed['na_na_start_nm']:.3f} -> {deployed['na_na_end_nm']:.3f} nm", flush=True)
    summary = summarise(runs)
    for name in summary["hybrid"]["by_separation"]:
        a, b = summary["short_range"]["by_separation"][name], summary["hybrid"]["by_separation"][name]
        print(f"{name:>14s}: energy RMSE short-range {a['energy_rmse_kj_mol']['mean']:.2f} vs hybrid "
              f"{b['energy_rmse_kj_mol']['mean']:.2f} kJ/mol; force RMSE {a['force_rmse_kj_mol_nm']['mean']:.1f} vs "
              f"{b['force_rmse_kj_mol_nm']['mean']:.1f} kJ/mol/nm", flush=True)
    h = summary["hybrid"]
    print(f"hybrid charges RMSE {h['charge_rmse_e']['mean']:.3f} e, dipole RMSE {h['dipole_rmse_debye']['mean']:.2f} D "
          "against GFN2-xTB", flush=True)
    plot(runs, curves, curve_preds, out / "learn_long_range.png")
    atomic_write_json(out / "learn_long_range.json", {
        "settings": settings, "data": {"train": len(train), "valid": len(valid), "test": len(test), **labelled},
        "bins_nm": [list(b) for b in BINS], "summary": summary, "openmm": deployed,
        "runs": {f: [{k: v for k, v in r.items() if k != "per_configuration"} for r in reports] for f, reports in runs.items()},
        "units": {"energy": "kJ/mol per configuration", "forces": "kJ/mol/nm", "charges": "e", "dipole": "debye"},
    })
    print(f"wrote {out / 'learn_long_range.json'} and {out / 'learn_long_range.png'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
