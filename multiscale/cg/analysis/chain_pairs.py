"""Distances between the beads of one molecule a given number of bonds apart (nm): the 1-5, 1-6, …
pairs of a chain, what sets its shape beyond the bond, angle and torsion distributions. Measured
on chains made whole (:func:`~multiscale.cg.analysis.chains.make_chains_whole`), so a pair
further apart than half the box is right (the 1-6 pair of a 6-bead chain is its end-to-end
distance, often longer than half of a small melt's box)."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import mdtraj as md
import numpy as np

from multiscale.cg.analysis.beads import _type_key, bead_types
from multiscale.cg.analysis.chains import make_chains_whole
from multiscale.cg.topology import BondGraph

#: (bonds apart, type a, type b), the types in canonical order
ChainPairKey = Tuple[int, str, str]


def chain_pair_values(traj: md.Trajectory, separations: Iterable[int], *,
                      types: Optional[Sequence[str]] = None) -> Dict[ChainPairKey, np.ndarray]:
    """Sampled distances (nm) of every bead pair whose shortest bond path is ``s`` bonds long, for
    each ``s`` in ``separations``, grouped by (s, canonical type pair): ``{(4, "E", "M"): values}``,
    each ``values`` a 1-D array over all frames and all pairs of that key. Types as in
    :func:`~multiscale.cg.analysis.bonded_values`."""
    separations = sorted({int(s) for s in separations})
    if any(s < 2 for s in separations):
        raise ValueError(f"separations are numbers of bonds >= 2 (4 for the 1-5 pairs), got {separations}")
    names = bead_types(traj.topology, types)
    graph = BondGraph.from_mdtraj(traj.topology)
    out: Dict[ChainPairKey, np.ndarray] = {}
    if traj.n_frames == 0 or not separations:
        return out
    xyz = make_chains_whole(traj)
    for s in separations:
        pairs = graph.separated(s)
        if len(pairs) == 0:
            continue
        r = np.linalg.norm(xyz[:, pairs[:, 1]] - xyz[:, pairs[:, 0]], axis=-1)  # (frames, pairs)
        groups: Dict[ChainPairKey, list] = {}
        for column, (i, j) in enumerate(pairs.tolist()):
            groups.setdefault((s,) + _type_key([names[i], names[j]]), []).append(column)
        for key in sorted(groups):
            out[key] = r[:, groups[key]].ravel()
    return out
