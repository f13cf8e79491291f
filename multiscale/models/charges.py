"""Predicted charges with an exact total: charge equilibration on learned atomic properties.

From each particle's invariant features the head predicts an electronegativity χ_i and a
hardness J_i ≥ 1 (both dimensionless: only their ratio sets the charges, and the Coulomb energy
itself is computed separately, so no energy unit is implied). The charges minimise

    Σ_i χ_i q_i + ½ J_i q_i²    subject to    Σ_i q_i = Q,

whose solution (one Lagrange multiplier λ) is q_i = (λ − χ_i)/J_i with
λ = (Q + Σ χ_i/J_i) / Σ 1/J_i. The constraint holds exactly in every configuration, and a
correction to the total goes preferentially to soft (small J) particles, as in the
electronegativity-equalisation models (QEq; the 4G-HDNNP's global charge equilibration without its
Coulomb matrix). The solve runs in float64, so Σq = Q to ~1e-12 e.
"""

from __future__ import annotations

import torch


class ChargeEquilibration(torch.nn.Module):
    """Invariant features (N, F) and types → charges (N,) in e, float64, summing to ``total``."""

    def __init__(self, num_features: int, num_types: int, hidden: int = 16):
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(num_features, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, 2)
        )
        #: per-type offsets of χ and of the raw hardness (a per-element electronegativity scale)
        self.type_chi = torch.nn.Parameter(torch.zeros(num_types))
        self.type_hardness = torch.nn.Parameter(torch.zeros(num_types))

    def forward(self, features: torch.Tensor, types: torch.Tensor, total: float) -> torch.Tensor:
        chi, softness = self.electronegativity_and_softness(features, types)
        lagrange = (total + (chi * softness).sum()) / softness.sum()
        return (lagrange - chi) * softness

    def electronegativity_and_softness(self, features: torch.Tensor, types: torch.Tensor):
        """χ_i and 1/J_i (float64) of every particle."""
        raw = self.mlp(features).to(torch.float64)
        chi = 0.5 * raw[:, 0] + self.type_chi.to(torch.float64).index_select(0, types)
        # hardness >= 1 (softplus plus a floor): |q_i| <= |λ − χ_i|, so no particle takes an unbounded
        # charge, and an untrained head starts from charges of order 0.1 e
        hardness = torch.nn.functional.softplus(raw[:, 1] + self.type_hardness.to(torch.float64).index_select(0, types)) + 1.0
        return chi, 1.0 / hardness

    @torch.jit.unused
    def per_configuration(self, features: torch.Tensor, types: torch.Tensor, batch: torch.Tensor,
                          totals: torch.Tensor) -> torch.Tensor:
        """Charges of many configurations at once (particle a belongs to configuration ``batch[a]``),
        each summing to its own ``totals[b]`` e: one Lagrange multiplier per configuration."""
        chi, softness = self.electronegativity_and_softness(features, types)
        n = totals.shape[0]
        sum_soft = chi.new_zeros(n).index_add(0, batch, softness)
        sum_chi_soft = chi.new_zeros(n).index_add(0, batch, chi * softness)
        lagrange = (totals.to(torch.float64) + sum_chi_soft) / sum_soft
        return (lagrange.index_select(0, batch) - chi) * softness
