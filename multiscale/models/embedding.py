"""Type embedding: particle type index → one-hot attributes → learned invariant features."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode


@compile_mode("script")
class TypeEmbedding(torch.nn.Module):
    """Maps type indices (N,) to one-hot attributes ``num_types x 0e`` and to
    initial node features ``irreps_out`` (scalars only) through an e3nn Linear."""

    def __init__(self, num_types: int, irreps_out: o3.Irreps):
        super().__init__()
        self.num_types = int(num_types)
        self.irreps_attr = o3.Irreps(f"{self.num_types}x0e")
        self.irreps_out = o3.Irreps(irreps_out)
        self.linear = o3.Linear(self.irreps_attr, self.irreps_out)

    def attributes(self, types: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return torch.nn.functional.one_hot(types, self.num_types).to(dtype)

    def forward(self, attrs: torch.Tensor) -> torch.Tensor:
        return self.linear(attrs)
