"""Internal coordinates of the CG terms and their gradients with respect to each term's own beads,
for the linear force-matching design (:mod:`multiscale.cg.tabulated.fit`).

Each term sees its beads as a local, unwrapped copy (successive bond vectors minimum-imaged), so a
coordinate's gradient with respect to the local copy is its gradient with respect to the beads.
The gradients come from torch autograd on the independent per-term copies (one backward pass per
coordinate kind), not from hand-written formulas. Units: nm, rad.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch

from multiscale.cg.geometry import minimum_image


def local_copies(positions: np.ndarray, index: np.ndarray, box: Optional[np.ndarray]) -> np.ndarray:
    """(T, m, 3) unwrapped copies of the beads ``index`` (T, m): bead 0 where it is, each next
    bead at the previous one plus the minimum-image bond vector."""
    x = np.asarray(positions, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    out = np.empty(index.shape + (3,))
    if index.size == 0:
        return out
    out[:, 0] = x[index[:, 0]]
    for m in range(1, index.shape[1]):
        step = x[index[:, m]] - x[index[:, m - 1]]
        if box is not None:
            step = minimum_image(step[None], np.asarray(box, dtype=np.float64)[None])[0]
        out[:, m] = out[:, m - 1] + step
    return out


def _angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    u, v = a - b, c - b
    return torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))


def _dihedral(p: torch.Tensor) -> torch.Tensor:
    b1, b2, b3 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
    m1 = torch.cross(n1, b2 / torch.linalg.norm(b2, dim=-1, keepdim=True), dim=-1)
    return torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


def _value_and_gradient(local: np.ndarray, fn) -> Tuple[np.ndarray, np.ndarray]:
    leaf = torch.tensor(local, dtype=torch.float64, requires_grad=True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value.sum(), leaf)
    return value.detach().numpy(), grad.numpy()


def distances(local: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """r (T,) and ∂r/∂x (T, 2, 3) of bead pairs given as (T, 2, 3) local copies."""
    return _value_and_gradient(local, lambda p: torch.linalg.norm(p[:, 1] - p[:, 0], dim=-1))


def angles(local: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """θ (T,) at the middle bead and ∂θ/∂x (T, 3, 3)."""
    return _value_and_gradient(local, lambda p: _angle(p[:, 0], p[:, 1], p[:, 2]))


def bending_torsion(local: np.ndarray, order: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The combined bending–torsion basis eₙ = sin³θ₁ sin³θ₂ cos nφ, n = 0..order, of dihedrals
    given as (T, 4, 3) local copies: returns (θ₁θ₂φ (T, 3), eₙ (T, order+1), ∂eₙ/∂x (T, order+1, 4, 3))."""
    leaf = torch.tensor(local, dtype=torch.float64, requires_grad=True)
    t1 = _angle(leaf[:, 0], leaf[:, 1], leaf[:, 2])
    t2 = _angle(leaf[:, 1], leaf[:, 2], leaf[:, 3])
    phi = _dihedral(leaf)
    prefactor = torch.sin(t1) ** 3 * torch.sin(t2) ** 3
    values, grads = [], []
    for n in range(order + 1):
        e = prefactor * torch.cos(n * phi)
        (g,) = torch.autograd.grad(e.sum(), leaf, retain_graph=n < order)
        values.append(e.detach())
        grads.append(g)
    coords = torch.stack([t1, t2, phi], dim=1).detach().numpy()
    return coords, torch.stack(values, 1).numpy(), torch.stack(grads, 1).numpy()
