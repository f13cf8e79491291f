"""Force matching recovers an analytic potential of mean force.

Fine model: beads A and B plus a hidden particle C,

    U = ½ k_AB (|r_AB| − r0)² + ½ k_AC |r_C − r_A|² + ½ k_BC |r_C − r_B|².

Integrating C out of exp(−U/kT) is a Gaussian integral, so the exact PMF of the A–B pair is

    W(r) = ½ k_AB (r − r0)² + ½ k_eff r²,   k_eff = k_AC k_BC / (k_AC + k_BC),

and the mean force along the pair is −dW/dr. The CG map keeps A and B (C unmapped; M_f = M_x =
identity on A, B). For each CG configuration C is drawn from its exact conditional Boltzmann
distribution, so the instantaneous mapped forces are noisy and only their conditional mean is
−∇W (Noid et al. 2008). A force-only fit of the equivariant network must recover −dW/dr.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiscale.data import Configuration
from multiscale.training.config import TrainerConfig
from multiscale.training.loss import LossConfig
from multiscale.training.workflow import JobConfig, fit_potential
from multiscale.units import kT

K_AB, R0, K_AC, K_BC, TEMPERATURE = 2000.0, 0.35, 600.0, 400.0, 300.0
K_EFF = K_AC * K_BC / (K_AC + K_BC)


def mean_force(r):
    """−dW/dr along the A→B direction (kJ/mol/nm)."""
    return -(K_AB * (r - R0) + K_EFF * r)


def sample(n, rng):
    configs = []
    beta_kt = kT(TEMPERATURE)
    for _ in range(n):
        r = rng.uniform(0.26, 0.44)
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        a = rng.normal(scale=0.05, size=3)
        b = a + r * u
        mean_c = (K_AC * a + K_BC * b) / (K_AC + K_BC)
        c = mean_c + rng.normal(scale=np.sqrt(beta_kt / (K_AC + K_BC)), size=3)
        f_bond = -K_AB * (r - R0) * u  # force on B from the A–B bond
        f_a = -f_bond + K_AC * (c - a)
        f_b = f_bond + K_BC * (c - b)
        configs.append(Configuration(["A", "B"], np.array([a, b]), forces=np.array([f_a, f_b])))
    return configs


@pytest.mark.slow
def test_force_matching_recovers_analytic_pmf(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, valid = sample(600, rng), sample(100, rng)
    noise = np.std([c.forces[1] @ (c.positions[1] - c.positions[0]) / np.linalg.norm(c.positions[1] - c.positions[0])
                    - mean_force(np.linalg.norm(c.positions[1] - c.positions[0])) for c in train])
    job = JobConfig(
        model={"cutoff": 0.6, "channels": 8, "num_layers": 1, "lmax": 1, "radial_hidden": 16, "num_basis": 8},
        trainer=TrainerConfig(epochs=60, batch_size=32, learning_rate=1e-2, device="cpu", early_stopping_patience=0,
                              scheduler="cosine"),  # no max_time: the result must not depend on the host's speed
        loss=LossConfig(force_only=True),
    )
    model, result, _ = fit_potential(train, valid, tmp_path, job, progress=False)
    grid = np.linspace(0.28, 0.42, 8)
    learned = []
    for r in grid:
        out = model.compute(np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]), ["A", "B"])
        learned.append(float(out["forces"][1, 0]))
        assert float(out["forces"][0, 0]) == pytest.approx(-learned[-1], abs=1e-3)  # Newton's third law
    learned = np.array(learned)
    exact = mean_force(grid)
    span = exact.max() - exact.min()
    # The instantaneous forces scatter by `noise` (~20 kJ/mol/nm along the pair) around the mean force;
    # the fit must recover the mean force to a small fraction of its range.
    assert noise > 0.05 * span
    assert np.abs(learned - exact).max() < 0.08 * span, (learned, exact)
    # and the direct-bond-only force (ignoring the hidden particle) would be clearly wrong
    assert np.abs(-K_AB * (grid - R0) - exact).max() > 0.3 * span
