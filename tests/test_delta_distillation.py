"""Δ-learning targets and deployment, and the weighted composite objective of distillation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import make_model  # noqa: E402
from multiscale.data import Configuration  # noqa: E402
from multiscale.labels import OpenMMLabeller  # noqa: E402
from multiscale.openmm import create_delta_system  # noqa: E402
from multiscale.training import build_graphs, collate, predict  # noqa: E402
from multiscale.training.delta import delta_configurations  # noqa: E402
from multiscale.training.distillation import LabelSource, combine_sources  # noqa: E402
from multiscale.training.loss import EnergyForceLoss, LossConfig, LossScales  # noqa: E402
from systems.water import flexible_water_system, water_cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster_configs():
    top, pos = water_cluster(3)
    rng = np.random.default_rng(0)
    types = [a.element.symbol for a in top.atoms()]
    return top, [Configuration(types, pos + rng.normal(scale=0.004, size=pos.shape)) for _ in range(5)]


def test_delta_targets_and_deployment_reproduce_high_level(cluster_configs):
    """'High level' = flexible TIP3P + a known correction potential T. The Δ targets must equal T's
    labels, and base System + T deployed through OpenMM must reproduce the high level."""
    top, configs = cluster_configs
    base = flexible_water_system(top)
    correction = make_model(cutoff=0.5, seed=9)
    base_labels = OpenMMLabeller(base).label(configs).raise_on_failure().configurations
    high = []
    for c, b in zip(configs, base_labels):
        t = correction.compute(c.positions, c.types)
        high.append(c.with_labels(energy=b.energy + float(t["energy"]), forces=b.forces + t["forces"].numpy()))
    delta = delta_configurations(high, base)
    for c, d in zip(configs, delta):
        t = correction.compute(c.positions, c.types)
        assert d.energy == pytest.approx(float(t["energy"]), abs=1e-8)
        np.testing.assert_allclose(d.forces, t["forces"].numpy(), atol=1e-7)
    system = create_delta_system(base, correction, configs[0].types)
    assert system.getNumForces() == base.getNumForces() + 1
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for h in high:
        ctx.setPositions(h.positions)
        state = ctx.getState(getEnergy=True, getForces=True)
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(h.energy, abs=1e-7)
        np.testing.assert_allclose(state.getForces(asNumpy=True)._value, h.forces, atol=1e-6)
    with pytest.raises(ValueError, match="particle-count mismatch"):
        create_delta_system(base, correction, configs[0].types[:-1])


def test_combined_sources_weights_and_energy_policy(cluster_configs):
    _, configs = cluster_configs
    model = make_model(cutoff=0.5, seed=1)
    labelled = [c.with_labels(energy=float(model.compute(c.positions, c.types)["energy"]) + 1.0,
                              forces=model.compute(c.positions, c.types)["forces"].numpy() + 0.5) for c in configs]
    cheap = LabelSource(labelled[:3], weight=1.0, use_energies=False, name="force field")
    expensive = LabelSource(labelled[3:], weight=4.0, name="GFN2-xTB")
    combined, weights = combine_sources([cheap, expensive])
    assert [c.energy is None for c in combined] == [True, True, True, False, False]
    assert weights == [1.0, 1.0, 1.0, 4.0, 4.0]
    # the loss is the weighted mean over configurations, checked against a numpy computation
    graphs = build_graphs(combined, model.type_names, model.cutoff, weights=weights)
    batch = collate(graphs, dtype=torch.float64)
    pred = predict(model, batch)
    loss = EnergyForceLoss(LossConfig(energy_weight=1.0, force_weight=1.0), LossScales(2.0, 3.0, 1.0))
    _, terms = loss(pred, batch)
    n = np.array([c.num_particles for c in combined])
    e_err = [((float(pred["energy"][k]) - c.energy) / n[k] / 2.0) ** 2 for k, c in enumerate(combined) if c.energy is not None]
    assert float(terms["energy"]) == pytest.approx(np.average(e_err, weights=[4.0, 4.0]), rel=1e-10)
    f_err = ((pred["forces"].detach().numpy() - np.concatenate([c.forces for c in combined])) / 3.0) ** 2
    per_atom_w = np.repeat(weights, n)
    assert float(terms["forces"]) == pytest.approx(np.average(f_err.mean(axis=1), weights=per_atom_w), rel=1e-10)
    with pytest.raises(ValueError, match="weight must be > 0"):
        LabelSource(labelled, weight=0.0)
