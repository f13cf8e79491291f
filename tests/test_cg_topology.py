"""multiscale.cg.topology.BondGraph against independent constructions: graph distances by
Floyd–Warshall (scipy), connected components by scipy, and angle/dihedral counts from degrees."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, shortest_path

from multiscale.cg.topology import BondGraph


def random_graph(n=40, bonds=45, seed=0):
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < bonds:
        i, j = rng.integers(0, n, 2)
        if i != j:
            pairs.add((int(min(i, j)), int(max(i, j))))
    return n, sorted(pairs)


@pytest.mark.parametrize("hops", [1, 2, 3, 5])
def test_pairs_within_hops_match_shortest_paths(hops):
    n, bonds = random_graph()
    graph = BondGraph(n, bonds + [(b, a) for a, b in bonds[:5]] + [(3, 3)])  # duplicates and a self-bond ignored
    adjacency = sp.coo_matrix((np.ones(len(bonds)), np.array(bonds).T), shape=(n, n))
    distance = shortest_path(adjacency, directed=False, unweighted=True)
    i, j = np.nonzero(np.triu(distance <= hops, k=1))
    np.testing.assert_array_equal(graph.within(hops), np.stack([i, j], axis=1))
    assert graph.exclusions("1-3").tolist() == graph.within(2).tolist()


def test_angles_dihedrals_and_molecules():
    n, bonds = random_graph(seed=3)
    graph = BondGraph(n, bonds)
    degree = np.bincount(np.array(bonds).ravel(), minlength=n)
    assert len(graph.angles()) == int(sum(d * (d - 1) // 2 for d in degree))
    bonded = {tuple(b) for b in bonds}
    for i, j, k in graph.angles():
        assert tuple(sorted((i, j))) in bonded and tuple(sorted((j, k))) in bonded and i < k
    for i, j, k, l in graph.dihedrals():
        assert len({i, j, k, l}) == 4 and j < k
        assert all(tuple(sorted(p)) in bonded for p in ((i, j), (j, k), (k, l)))
    # every path of three bonds appears once
    paths = {(i, j, k, l) for j, k in bonds for i in graph.neighbors[j] for l in graph.neighbors[k] if len({i, j, k, l}) == 4}
    assert len(graph.dihedrals()) == len(paths)
    count, labels = connected_components(sp.coo_matrix((np.ones(len(bonds)), np.array(bonds).T), shape=(n, n)), directed=False)
    molecules = graph.molecules()
    assert len(molecules) == count
    for members in molecules:
        assert len(set(labels[members])) == 1 and np.sum(labels == labels[members[0]]) == len(members)
    with pytest.raises(ValueError, match="outside"):
        BondGraph(3, [(0, 5)])
