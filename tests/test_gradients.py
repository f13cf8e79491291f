"""Forces and stress against 4th-order central finite differences of the energy (float64)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import random_configuration

H = 1e-4  # nm


def fd4(f, h=H):
    """4th-order central difference of a scalar function of one variable at 0."""
    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


def energy(model, pos, types, box=None):
    return float(model.compute(pos, types, box, forces=False)["energy"])


@pytest.mark.parametrize("periodic", [False, True])
def test_forces_are_minus_gradient(model64, periodic):
    types = ["O", "H", "H", "O", "H", "H", "O", "H"]
    box = np.array([[0.9, 0.0, 0.0], [0.2, 0.85, 0.0], [-0.1, 0.15, 0.8]]) if periodic else None
    pos = random_configuration(len(types), 0.75, seed=2)
    forces = model64.compute(pos, types, box)["forces"].numpy()
    fd = np.zeros_like(forces)
    for a in range(len(types)):
        for k in range(3):
            def e_of(d, a=a, k=k):
                p = pos.copy()
                p[a, k] += d
                return energy(model64, p, types, box)
            fd[a, k] = -fd4(e_of)
    scale = np.abs(forces).max()
    assert scale > 1e-2  # the check below must not be trivially satisfied
    np.testing.assert_allclose(forces, fd, atol=1e-6 * scale + 1e-8)


def test_stress_is_strain_derivative(model64):
    """stress·V = ∂E/∂ε for a symmetric homogeneous strain of cell and positions."""
    types = ["O", "H", "H"] * 4
    box = np.array([[1.0, 0.0, 0.0], [0.25, 0.95, 0.0], [-0.15, 0.2, 0.9]])
    pos = random_configuration(len(types), 0.85, seed=5)
    out = model64.compute(pos, types, box, stress=True)
    volume = np.linalg.det(box)
    dE_deps = out["stress"].numpy() * volume
    np.testing.assert_allclose(out["virial"].numpy(), -dE_deps, rtol=1e-12, atol=1e-12)
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e_ab = np.zeros((3, 3))
            e_ab[a, b] += 0.5
            e_ab[b, a] += 0.5

            def e_of(d, e_ab=e_ab):
                deform = np.eye(3) + d * e_ab
                return energy(model64, pos @ deform, types, box @ deform)

            fd[a, b] = fd4(e_of)
    assert np.abs(fd).max() > 1e-2
    np.testing.assert_allclose(dE_deps, fd, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(dE_deps, dE_deps.T, atol=1e-10)


def test_forces_sum_to_zero(model64):
    types = ["O", "H"] * 10
    pos = random_configuration(len(types), 1.0, seed=6)
    for box in (None, np.diag([1.05, 0.98, 1.1])):
        forces = model64.compute(pos, types, box)["forces"].numpy()
        assert np.abs(forces).max() > 1e-2
        np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-9 * np.abs(forces).max() * len(types))
