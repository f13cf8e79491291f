"""Ensemble-mean errors and uncertainties on a held-out set."""

from __future__ import annotations

import os
from typing import Any, Dict, Sequence, Union

import numpy as np

from multiscale.data.configuration import Configuration
from multiscale.models.ensemble import EnsemblePotential
# MD exploration builds and runs OpenMM Systems, so it lives in the OpenMM layer (re-exported here)
from multiscale.training.batch import build_graphs
from multiscale.training.metrics import KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM, KJ_PER_MOL_TO_MEV, evaluate

PathLike = Union[str, "os.PathLike[str]"]



def evaluate_ensemble(ensemble: EnsemblePotential, configs: Sequence[Configuration]) -> Dict[str, Any]:
    """Ensemble-mean errors on labelled configurations, plus each member's own force MAE.

    Returns force MAE/RMSE (kJ/mol/nm and meV/Å, over all force components), energy MAE per atom
    (kJ/mol/atom and meV/atom), the members' force MAEs and the mean over configurations of the
    largest per-particle force uncertainty (kJ/mol/nm).
    """
    if not configs:
        raise ValueError("the held-out set is empty; give at least one labelled configuration")
    e_err, f_err, unc = [], [], []
    for k, config in enumerate(configs):
        if config.forces is None or config.energy is None:
            raise ValueError(f"held-out configuration {k} has no energy or forces; label the held-out set first")
        out = ensemble.compute(config.positions, config.types, config.box)
        f_err.append((out["forces"].double().cpu().numpy() - config.forces).ravel())
        e_err.append((float(out["energy"]) - config.energy) / config.num_particles)
        unc.append(float(out["max_force_uncertainty"]))
    f_err = np.concatenate(f_err)
    e_err = np.asarray(e_err)
    graphs = build_graphs(list(configs), ensemble.type_names, ensemble.cutoff)
    members = [evaluate(m, graphs)["metrics"]["force_mae_kj_mol_nm"] for m in ensemble.members]
    force_mae = float(np.abs(f_err).mean())
    force_rmse = float(np.sqrt((f_err**2).mean()))
    energy_mae = float(np.abs(e_err).mean())
    return {
        "n_held_out": len(configs),
        "force_mae_kj_mol_nm": force_mae,
        "force_mae_mev_per_angstrom": force_mae * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM,
        "force_rmse_kj_mol_nm": force_rmse,
        "force_rmse_mev_per_angstrom": force_rmse * KJ_PER_MOL_NM_TO_MEV_PER_ANGSTROM,
        "energy_mae_kj_mol_per_atom": energy_mae,
        "energy_mae_mev_per_atom": energy_mae * KJ_PER_MOL_TO_MEV,
        "member_force_mae_kj_mol_nm": [float(v) for v in members],
        "held_out_mean_max_uncertainty_kj_mol_nm": float(np.mean(unc)),
    }

