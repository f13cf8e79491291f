"""Batched graphs give exactly what the single-configuration path gives."""

from __future__ import annotations

import numpy as np
import torch

from conftest import make_model, random_configuration
from multiscale.data import Configuration
from multiscale.training import build_graphs, collate, predict


def test_batched_prediction_equals_per_configuration_compute():
    model = make_model()
    configs = [
        Configuration(["O", "H", "H"] * 3, random_configuration(9, 0.6, seed=1)),
        Configuration(["O", "H", "H"] * 4, random_configuration(12, 0.8, seed=2),
                      box=np.array([[0.9, 0, 0], [0.2, 0.85, 0], [-0.1, 0.1, 0.8]])),
        Configuration(["H", "O"], random_configuration(2, 0.2, seed=3)),
        Configuration(["O", "H"] * 3, random_configuration(6, 0.5, seed=4), box=np.diag([0.45, 0.7, 0.6])),
    ]
    graphs = build_graphs(configs, model.type_names, model.cutoff)
    batch = collate(graphs, dtype=torch.float64)
    out = predict(model, batch, forces=True, virial=True)
    offset = 0
    for k, config in enumerate(configs):
        ref = model.compute(config.positions, config.types, config.box, stress=config.periodic)
        n = config.num_particles
        assert float(out["energy"][k]) == float(ref["energy"]) or abs(float(out["energy"][k] - ref["energy"])) < 1e-10
        np.testing.assert_allclose(out["forces"][offset : offset + n].detach().numpy(), ref["forces"].numpy(), atol=1e-10)
        if config.periodic:
            np.testing.assert_allclose(out["virial"][k].detach().numpy(), ref["virial"].numpy(), atol=1e-10)
        offset += n
