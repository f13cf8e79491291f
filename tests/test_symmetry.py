"""Energy invariance and force equivariance under E(3) and permutations.

References: the symmetry group itself (translations, random rotations from a QR decomposition,
inversion -I, relabelling of same-type particles) — nothing the model computes is trusted.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_model, random_rotation


def energy_forces(model, pos, types, box=None):
    out = model.compute(pos, types, box)
    return float(out["energy"]), out["forces"].numpy()


def test_translation_invariance(model64, cluster):
    pos, types = cluster
    e0, f0 = energy_forces(model64, pos, types)
    e1, f1 = energy_forces(model64, pos + np.array([3.1, -7.2, 0.45]), types)
    assert e1 == pytest.approx(e0, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(f1, f0, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_invariance_and_force_equivariance(model64, cluster, seed):
    pos, types = cluster
    rot = random_rotation(seed)
    e0, f0 = energy_forces(model64, pos, types)
    e1, f1 = energy_forces(model64, pos @ rot.T, types)
    assert e1 == pytest.approx(e0, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-8)


def test_inversion_invariance_with_parity(model64, cluster):
    pos, types = cluster
    e0, f0 = energy_forces(model64, pos, types)
    e1, f1 = energy_forces(model64, -pos, types)
    assert e1 == pytest.approx(e0, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(f1, -f0, atol=1e-8)


def test_without_parity_model_is_rotation_invariant_but_can_tell_mirror_images(cluster):
    """parity=False is SE(3): still rotation invariant, but a chiral configuration and its
    mirror image get different energies (needs three layers to build a pseudoscalar)."""
    pos, types = cluster
    model = make_model(parity=False, num_layers=3, seed=3)
    e0, _ = energy_forces(model, pos, types)
    e_rot, _ = energy_forces(model, pos @ random_rotation(5).T, types)
    e_mirror, _ = energy_forces(model, -pos, types)
    assert e_rot == pytest.approx(e0, rel=1e-10, abs=1e-10)
    assert abs(e_mirror - e0) > 1e-6


def test_permutation_of_same_type_particles(model64, cluster):
    pos, types = cluster
    e0, f0 = energy_forces(model64, pos, types)
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(types))
    e1, f1 = energy_forces(model64, pos[perm], [types[k] for k in perm])
    assert e1 == pytest.approx(e0, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(f1, f0[perm], atol=1e-9)


def test_swapping_types_changes_energy(model64, cluster):
    """Guard against a model that ignores types (which would pass every invariance test)."""
    pos, types = cluster
    e0, _ = energy_forces(model64, pos, types)
    swapped = ["H" if t == "O" else "O" for t in types]
    e1, _ = energy_forces(model64, pos, swapped)
    assert abs(e1 - e0) > 1e-3


def test_periodic_rotation_of_cell_and_positions(model64):
    """Rotating a triclinic cell together with its contents leaves E invariant, F equivariant."""
    from conftest import random_configuration

    box = np.array([[1.1, 0.0, 0.0], [0.3, 1.0, 0.0], [-0.2, 0.25, 0.95]])
    pos = random_configuration(16, 0.9, seed=4)
    types = ["O", "H"] * 8
    rot = random_rotation(11)
    e0, f0 = energy_forces(model64, pos, types, box)
    e1, f1 = energy_forces(model64, pos @ rot.T, types, box @ rot.T)
    assert e1 == pytest.approx(e0, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-8)
