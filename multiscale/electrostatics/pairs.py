"""Pair lists for electrostatics: a half list of the pairs within the real-space cutoff, one
shared list split from a full one, every pair of a cluster, and minimum-image vectors of
excluded pairs. Positions, box and distances in nm; TorchScript-compatible.
"""

from __future__ import annotations

from typing import List, Optional

import torch


def half_of_full(i: torch.Tensor, j: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Mask that keeps one direction of every pair of a full list (both i→j and j→i listed):
    i < j, or for a particle and its own periodic image (i == j) the shift whose first nonzero
    component is positive."""
    same = i == j
    first = torch.where(shifts[:, 0] != 0, shifts[:, 0], torch.where(shifts[:, 1] != 0, shifts[:, 1], shifts[:, 2]))
    return (i < j) | (same & (first > 0))


def all_pairs(num_particles: int, device: torch.device) -> List[torch.Tensor]:
    """``[i, j]`` of every pair i < j (a cluster's direct sum)."""
    index = torch.triu_indices(num_particles, num_particles, 1, device=device)
    return [index[0], index[1]]


def pair_vectors(
    positions: torch.Tensor, i: torch.Tensor, j: torch.Tensor, shifts: Optional[torch.Tensor], box: Optional[torch.Tensor]
) -> torch.Tensor:
    """r_j − r_i (+ shift·box), differentiable with respect to positions and box."""
    vectors = positions.index_select(0, j) - positions.index_select(0, i)
    if box is not None and shifts is not None:
        vectors = vectors + shifts @ box
    return vectors


def minimum_image_vectors(
    positions: torch.Tensor, i: torch.Tensor, j: torch.Tensor, box: Optional[torch.Tensor]
) -> torch.Tensor:
    """r_j − r_i of the nearest image (OpenMM's convention for excluded pairs; exact for pairs
    closer than half the narrowest cell width, which bonded exclusions always are)."""
    vectors = positions.index_select(0, j) - positions.index_select(0, i)
    if box is None:
        return vectors
    fractional = vectors.detach() @ torch.linalg.inv(box.detach())
    return vectors - torch.round(fractional) @ box
