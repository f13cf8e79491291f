"""One equivariant message-passing layer (NequIP-style interaction block).

    m_i   = 1/<n> Σ_j  TP( h_j , Y(r̂_ij) ; w(|r_ij|) )      e3nn tensor product, per-edge weights
    h_i'  = Gate( Linear(m_i) + SelfInteraction(h_i ⊗ onehot(t_i)) )
    h_i  <- h_i + h_i'   (residual, when the irreps agree)

w(|r|) is an MLP (no biases, so w(r_c) = 0) of the enveloped Bessel basis; Y are spherical
harmonics up to lmax. Because every operation is an e3nn equivariant map, the block is
E(3)-equivariant (SE(3) only if the model is built with parity=False).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from e3nn.util.jit import compile_mode


def _message_irreps(
    irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps
) -> Tuple[o3.Irreps, List[Tuple[int, int, int, str, bool]]]:
    """'uvu' paths of irreps_in ⊗ irreps_sh that land on an irrep present in irreps_target."""
    wanted = {ir for _, ir in irreps_target}
    out: List[Tuple[int, o3.Irrep]] = []
    instructions: List[Tuple[int, int, int, str, bool]] = []
    for i_in, (mul, ir_in) in enumerate(irreps_in):
        for i_sh, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i_in, i_sh, len(out), "uvu", True))
                    out.append((mul, ir_out))
    irreps_mid = o3.Irreps(out)
    irreps_sorted, perm, _ = irreps_mid.sort()
    instructions = [(a, b, perm[c], mode, train) for a, b, c, mode, train in instructions]
    return irreps_sorted, instructions


def gate_irreps(irreps_hidden: o3.Irreps) -> Tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """Split hidden irreps into (scalars, gates, gated) for e3nn's Gate."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0])
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps > 0 else o3.Irreps("")
    return scalars, gates, gated


@compile_mode("script")
class InteractionBlock(torch.nn.Module):
    """Message passing from ``irreps_in`` node features to ``irreps_out`` node features."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        irreps_sh: o3.Irreps,
        irreps_attr: o3.Irreps,
        num_basis: int,
        radial_hidden: int,
        radial_layers: int,
        avg_num_neighbors: float,
    ):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.avg_num_neighbors = float(avg_num_neighbors)

        scalars, gates, gated = gate_irreps(self.irreps_out)
        # Odd scalars (0o) only arise with parity; they are gated by tanh to keep them odd.
        act_scalars = [torch.nn.functional.silu if ir.p == 1 else torch.tanh for _, ir in scalars]
        self.gate = e3nn_nn.Gate(scalars, act_scalars, gates, [torch.sigmoid] * len(gates), gated)
        irreps_gate_in = self.gate.irreps_in

        self.linear_up = o3.Linear(self.irreps_in, self.irreps_in)
        irreps_mid, instructions = _message_irreps(self.irreps_in, irreps_sh, irreps_gate_in)
        self.tp = o3.TensorProduct(
            self.irreps_in,
            irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = e3nn_nn.FullyConnectedNet(
            [num_basis] + [radial_hidden] * radial_layers + [self.tp.weight_numel],
            torch.nn.functional.silu,
        )
        self.linear_down = o3.Linear(irreps_mid, irreps_gate_in)
        self.self_interaction = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_attr, irreps_gate_in)
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self,
        features: torch.Tensor,
        attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_basis: torch.Tensor,
        senders: torch.Tensor,
        receivers: torch.Tensor,
    ) -> torch.Tensor:
        x = self.linear_up(features)
        weights = self.radial(edge_basis)
        messages = self.tp(x.index_select(0, senders), edge_sh, weights)
        aggregated = torch.zeros(
            features.shape[0], messages.shape[1], dtype=messages.dtype, device=messages.device
        ).index_add(0, receivers, messages)
        aggregated = aggregated / self.avg_num_neighbors
        out = self.gate(self.linear_down(aggregated) + self.self_interaction(features, attrs))
        if self.residual:
            out = out + features
        return out
