"""Per-particle invariant energy readout with a per-type scale and shift (kJ/mol)."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode


@compile_mode("script")
class EnergyReadout(torch.nn.Module):
    """e_i = scale[t_i] · MLP(scalars of h_i) + shift[t_i], in kJ/mol.

    Only the ``0e`` part of the features enters (an e3nn Linear to scalars drops the rest), so the
    per-particle energy is invariant by construction. ``shift`` holds per-type reference energies
    (fitted by least squares on a dataset) and ``scale`` a typical energy scale, so the network
    itself learns an O(1), centred target.
    """

    def __init__(self, irreps_in: o3.Irreps, num_types: int, hidden: int = 16):
        super().__init__()
        self.linear1 = o3.Linear(o3.Irreps(irreps_in), o3.Irreps(f"{hidden}x0e"))
        self.linear2 = o3.Linear(o3.Irreps(f"{hidden}x0e"), o3.Irreps("1x0e"))
        self.register_buffer("shift", torch.zeros(num_types, dtype=torch.get_default_dtype()))
        self.register_buffer("scale", torch.ones(num_types, dtype=torch.get_default_dtype()))

    def forward(self, features: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.silu(self.linear1(features))
        e = self.linear2(x).squeeze(-1)
        return e * self.scale.index_select(0, types) + self.shift.index_select(0, types)
