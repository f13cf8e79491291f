"""Data-derived settings of a model before training: per-type reference energies, energy scale,
average neighbour count, and the loss scales."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

from multiscale.data.configuration import Configuration, type_counts
from multiscale.training.batch import Graph
from multiscale.training.loss import LossScales
from multiscale.units import ANGSTROM_TO_NM


def reference_energies(configs: Sequence[Configuration], types: Sequence[str]) -> Dict[str, float]:
    """Per-type E0 (kJ/mol) by least squares of E ≈ Σ_t count_t E0_t (minimum-norm if rank-deficient)."""
    labelled = [c for c in configs if c.energy is not None]
    if not labelled:
        return {t: 0.0 for t in types}
    counts = type_counts(labelled, types)
    energies = np.array([c.energy for c in labelled])
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {t: float(v) for t, v in zip(types, e0)}


def loss_scales(configs: Sequence[Configuration], types: Sequence[str], e0: Dict[str, float]) -> LossScales:
    """σ_E: std of the centred per-atom energy; σ_F: RMS force component; σ_W: RMS per-atom virial."""
    per_atom = [
        (c.energy - sum(e0[t] for t in c.types)) / c.num_particles for c in configs if c.energy is not None
    ]
    forces = [c.forces.ravel() for c in configs if c.forces is not None]
    virials = [(c.virial / c.num_particles).ravel() for c in configs if c.virial is not None]
    return LossScales(
        energy_per_particle=float(np.std(per_atom)) if len(per_atom) > 1 else 1.0,
        force=float(np.sqrt(np.mean(np.concatenate(forces) ** 2))) if forces else 1.0,
        virial_per_particle=float(np.sqrt(np.mean(np.concatenate(virials) ** 2))) if virials else 1.0,
    )


def average_num_neighbors(graphs: Sequence[Graph]) -> float:
    edges = sum(int(g.senders.shape[0]) for g in graphs)
    atoms = sum(g.num_particles for g in graphs)
    return max(edges / max(atoms, 1), 1.0)


def initialise_readout(model, e0: Dict[str, float], scales: LossScales) -> None:
    """Per-type shift = E0 (kJ/mol); scale = σ_F × 1 Å, the energy a typical force does over a
    typical displacement, so the network's raw output stays O(1) (NequIP's choice)."""
    with torch.no_grad():
        model.readout.shift.copy_(torch.tensor([e0[t] for t in model.type_names], dtype=model.readout.shift.dtype))
        model.readout.scale.fill_(scales.force * ANGSTROM_TO_NM)
