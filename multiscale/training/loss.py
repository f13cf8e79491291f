"""Balanced energy / force / virial loss.

Each term is a mean squared error normalised by the square of its natural scale in the dataset
and by its number of components, then weighted:

    L = w_E · mean_b[((E_b − Ê_b) / N_b)²] / σ_E²            energy per particle
      + w_F · mean_{a,k}[(F_ak − F̂_ak)²] / σ_F²             force per component
      + w_W · mean_{b,kl}[((W_bkl − Ŵ_bkl) / N_b)²] / σ_W²  virial per particle and component
      + w_q · mean_a[(q_a − q̂_a)²] / σ_q²                  partial charge per particle
      + w_μ · mean_{b,k}[(μ_bk − μ̂_bk)²] / σ_μ²            dipole per component (open boundaries)

with σ_E the std of the centred per-particle energy, σ_F the RMS force component and σ_W the RMS
per-particle virial component, σ_q the RMS reference charge and σ_μ the RMS reference dipole
component of the training set. The charge and dipole terms apply to models that predict charges
(:class:`~multiscale.models.HybridPotential`) and to the configurations that carry those labels
(GFN2-xTB gives both). Normalised this way, weight 1 means "as
important as a typical value of that quantity", so terms in different units are comparable.
``force_only=True`` (force matching, coarse-graining) drops the energy and virial terms.
Per-configuration weights (distillation: many cheap labels, few expensive ones) multiply each
configuration's contribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from multiscale.config import YamlConfig
from multiscale.training.batch import Batch


@dataclass
class LossConfig(YamlConfig):
    """Weights of the loss terms (dimensionless, see module docstring)."""

    SECTION = "loss"
    DESCRIPTION = "loss option"

    energy_weight: float = 1.0
    force_weight: float = 10.0
    virial_weight: float = 0.0
    charge_weight: float = 0.0
    dipole_weight: float = 0.0
    force_only: bool = False

    def __post_init__(self):
        for name in ("energy_weight", "force_weight", "virial_weight", "charge_weight", "dipole_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.force_only and self.force_weight == 0:
            raise ValueError("force_only=True needs force_weight > 0")
        if self.energy_weight + self.force_weight + self.virial_weight == 0:
            raise ValueError("every loss weight is 0, so nothing would be fitted; set force_weight and/or energy_weight > 0")

    @property
    def uses_virial(self) -> bool:
        return self.virial_weight > 0 and not self.force_only


@dataclass
class LossScales:
    """Natural scales of the training set: σ_E (kJ/mol per particle), σ_F (kJ/mol/nm), σ_W (kJ/mol
    per particle), σ_q (e), σ_μ (e·nm)."""

    energy_per_particle: float = 1.0
    force: float = 1.0
    virial_per_particle: float = 1.0
    charge: float = 1.0
    dipole: float = 1.0

    def __post_init__(self):
        # a degenerate dataset (one configuration, zero forces) must not divide by zero
        self.energy_per_particle = max(float(self.energy_per_particle), 1e-6)
        self.force = max(float(self.force), 1e-6)
        self.virial_per_particle = max(float(self.virial_per_particle), 1e-6)
        self.charge = max(float(self.charge), 1e-6)
        self.dipole = max(float(self.dipole), 1e-6)


class EnergyForceLoss:
    """Callable ``loss(prediction, batch) -> (total, {term: value})``.

    Each term is Σ w·err² / Σ w over the batch. For data-parallel training pass
    ``denominators`` (the Σ w of every term over *all* processes, from :meth:`denominators`
    summed with all_reduce): each process then returns its share of the global mean, and the
    *sum* of the processes' gradients equals the single-process gradient exactly.
    """

    TERMS = ("energy", "forces", "virial", "charges", "dipole")

    def __init__(self, config: LossConfig, scales: LossScales):
        self.config = config
        self.scales = scales

    def active_terms(self) -> Dict[str, bool]:
        """Which terms the weights switch on (a term also needs labels in the batch)."""
        cfg = self.config
        return {
            "energy": not cfg.force_only and cfg.energy_weight > 0,
            "forces": cfg.force_weight > 0,
            "virial": cfg.uses_virial,
            "charges": not cfg.force_only and cfg.charge_weight > 0,
            "dipole": not cfg.force_only and cfg.dipole_weight > 0,
        }

    def denominators(self, batch: Batch) -> torch.Tensor:
        """Σ of the per-item weights of each term in this batch, as a tensor ordered as :attr:`TERMS`."""
        active = self.active_terms()
        per_particle = batch.weights.index_select(0, batch.batch)
        values = [
            batch.weights[batch.has_energy].sum() if active["energy"] else batch.weights.new_zeros(()),
            per_particle[batch.has_forces].sum() if active["forces"] else batch.weights.new_zeros(()),
            batch.weights[batch.has_virial].sum() if active["virial"] else batch.weights.new_zeros(()),
            per_particle[batch.has_charges].sum() if active["charges"] else batch.weights.new_zeros(()),
            batch.weights[batch.has_dipole].sum() if active["dipole"] else batch.weights.new_zeros(()),
        ]
        return torch.stack(values).detach()

    def __call__(self, prediction: Dict[str, torch.Tensor], batch: Batch, denominators: Optional[torch.Tensor] = None):
        cfg = self.config
        active = self.active_terms()
        dens = self.denominators(batch) if denominators is None else denominators
        terms: Dict[str, torch.Tensor] = {}
        n = batch.num_particles.to(prediction["energy"].dtype)
        total = prediction["energy"].new_zeros(())
        if active["energy"] and float(dens[0]) > 0:
            mask = batch.has_energy
            err = (prediction["energy"][mask] - batch.energy[mask]) / n[mask] / self.scales.energy_per_particle
            terms["energy"] = (err**2 * batch.weights[mask]).sum() / dens[0]
            total = total + cfg.energy_weight * terms["energy"]
        if active["forces"] and "forces" in prediction and float(dens[1]) > 0:
            mask = batch.has_forces
            err = (prediction["forces"][mask] - batch.forces[mask]) / self.scales.force
            per_particle = batch.weights.index_select(0, batch.batch)[mask]
            terms["forces"] = ((err**2).mean(dim=1) * per_particle).sum() / dens[1]
            total = total + cfg.force_weight * terms["forces"]
        if active["virial"] and "virial" in prediction and float(dens[2]) > 0:
            mask = batch.has_virial
            err = (prediction["virial"][mask] - batch.virial[mask]) / n[mask].view(-1, 1, 1) / self.scales.virial_per_particle
            terms["virial"] = ((err**2).mean(dim=(1, 2)) * batch.weights[mask]).sum() / dens[2]
            total = total + cfg.virial_weight * terms["virial"]
        if active["charges"] and "charges" in prediction and float(dens[3]) > 0:
            mask = batch.has_charges
            err = (prediction["charges"][mask].to(batch.charges.dtype) - batch.charges[mask]) / self.scales.charge
            per_particle = batch.weights.index_select(0, batch.batch)[mask]
            terms["charges"] = (err**2 * per_particle).sum() / dens[3]
            total = total + cfg.charge_weight * terms["charges"]
        if active["dipole"] and "dipole" in prediction and float(dens[4]) > 0:
            mask = batch.has_dipole
            err = (prediction["dipole"][mask].to(batch.dipole.dtype) - batch.dipole[mask]) / self.scales.dipole
            terms["dipole"] = ((err**2).mean(dim=1) * batch.weights[mask]).sum() / dens[4]
            total = total + cfg.dipole_weight * terms["dipole"]
        if not terms and denominators is None:
            raise ValueError(
                "no loss term applies to this batch: the configurations carry none of the labels the "
                "loss uses (energy, forces, virial); label them first or change the loss weights"
            )
        return total, {k: v.detach() for k, v in terms.items()}
