"""Ensemble uncertainty at the structure: the spread of the members' forces."""

from __future__ import annotations

import numpy as np
import torch

from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target


def uncertainty_check(target: Target, settings: ValidationSettings) -> Check:
    model = target.model
    if model is None or type(model).__name__ != "EnsemblePotential":
        return Check("force_spread", "uncertainty", None, None, None, "kJ/mol/nm", "not applicable: the model is not an ensemble")
    out = model.compute(np.asarray(target.positions, dtype=np.float64), list(target.types), target.box)
    spread = out["force_uncertainty"].to(torch.float64).cpu().numpy()
    worst = int(np.argmax(spread))
    value = float(spread[worst])
    threshold = settings.max_force_spread
    passed = bool(value <= threshold)
    detail = (f"largest per-particle force spread {value:.3g} kJ/mol/nm (particle {worst}, {target.types[worst]}), "
              f"mean {float(spread.mean()):.3g}, over {model.num_members} members; energy spread "
              f"{float(out['energy_std']):.3g} kJ/mol")
    if not passed:
        detail += "; the members disagree here: the structure is outside the training data (label it and retrain)"
    return Check("force_spread", "uncertainty", value, threshold, passed, "kJ/mol/nm", detail)
