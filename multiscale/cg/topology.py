"""The bead graph: particles joined by bonds, and what follows from the bonds alone.

:class:`BondGraph` owns neighbour lists, angles and dihedrals derived from bonds, the pairs within
n bonds (non-bonded exclusions "1-2", "1-3", "1-4"), the neighbourhood of a set of particles, and
molecules (connected components). Priors, force maps, analysis and the mapping take their bonded
structure from here. Geometry (distances, angles in space) is :mod:`multiscale.cg.geometry`; who
is near whom in space is :mod:`multiscale.neighbors`.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, List, Sequence

import numpy as np


class BondGraph:
    """``n`` particles (0..n−1) and their bonds (pairs; order, duplicates and self-bonds ignored).

    Attributes: ``n``, ``bonds`` (B, 2) int64 with i < j, sorted, unique; ``neighbors`` (list of
    sorted neighbour lists).
    """

    def __init__(self, n: int, bonds: Iterable[Sequence[int]]):
        self.n = int(n)
        pairs = sorted({(min(int(i), int(j)), max(int(i), int(j))) for i, j in bonds if int(i) != int(j)})
        for i, j in pairs:
            if i < 0 or j >= self.n:
                raise ValueError(f"bond ({i}, {j}) names a particle outside 0..{self.n - 1}")
        self.bonds = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        neighbors: List[List[int]] = [[] for _ in range(self.n)]
        for i, j in pairs:
            neighbors[i].append(j)
            neighbors[j].append(i)
        self.neighbors = [sorted(nb) for nb in neighbors]

    @classmethod
    def from_mdtraj(cls, topology) -> "BondGraph":
        """The graph of an ``mdtraj.Topology``'s bonds."""
        return cls(topology.n_atoms, [(b[0].index, b[1].index) for b in topology.bonds])

    def angles(self) -> np.ndarray:
        """(M, 3) triples (i, j, k) for every pair of bonds sharing the apex j, i < k, ordered by
        apex j and then by (i, k)."""
        out = [(i, j, k) for j in range(self.n) for a, i in enumerate(self.neighbors[j]) for k in self.neighbors[j][a + 1:]]
        return np.asarray(out, dtype=np.int64).reshape(-1, 3)

    def dihedrals(self) -> np.ndarray:
        """(M, 4) quadruples (i, j, k, l) along bonds i–j, j–k, k–l with four distinct particles,
        one orientation per quadruple: the central bond j < k (ordered by it, then by i and l)."""
        out = [(i, j, k, l) for j, k in self.bonds.tolist() for i in self.neighbors[j] if i != k
               for l in self.neighbors[k] if l != j and l != i]
        return np.asarray(out, dtype=np.int64).reshape(-1, 4)

    def within(self, hops: int) -> np.ndarray:
        """(P, 2) pairs (i < j) at most ``hops`` bonds apart, sorted (hops 1: the bonds; 2: also
        1-3 pairs; 3: also 1-4 pairs)."""
        pairs = set()
        for start in range(self.n):
            reached = self.neighbourhood([start], hops)
            pairs.update((start, int(other)) for other in reached if other > start)
        return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)

    def separated(self, hops: int) -> np.ndarray:
        """(P, 2) pairs (i < j) whose shortest bond path is exactly ``hops`` bonds long, sorted
        (hops 4: the 1-5 pairs of a chain)."""
        if hops < 1:
            raise ValueError(f"hops must be >= 1, got {hops}")
        closer = {tuple(p) for p in self.within(hops - 1).tolist()}
        pairs = [tuple(p) for p in self.within(hops).tolist() if tuple(p) not in closer]
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def neighbourhood(self, seed: Iterable[int], hops: int) -> np.ndarray:
        """Sorted particles at most ``hops`` bonds from any particle of ``seed`` (the seed included)."""
        seed = [int(a) for a in seed]
        if hops <= 0:
            return np.asarray(sorted(set(seed)), dtype=int)
        depth = {a: 0 for a in seed}
        queue = deque(seed)
        while queue:
            node = queue.popleft()
            if depth[node] == hops:
                continue
            for other in self.neighbors[node]:
                if other not in depth:
                    depth[other] = depth[node] + 1
                    queue.append(other)
        return np.asarray(sorted(depth), dtype=int)

    def exclusions(self, rule: str) -> np.ndarray:
        """Pairs excluded from non-bonded terms by ``rule`` "1-2", "1-3" or "1-4" (see :meth:`within`)."""
        depth = {"1-2": 1, "1-3": 2, "1-4": 3}
        if rule not in depth:
            raise ValueError(f"exclusion must be one of {sorted(depth)}, got {rule!r}")
        return self.within(depth[rule])

    def molecules(self) -> List[np.ndarray]:
        """Connected components (each a sorted index array), ordered by their smallest particle."""
        label = np.full(self.n, -1, dtype=np.int64)
        out: List[np.ndarray] = []
        for start in range(self.n):
            if label[start] >= 0:
                continue
            members = self.neighbourhood([start], self.n)
            label[members] = len(out)
            out.append(members)
        return out


def pair_codes(pairs: np.ndarray, n: int) -> np.ndarray:
    """Pairs (i < j) encoded as i·n + j (sorted), for fast membership tests with ``np.isin``."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return np.sort(pairs[:, 0] * n + pairs[:, 1])


