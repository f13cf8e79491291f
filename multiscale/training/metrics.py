"""Error metrics in OpenMM units, with the meV/atom and meV/Å figures papers quote."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from multiscale.models.io import model_from_state, model_state
from multiscale.training.batch import Graph, collate, predict
from multiscale.units import ANGSTROM_TO_NM, DEBYE_TO_E_NM, EV_TO_KJ_PER_MOL

#: kJ/mol → meV
KJ_PER_MOL_TO_MEV = 1000.0 / EV_TO_KJ_PER_MOL
#: kJ/mol/nm → meV/Å
KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM = KJ_PER_MOL_TO_MEV * ANGSTROM_TO_NM


def evaluate(model, graphs: Sequence[Graph], *, batch_size: int = 16, device="cpu", dtype: str = "float32") -> Dict:
    """Predict every graph and compare with its labels.

    ``dtype="float64"`` evaluates a float64 copy of the model (validation in double precision).
    Returns ``{"metrics": {...}, "energy_per_atom": (ref, pred), "forces": (ref, pred)}`` with
    energies per atom in kJ/mol and force components in kJ/mol/nm (numpy arrays).
    """
    torch_dtype = getattr(torch, dtype)
    if model.dtype != torch_dtype:
        model = model_from_state(model_state(model)).to(device=device, dtype=torch_dtype)
    e_ref, e_pred, f_ref, f_pred, w_ref, w_pred = [], [], [], [], [], []
    q_ref, q_pred, d_ref, d_pred = [], [], [], []
    for start in range(0, len(graphs), batch_size):
        batch = collate(graphs[start : start + batch_size], device, torch_dtype)
        want_virial = bool(batch.has_virial.any())
        out = predict(model, batch, forces=True, virial=want_virial)
        n = batch.num_particles.to(torch_dtype)
        mask = batch.has_energy
        e_ref.append((batch.energy[mask] / n[mask]).detach().cpu().numpy())
        e_pred.append((out["energy"][mask] / n[mask]).detach().cpu().numpy())
        fmask = batch.has_forces
        f_ref.append(batch.forces[fmask].detach().cpu().numpy().ravel())
        f_pred.append(out["forces"][fmask].detach().cpu().numpy().ravel())
        if "charges" in out and bool(batch.has_charges.any()):
            q_ref.append(batch.charges[batch.has_charges].detach().cpu().numpy())
            q_pred.append(out["charges"][batch.has_charges].detach().cpu().numpy())
        if "dipole" in out and bool(batch.has_dipole.any()):
            d_ref.append(batch.dipole[batch.has_dipole].detach().cpu().numpy().ravel())
            d_pred.append(out["dipole"][batch.has_dipole].detach().cpu().numpy().ravel())
        if want_virial:
            vmask = batch.has_virial
            w_ref.append((batch.virial[vmask] / n[vmask].view(-1, 1, 1)).detach().cpu().numpy().ravel())
            w_pred.append((out["virial"][vmask] / n[vmask].view(-1, 1, 1)).detach().cpu().numpy().ravel())
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    e_ref, e_pred, f_ref, f_pred, w_ref, w_pred = map(cat, (e_ref, e_pred, f_ref, f_pred, w_ref, w_pred))
    q_ref, q_pred, d_ref, d_pred = map(cat, (q_ref, q_pred, d_ref, d_pred))
    metrics: Dict[str, float] = {"num_configurations": len(graphs)}
    if e_ref.size:
        err = e_pred - e_ref
        metrics["energy_mae_kj_mol_per_atom"] = float(np.abs(err).mean())
        metrics["energy_rmse_kj_mol_per_atom"] = float(np.sqrt((err**2).mean()))
        metrics["energy_mae_mev_per_atom"] = metrics["energy_mae_kj_mol_per_atom"] * KJ_PER_MOL_TO_MEV
        metrics["energy_rmse_mev_per_atom"] = metrics["energy_rmse_kj_mol_per_atom"] * KJ_PER_MOL_TO_MEV
    if f_ref.size:
        err = f_pred - f_ref
        metrics["force_mae_kj_mol_nm"] = float(np.abs(err).mean())
        metrics["force_rmse_kj_mol_nm"] = float(np.sqrt((err**2).mean()))
        metrics["force_mae_mev_per_angstrom"] = metrics["force_mae_kj_mol_nm"] * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM
        metrics["force_rmse_mev_per_angstrom"] = metrics["force_rmse_kj_mol_nm"] * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM
        metrics["force_rms_reference_kj_mol_nm"] = float(np.sqrt((f_ref**2).mean()))
    if w_ref.size:
        err = w_pred - w_ref
        metrics["virial_rmse_kj_mol_per_atom"] = float(np.sqrt((err**2).mean()))
    if q_ref.size:
        metrics["charge_rmse_e"] = float(np.sqrt(((q_pred - q_ref) ** 2).mean()))
        metrics["charge_rms_reference_e"] = float(np.sqrt((q_ref**2).mean()))
    if d_ref.size:
        metrics["dipole_rmse_e_nm"] = float(np.sqrt(((d_pred - d_ref) ** 2).mean()))
        metrics["dipole_rmse_debye"] = metrics["dipole_rmse_e_nm"] / DEBYE_TO_E_NM
    return {"metrics": metrics, "energy_per_atom": (e_ref, e_pred), "forces": (f_ref, f_pred)}


def parity_plot(results: Dict, path, title: str = "test set") -> None:
    """Energy-per-atom and force-component parity plots (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    panels = (
        ("energy_per_atom", "energy per atom (kJ/mol)", "energy_mae_mev_per_atom", "meV/atom"),
        ("forces", "force component (kJ/mol/nm)", "force_mae_mev_per_angstrom", "meV/Å"),
    )
    for ax, (key, label, metric, unit) in zip(axes, panels):
        ref, pred = results[key]
        if ref.size:
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
            ax.scatter(ref, pred, s=4, alpha=0.5)
            ax.set_title(f"{title}: MAE {results['metrics'].get(metric, float('nan')):.2f} {unit}")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
