"""Geometry of bead (or atom) configurations under periodic boundaries, in numpy: minimum-image
displacements, distances, angles and dihedrals over trajectories (T frames).

Units: nm, rad. Cells are (T, 3, 3) or (3, 3) with rows a, b, c (OpenMM's convention).
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

import numpy as np


def _as_frames(positions: np.ndarray) -> np.ndarray:
    x = np.asarray(positions, dtype=float)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"positions must have shape (T, n_beads, 3) or (n_beads, 3) in nm, got {x.shape}")
    return x


def _as_boxes(boxes: Optional[np.ndarray], n_frames: int) -> Optional[np.ndarray]:
    if boxes is None:
        return None
    b = np.asarray(boxes, dtype=float)
    if b.shape == (3, 3):
        b = np.broadcast_to(b, (n_frames, 3, 3))
    if b.shape != (n_frames, 3, 3):
        raise ValueError(
            f"boxes must have shape (T, 3, 3) = ({n_frames}, 3, 3) or (3, 3), rows = cell vectors in nm; got {b.shape}"
        )
    volume = np.abs(np.linalg.det(b))
    if not np.all(np.isfinite(b)) or np.any(volume < 1e-9):
        bad = int(np.argmax(~np.isfinite(volume) | (volume < 1e-9)))
        raise ValueError(f"box of frame {bad} is degenerate or not finite (volume {volume[bad]:.3g} nm^3)")
    return b


def _as_index(index: Any, width: int, what: str, n_beads: int) -> np.ndarray:
    arr = np.asarray(index if index is not None else [], dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, width), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must be a list of {width}-tuples of bead indices, got shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= n_beads:
        raise ValueError(f"{what} index out of range [0, {n_beads}): min {arr.min()}, max {arr.max()}")
    for a, b in itertools.combinations(range(width), 2):
        same = np.nonzero(arr[:, a] == arr[:, b])[0]
        if same.size:
            raise ValueError(f"{what} entry {arr[same[0]].tolist()} repeats a bead index")
    return arr


_SHIFTS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)


def minimum_image(vectors: np.ndarray, boxes: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-image displacement vectors (nm) for ``vectors`` (T, M, 3) in cells ``boxes`` (T, 3, 3).

    Wraps fractional coordinates into [−½, ½), then, for any vector longer than half the
    smallest cell height (the only ones that may not yet be minimal), searches the 26 neighbouring
    images. Exact for cells in OpenMM's reduced triclinic form. ``boxes=None``: returned unchanged.
    """
    d = np.asarray(vectors, dtype=float)
    if boxes is None:
        return d
    boxes = np.asarray(boxes, dtype=float)
    frac = np.einsum("tmi,tij->tmj", d, np.linalg.inv(boxes))
    frac -= np.round(frac)
    d = np.einsum("tmj,tjk->tmk", frac, boxes)
    volume = np.abs(np.linalg.det(boxes))
    a, b, c = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    areas = np.stack([np.linalg.norm(np.cross(b, c), axis=-1), np.linalg.norm(np.cross(c, a), axis=-1),
                      np.linalg.norm(np.cross(a, b), axis=-1)], axis=-1)
    half_height = 0.5 * volume / areas.max(axis=-1)
    suspect = np.linalg.norm(d, axis=-1) > half_height[:, None] * (1.0 - 1e-12)
    if suspect.any():
        t, m = np.nonzero(suspect)
        images = d[t, m][:, None, :] + np.einsum("sk,bkl->bsl", _SHIFTS, boxes[t])
        best = np.argmin(np.einsum("bsl,bsl->bs", images, images), axis=1)
        d = d.copy()
        d[t, m] = images[np.arange(len(t)), best]
    return d


def _displacements(x: np.ndarray, i: np.ndarray, j: np.ndarray, boxes: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-image r_j − r_i, shape (T, M, 3)."""
    return minimum_image(x[:, j] - x[:, i], boxes)


def bond_lengths(positions: np.ndarray, bonds: Any, boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """Minimum-image distances (nm) of the bead pairs ``bonds`` (M, 2); returns (T, M)."""
    x = _as_frames(positions)
    idx = _as_index(bonds, 2, "bonds", x.shape[1])
    d = _displacements(x, idx[:, 0], idx[:, 1], _as_boxes(boxes, x.shape[0]))
    return np.linalg.norm(d, axis=-1)


#: Distances of arbitrary bead pairs (e.g. from :func:`nonbonded_pairs`), nm; same as bond_lengths.
pair_distances = bond_lengths


def bond_angles(positions: np.ndarray, angles: Any, boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """Angles i–j–k (rad, in [0, π]) at vertex j for ``angles`` (M, 3), minimum image; returns (T, M)."""
    x = _as_frames(positions)
    idx = _as_index(angles, 3, "angles", x.shape[1])
    box = _as_boxes(boxes, x.shape[0])
    u = _displacements(x, idx[:, 1], idx[:, 0], box)
    v = _displacements(x, idx[:, 1], idx[:, 2], box)
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.einsum("tmk,tmk->tm", u, v))


def dihedral_angles(positions: np.ndarray, dihedrals: Any, boxes: Optional[np.ndarray] = None) -> np.ndarray:
    """Dihedral angles i–j–k–l (rad, in (−π, π]) for ``dihedrals`` (M, 4); returns (T, M).

    IUPAC convention, as OpenMM's PeriodicTorsionForce: cis = 0, trans = ±π, positive when the
    bond j→i must turn clockwise, looking along j→k, to eclipse k→l.
    φ = atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3)) with b1 = r_j − r_i, b2 = r_k − r_j, b3 = r_l − r_k.
    """
    x = _as_frames(positions)
    idx = _as_index(dihedrals, 4, "dihedrals", x.shape[1])
    box = _as_boxes(boxes, x.shape[0])
    b1 = _displacements(x, idx[:, 0], idx[:, 1], box)
    b2 = _displacements(x, idx[:, 1], idx[:, 2], box)
    b3 = _displacements(x, idx[:, 2], idx[:, 3], box)
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("tmk,tmk->tm", b1, n2)
    return np.arctan2(y, np.einsum("tmk,tmk->tm", n1, n2))


def whole_molecules(positions: np.ndarray, bonds: Any, box: Optional[np.ndarray]) -> np.ndarray:
    """``positions`` (N, 3) nm with every molecule (a connected part of the graph of ``bonds``
    (M, 2)) made whole: each bead moved by whole cell vectors of ``box`` (3, 3) to the image
    nearest the bead it is bonded to, walking each molecule outwards from its first bead. Unbonded
    and first beads stay where they are; ``box=None`` returns a copy."""
    x = np.array(positions, dtype=float)
    if box is None or x.size == 0:
        return x
    idx = _as_index(bonds, 2, "bonds", x.shape[0])
    if len(idx) == 0:
        return x
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n = x.shape[0]
    # one breadth-first walk from a virtual bead n joined to the first bead of every molecule
    _, label = connected_components(coo_matrix((np.ones(len(idx)), (idx[:, 0], idx[:, 1])), shape=(n, n)), directed=False)
    _, first = np.unique(label, return_index=True)
    rows = np.concatenate([idx[:, 0], np.full(len(first), n)])
    cols = np.concatenate([idx[:, 1], first])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + 1, n + 1)).tocsr()
    order, predecessors = breadth_first_order(graph, n, directed=False, return_predecessors=True)
    parent = np.where(predecessors[:n] == n, -1, predecessors[:n])
    depth = np.zeros(n, dtype=int)
    for v in order[1:]:  # BFS order: a bead's parent comes before it
        if parent[v] >= 0:
            depth[v] = depth[parent[v]] + 1
    moved = np.nonzero(parent >= 0)[0]
    # bond vectors in the minimum image (of the input: moving beads by cell vectors keeps them)
    step = np.zeros_like(x)
    step[moved] = minimum_image((x[moved] - x[parent[moved]])[None], np.asarray(box, dtype=float)[None])[0]
    for level in range(1, int(depth.max()) + 1):
        at = moved[depth[moved] == level]
        x[at] = x[parent[at]] + step[at]
    return x
