"""Radial basis of an edge length: Bessel functions times a smooth polynomial envelope.

The envelope u(x), x = r / r_c, is the DimeNet polynomial (Gasteiger et al., ICLR 2020)

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2),   x < 1;   0 otherwise,

with u(1) = u'(1) = u''(1) = 0, so every radial feature, and with it energy and force, goes
continuously (and smoothly) to zero at the cutoff.
"""

from __future__ import annotations

import math

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

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        basis = self.prefactor * torch.sin(self.frequencies * r) / r
        return basis * self.envelope(r)
