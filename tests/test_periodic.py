"""Periodic boundaries: lattice shifts, triclinic cells, small cells, supercells, the neighbour list."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from conftest import make_model, random_configuration
from multiscale.neighbors import NeighborList

TRICLINIC = np.array([[0.8, 0.0, 0.0], [0.3, 0.75, 0.0], [-0.2, 0.25, 0.7]])  # OpenMM reduced form


def compute(model, pos, types, box):
    out = model.compute(pos, types, box)
    return float(out["energy"]), out["forces"].numpy()


def brute_force_pairs(pos, box, cutoff):
    """Every (i, j, image) with |r_j - r_i + n·box| < cutoff, by enumerating images explicitly."""
    pairs = set()
    reach = 4
    for i, j in itertools.product(range(len(pos)), repeat=2):
        for n in itertools.product(range(-reach, reach + 1), repeat=3):
            if i == j and n == (0, 0, 0):
                continue
            d = pos[j] - pos[i] + np.array(n) @ box
            if np.linalg.norm(d) < cutoff:
                pairs.add((i, j, round(float(np.linalg.norm(d)), 9)))
    return pairs


@pytest.mark.parametrize("box", [np.diag([0.6, 0.7, 0.65]), TRICLINIC, np.diag([0.35, 0.9, 0.9])])
def test_neighbor_list_matches_brute_force_including_small_cells(box):
    cutoff = 0.5  # larger than half of every cell above: several images of one pair are needed
    pos = random_configuration(6, 0.6, seed=3) - 0.3  # some outside the cell: OpenMM does not wrap
    nl = NeighborList(cutoff)
    j, i, vec = nl(torch.tensor(pos), torch.tensor(box))
    got = {(int(a), int(b), round(float(d), 9)) for a, b, d in zip(i, j, vec.norm(dim=1))}
    assert got == brute_force_pairs(pos, box, cutoff)


def test_open_boundaries_neighbor_list_matches_brute_force():
    pos = random_configuration(30, 1.5, seed=8)
    j, i, vec = NeighborList(0.5)(torch.tensor(pos), None)
    d = np.linalg.norm(pos[None, :, :] - pos[:, None, :], axis=-1)
    expected = {(a, b) for a in range(30) for b in range(30) if a != b and d[a, b] < 0.5}
    assert {(int(a), int(b)) for a, b in zip(i, j)} == expected


def test_shifting_a_particle_by_lattice_vectors_changes_nothing(model64):
    pos = random_configuration(10, 0.7, seed=9)
    types = ["O", "H"] * 5
    e0, f0 = compute(model64, pos, types, TRICLINIC)
    shifted = pos.copy()
    shifted[3] += 2 * TRICLINIC[0] - TRICLINIC[1] + 3 * TRICLINIC[2]
    shifted[7] -= TRICLINIC[2]
    e1, f1 = compute(model64, shifted, types, TRICLINIC)
    assert e1 == pytest.approx(e0, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(f1, f0, atol=1e-9)


@pytest.mark.parametrize(
    "box",
    [np.diag([0.9, 0.8, 0.85]), TRICLINIC, np.diag([0.4, 1.0, 1.0])],
    ids=["orthorhombic", "triclinic", "narrower-than-cutoff"],
)
def test_supercell_extensivity(model64, box):
    """E(2×1×1 supercell) = 2 E(cell), forces replicate: the strongest check of image handling."""
    pos = random_configuration(6, 0.4, seed=10) @ np.linalg.inv(np.diag([0.4] * 3)) @ box * 0.95
    types = ["O", "H", "H", "O", "H", "H"]
    e1, f1 = compute(model64, pos, types, box)
    super_pos = np.concatenate([pos, pos + box[0]])
    super_box = box.copy()
    super_box[0] *= 2
    e2, f2 = compute(model64, super_pos, types * 2, super_box)
    assert e2 == pytest.approx(2 * e1, rel=1e-10)
    np.testing.assert_allclose(f2, np.concatenate([f1, f1]), atol=1e-8)


def test_two_copies_beyond_cutoff_are_additive(model64, cluster):
    pos, types = cluster
    e1, f1 = compute(model64, pos, types, None)
    far = pos + np.array([0.0, 0.0, 10.0])
    e2, f2 = compute(model64, np.concatenate([pos, far]), types + types, None)
    assert e2 == pytest.approx(2 * e1, rel=1e-12)
    np.testing.assert_allclose(f2, np.concatenate([f1, f1]), atol=1e-10)


def test_smooth_cutoff_energy_and_force_continuous():
    """Two particles: E(r) is continuous at r_c, and the force vanishes as (r_c - r)^2 or faster."""
    model = make_model(cutoff=0.5)
    types = ["O", "H"]

    def e_f(r):
        out = model.compute(np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]), types)
        return float(out["energy"]), float(out["forces"][1, 0])

    e_far, f_far = e_f(0.6)
    assert f_far == 0.0
    e_in, f_in = e_f(0.5 - 1e-4)
    e_mid, _ = e_f(0.45)
    assert abs(e_mid - e_far) > 1e-6  # the pair does interact inside the cutoff
    assert abs(e_in - e_far) < 1e-9
    assert abs(f_in) < 1e-5
    # force continuity: |F| shrinks at least quadratically approaching r_c
    _, f_a = e_f(0.5 - 2e-3)
    _, f_b = e_f(0.5 - 1e-3)
    assert abs(f_b) < abs(f_a) / 3.5 or abs(f_a) < 1e-12


@pytest.mark.parametrize("chunk_edges", [1, 7, 50])
def test_chunked_edge_evaluation_equals_one_chunk(chunk_edges):
    """The per-edge work runs in chunks of ``model.chunk_edges`` edges on CPU (see
    multiscale.neighbors.edge_chunks); any chunk size, including a last partial chunk, must give
    the energy, forces and virial of a single chunk. Also feeds edges in a scrambled receiver
    order through edge_energies' own re-sorting."""
    model = make_model(cutoff=0.45)
    pos = random_configuration(24, 0.9, seed=11)
    box = np.diag([0.9, 0.9, 0.9])
    types = ["O", "H"] * 12
    model.chunk_edges = 10**9
    reference = model.compute(pos, types, box)
    model.chunk_edges = chunk_edges
    chunked = model.compute(pos, types, box)
    assert model.neighbors.pairs(torch.as_tensor(pos), torch.as_tensor(box))[0].shape[0] > 3 * chunk_edges
    for key in ("energy", "forces"):
        torch.testing.assert_close(chunked[key], reference[key], rtol=1e-11, atol=1e-11)
    if "virial" in reference:
        torch.testing.assert_close(chunked["virial"], reference["virial"], rtol=1e-11, atol=1e-11)
    # scrambled edge order, straight into edge_energies
    i, j, shifts = model.neighbors.pairs(torch.as_tensor(pos), torch.as_tensor(box))
    vectors = torch.as_tensor(pos)[j] - torch.as_tensor(pos)[i] + shifts @ torch.as_tensor(box)
    perm = torch.randperm(i.shape[0], generator=torch.Generator().manual_seed(0))
    t = torch.as_tensor([0, 1] * 12)
    e_sorted = model.edge_energies(t, j, i, vectors).sum()
    e_scrambled = model.edge_energies(t, j[perm], i[perm], vectors[perm]).sum()
    torch.testing.assert_close(e_scrambled, e_sorted, rtol=1e-12, atol=1e-12)
