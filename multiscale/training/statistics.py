"""Data-derived settings of a model before training: per-type reference energies, energy scale,
average neighbour count, and the loss scales (from :mod:`multiscale.data.splits`)."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from multiscale.data.configuration import Configuration
from multiscale.data.splits import dataset_statistics, fit_reference_energies
from multiscale.models.potential import average_num_neighbors  # noqa: F401  (its home is the model)
from multiscale.training.loss import LossScales
from multiscale.units import ANGSTROM_TO_NM


def reference_energies(configs: Sequence[Configuration], types: Sequence[str]) -> Dict[str, float]:
    """Per-type E0 (kJ/mol) by least squares (see ``fit_reference_energies``); zeros when no
    configuration carries an energy (force-only data)."""
    if not any(c.energy is not None for c in configs):
        return {t: 0.0 for t in types}
    return fit_reference_energies(configs, types)


def loss_scales(configs: Sequence[Configuration], types: Sequence[str], e0: Dict[str, float]) -> LossScales:
    """σ_E: std of the centred per-atom energy; σ_F: RMS force component; σ_W: RMS per-atom virial;
    σ_q: RMS reference charge; σ_μ: RMS reference dipole component (1.0 for a label the data lacks,
    or with a single energy)."""
    stats = dataset_statistics(configs, types, e0)
    energy_std = stats["energy_per_atom_std"] if (stats["num_energies"] or 0) > 1 else None
    charges = [c.charges for c in configs if c.charges is not None]
    dipoles = [c.dipole for c in configs if c.dipole is not None]
    return LossScales(
        energy_per_particle=energy_std or 1.0,
        force=stats["force_rms"] or 1.0,
        virial_per_particle=stats["virial_per_atom_rms"] or 1.0,
        charge=float(np.sqrt(np.mean(np.concatenate(charges) ** 2))) if charges else 1.0,
        dipole=float(np.sqrt(np.mean(np.stack(dipoles) ** 2))) if dipoles else 1.0,
    )


def initialise_readout(model, e0: Dict[str, float], scales: LossScales) -> None:
    """Per-type shift = E0 (kJ/mol); scale = σ_F × 1 Å, the energy a typical force does over a
    typical displacement, so the network's raw output stays O(1) (NequIP's choice)."""
    with torch.no_grad():
        model.readout.shift.copy_(torch.tensor([e0[t] for t in model.type_names], dtype=model.dtype))
        model.readout.scale.fill_(scales.force * ANGSTROM_TO_NM)
