"""One equivariant message-passing layer (NequIP-style interaction block).

    m_i   = 1/<n> Σ_j  TP( h_j , Y(r̂_ij) ; w(|r_ij|) )      e3nn tensor product, per-edge weights
    h_i'  = Gate( Linear(m_i) + SelfInteraction(h_i ⊗ onehot(t_i)) )
    h_i  <- h_i + h_i'   (residual, when the irreps agree)

The tensor product is :class:`EdgeTensorProduct` (e3nn's 'uvu' product, memory-lean).
w(|r|) (``weight_chunks``) comes from the shared RadialMLP of the enveloped Bessel basis (w(r_c) = 0); Y are spherical
harmonics up to lmax. Because every operation is an e3nn equivariant map, the block is
E(3)-equivariant (SE(3) only if the model is built with parity=False).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from e3nn.util.jit import compile_mode

from multiscale.models.tensor_product import EdgeTensorProduct


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
        self.tp = EdgeTensorProduct(self.irreps_in, irreps_sh, irreps_gate_in)
        irreps_mid = self.tp.irreps_out
        self.weight_numel = self.tp.weight_numel
        self.linear_down = o3.Linear(irreps_mid, irreps_gate_in)
        self.self_interaction = o3.FullyConnectedTensorProduct(self.irreps_in, irreps_attr, irreps_gate_in)
        self.residual = self.irreps_in == self.irreps_out

    def forward(
        self,
        features: torch.Tensor,
        attrs: torch.Tensor,
        sh_chunks: List[torch.Tensor],
        weight_chunks: List[torch.Tensor],
        senders: torch.Tensor,
        receiver_chunks: List[torch.Tensor],
        edge_sizes: List[int],
    ) -> torch.Tensor:
        """The edges come in consecutive chunks (see :func:`multiscale.neighbors.edge_chunks`):
        chunk ``c`` has ``edge_sizes[c]`` edges with spherical harmonics ``sh_chunks[c]``,
        tensor-product weights ``weight_chunks[c]`` and receivers ``receiver_chunks[c]``;
        ``senders`` holds all edges' senders."""
        x = self.linear_up(features)
        aggregated = self.tp.message_passing(x, senders, sh_chunks, weight_chunks, receiver_chunks, edge_sizes)
        aggregated = aggregated / self.avg_num_neighbors
        out = self.gate(self.linear_down(aggregated) + self.self_interaction(features, attrs))
        if self.residual:
            out = out + features
        return out
