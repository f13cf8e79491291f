"""Chains made whole across periodic boundaries, by unwrapping along their bonds (nm)."""

from __future__ import annotations

from collections import deque
from typing import List

import mdtraj as md
import numpy as np

from multiscale.cg.topology import BondGraph
from multiscale.cg.analysis.beads import _chain_indices


def make_chains_whole(traj: md.Trajectory) -> np.ndarray:
    """Positions (n_frames, n_atoms, 3) in nm with every chain whole.

    Each chain is unwrapped along a breadth-first spanning tree of its bonds rooted at its first
    bead: a bead is put at its bonded parent plus the minimum-image bond vector
    (``mdtraj.compute_displacements``), so no bond crosses the boundary. The first bead of each
    chain keeps its position. Without a unit cell the positions are returned unchanged. Requires
    every chain to be connected by its bonds and every bond shorter than half the smallest box width.
    """
    xyz = np.array(traj.xyz, dtype=np.float64)
    if traj.unitcell_vectors is None or traj.n_frames == 0:
        return xyz
    neighbors = BondGraph.from_mdtraj(traj.topology).neighbors
    parents: List[int] = []
    children: List[int] = []
    levels: List[int] = []
    for c, chain in enumerate(_chain_indices(traj.topology)):
        if chain.size == 0:
            continue
        members = set(chain.tolist())
        depth = {int(chain[0]): 0}
        queue = deque([int(chain[0])])
        while queue:
            atom = queue.popleft()
            for other in neighbors[atom]:
                if other not in members:
                    raise ValueError(
                        f"bead {atom} (chain {c}) is bonded to bead {other} of another chain; give each molecule one "
                        "chain in the topology (chains = molecules)"
                    )
                if other not in depth:
                    depth[other] = depth[atom] + 1
                    parents.append(atom)
                    children.append(other)
                    levels.append(depth[other])
                    queue.append(other)
        if len(depth) != chain.size:
            missing = sorted(members - set(depth))[:5]
            raise ValueError(
                f"chain {c} is not connected by bonds (beads {missing} are not reachable from bead {chain[0]}); "
                "a chain must be one molecule: add the missing bead bonds to the topology or put each molecule "
                "in its own chain"
            )
    if not children:
        return xyz
    parents_a, children_a, levels_a = (np.asarray(v, dtype=np.int64) for v in (parents, children, levels))
    vectors = np.asarray(md.compute_displacements(traj, np.stack([parents_a, children_a], axis=1), periodic=True),
                         dtype=np.float64)  # (frames, edges, 3), child − parent, minimum image
    for level in range(1, int(levels_a.max()) + 1):
        edges = np.flatnonzero(levels_a == level)
        xyz[:, children_a[edges]] = xyz[:, parents_a[edges]] + vectors[:, edges]
    return xyz

