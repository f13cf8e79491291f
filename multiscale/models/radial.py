"""Radial basis of an edge length: Bessel functions times a smooth polynomial envelope.

The envelope u(x), x = r / r_c, is the DimeNet polynomial (Gasteiger et al., ICLR 2020)

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),   x < 1;   0 otherwise,

with u(1) = u'(1) = u''(1) = 0, so every radial feature, and with it energy and force, goes
continuously (and smoothly) to zero at the cutoff.
"""

from __future__ import annotations

import math
from typing import List

import torch
from e3nn.util.jit import compile_mode


@compile_mode("script")
class PolynomialEnvelope(torch.nn.Module):
    """Smooth cutoff envelope u(r / r_c) with exponent ``p``; r and ``cutoff`` in nm."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        if p < 2:
            raise ValueError(f"envelope exponent p must be >= 2 for a smooth cutoff, got {p}")
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        u = (
            1.0
            - 0.5 * (p + 1.0) * (p + 2.0) * x.pow(p)
            + p * (p + 2.0) * x.pow(p + 1.0)
            - 0.5 * p * (p + 1.0) * x.pow(p + 2.0)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))


@compile_mode("script")
class BesselBasis(torch.nn.Module):
    """``num_basis`` radial Bessel functions sqrt(2/r_c) sin(n pi r / r_c) / r, times the envelope.

    Returns (E, num_basis). The frequencies n·pi/r_c are trainable, as in NequIP.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_exponent: int = 6):
        super().__init__()
        if num_basis < 1:
            raise ValueError(f"num_basis must be >= 1, got {num_basis}")
        self.cutoff = float(cutoff)
        self.num_basis = int(num_basis)
        self.prefactor = math.sqrt(2.0 / self.cutoff)
        self.frequencies = torch.nn.Parameter(torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff)
        self.envelope = PolynomialEnvelope(cutoff, envelope_exponent)
        # The cutoff the basis (and the weights trained on it) belongs to, saved with the weights:
        # a checkpoint whose configuration was edited to another cutoff is refused on loading.
        self.register_buffer("cutoff_nm", torch.tensor(self.cutoff, dtype=torch.float64))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        basis = self.prefactor * torch.sin(self.frequencies * r) / r
        return basis * self.envelope(r)


@compile_mode("script")
class RadialMLP(torch.nn.Module):
    """Edge-length basis (E, num_basis) → per-edge tensor-product weights for every layer.

    One bias-free SiLU trunk is shared by all interaction blocks, with one linear head per block
    (the heads are fused into the last matrix). Bias-free with SiLU(0) = 0 keeps the weights zero
    wherever the enveloped basis is zero, i.e. at and beyond the cutoff. Sharing the trunk matters
    for memory: per-edge activations are the largest tensors of the network (E ≈ 50 N).
    """

    def __init__(self, num_basis: int, hidden: int, num_layers: int, out_sizes: List[int]):
        super().__init__()
        sizes = [int(num_basis)] + [int(hidden)] * int(num_layers)
        self.trunk = torch.nn.ModuleList(
            [torch.nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:])]
        )
        self.head = torch.nn.Linear(sizes[-1], int(sum(out_sizes)), bias=False)
        self.out_sizes: List[int] = [int(n) for n in out_sizes]
        # Variance-preserving initialisation for SiLU (gain ≈ 1.68), so weights start O(1).
        for layer in self.trunk:
            torch.nn.init.normal_(layer.weight, std=1.68 / math.sqrt(layer.in_features))
        torch.nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(self.head.in_features))

    def forward(self, basis: torch.Tensor) -> List[torch.Tensor]:
        x = basis
        for layer in self.trunk:
            x = torch.nn.functional.silu(layer(x))
        return list(self.head(x).split(self.out_sizes, dim=1))
