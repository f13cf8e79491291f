"""``validate(system, positions, box=None, ...)``: every check on one System at one structure."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from multiscale.openmm.evaluation import (SystemEvaluator, default_box, ewald_error_tolerance, system_constraints,
                                          system_cutoffs)
from multiscale.openmm.system import replace_ml_forces
from multiscale.validate.conservative import conservative_checks
from multiscale.validate.nve import nve_check
from multiscale.validate.report import ValidationReport
from multiscale.validate.settings import QUICK, ValidationSettings
from multiscale.validate.smoothness import smoothness_checks
from multiscale.validate.stiffness import stiffness_analysis
from multiscale.validate.symmetry import symmetry_checks
from multiscale.validate.target import ModelEvaluator, Target
from multiscale.validate.uncertainty import uncertainty_check

#: nearest-neighbour distance (nm) below which a structure is refused: overlapping particles, or
#: coordinates in the wrong unit (0.05 nm = 0.5 Å, half the shortest chemical bond)
MIN_PAIR_DISTANCE_NM = 0.05


def _model_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


def float64_copy(model):
    """A float64 copy of ``model`` (a Potential, or an ensemble of them); the model itself if it is float64."""
    from multiscale.models.io import with_dtype

    if _model_dtype(model) == torch.float64:
        return model
    if type(model).__name__ == "EnsemblePotential":
        from multiscale.models.ensemble import EnsemblePotential

        return EnsemblePotential([with_dtype(m, "float64").eval() for m in model.members]).eval()
    return with_dtype(model, "float64").eval()


def _check_structure(system, positions, box) -> tuple:
    n = system.getNumParticles()
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (n, 3):
        raise ValueError(f"positions must be ({n}, 3) nm for this System of {n} particles, got shape {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    if system.usesPeriodicBoundaryConditions():
        box = default_box(system) if box is None else np.asarray(box, dtype=np.float64)
        if box.shape != (3, 3) or not np.all(np.isfinite(box)) or abs(np.linalg.det(box)) <= 0:
            raise ValueError(f"box must be a finite (3, 3) cell in nm (rows a, b, c) with a volume, got {box.tolist()}")
        if float(np.max(np.linalg.norm(box, axis=1))) > 1000:
            raise ValueError("the box has an edge above 1000 nm: it is almost surely in Å or pm; give it in nm")
    else:
        box = None
    from multiscale.neighbors import pairs_within

    i, j, d = pairs_within(positions, box, MIN_PAIR_DISTANCE_NM)
    if d.size:
        k = int(np.argmin(d))
        raise ValueError(f"particles {int(i[k])} and {int(j[k])} are {d[k]:.4g} nm apart, closer than "
                         f"{MIN_PAIR_DISTANCE_NM} nm: overlapping particles, or coordinates not in nm (multiply Å by 0.1)")
    return positions, box


def build_target(system, positions, box=None, *, model=None, types: Optional[Sequence[str]] = None,
                 platform: str = "CPU", backend: str = "torchforce") -> Target:
    """The :class:`Target` of ``system`` at ``positions``: evaluators on ``platform`` and in double
    precision (with ``model``, the System's ML force replaced by a float64 copy of it)."""
    positions, box = _check_structure(system, positions, box)
    if model is not None:
        if types is None:
            raise ValueError("with a model, give types: one type name per particle (what the model's force was built with)")
        types = [str(t) for t in types]
        if len(types) != system.getNumParticles():
            raise ValueError(f"{len(types)} types for a System of {system.getNumParticles()} particles")
        model.eval()
    working = SystemEvaluator(system, platform)
    if model is not None and _model_dtype(model) != torch.float64:
        model64 = float64_copy(model)
        precise = SystemEvaluator(replace_ml_forces(system, model64, types, backend=backend), "Reference")
    else:
        model64 = model
        precise = working if platform == "Reference" else SystemEvaluator(system, "Reference")
    cutoffs = system_cutoffs(system)
    if model is not None:
        cutoffs = sorted(set(cutoffs) | {round(float(model.cutoff), 9)})
    claims = False
    if model is not None:
        first = model.members[0] if type(model).__name__ == "EnsemblePotential" else model
        claims = bool(getattr(first.config, "parity", True))
    return Target(
        working=working, precise=precise, positions=positions, box=box, masses=working.masses,
        constraints=system_constraints(system), cutoffs=cutoffs, ewald_tolerance=ewald_error_tolerance(system),
        model_evaluator=None if model is None else ModelEvaluator(model64, types, box is not None),
        model=model, types=types, claims_inversion=claims, molecules=working.molecules(),
    )


def _precision_labels(target: Target, platform: str, model) -> tuple:
    if model is not None:
        dtype = str(_model_dtype(model)).replace("torch.", "")
        working = f"model in {dtype} on {platform}"
        precise = "model in float64 on Reference" if target.precise is not target.working else working
    else:
        working = f"{platform} platform" + (" (double)" if platform == "Reference" else " (single-precision forces)")
        precise = "Reference platform (double)"
    return working, precise


def validate(system, positions, box=None, *, model=None, types: Optional[Sequence[str]] = None, platform: str = "CPU",
             settings: Optional[ValidationSettings] = None, quick: bool = False, backend: str = "torchforce",
             progress: bool = False, inputs: Optional[dict] = None) -> "ValidationReport":
    """Check ``system`` (an OpenMM System) at ``positions`` ((N, 3) nm; ``box`` (3, 3) nm, default the
    System's own) and return a :class:`ValidationReport`.

    With ``model`` (the potential whose ML force is in ``system``) and ``types`` (one name per
    particle), the model-level checks run too: rotations of a periodic cell, permutations of
    same-type particles, inversion where the model claims E(3), float64 finite differences, and
    for an ensemble the force spread. ``platform``: where the working-precision checks and the
    MD run ("CPU", "Reference", "CUDA"). ``settings`` (:class:`ValidationSettings`) or ``quick``
    (the :data:`QUICK` preset). Barostats are switched off while the checks run.
    """
    if settings is None:
        settings = QUICK if quick else ValidationSettings()
    if not isinstance(settings, ValidationSettings):
        raise TypeError(f"settings must be a ValidationSettings, got {type(settings).__name__}")
    rng = np.random.default_rng(settings.seed)
    stages = ["build", "symmetry", "gradient", "smoothness", "stiffness", "nve", "uncertainty"]
    bar = _bar(len(stages), progress)
    target = build_target(system, positions, box, model=model, types=types, platform=platform, backend=backend)
    working_label, precise_label = _precision_labels(target, platform, model)
    bar.update(1)
    report = ValidationReport(inputs=dict(inputs or {}))
    report.inputs.update(particles=target.num_particles, periodic=target.periodic, platform=platform,
                         constraints=len(target.constraints), evaluation=working_label, precise=precise_label)
    report.checks += symmetry_checks(target, settings, rng)
    bar.update(1)
    report.checks += conservative_checks(target, settings, rng, working_label, precise_label)
    bar.update(1)
    checks, paths = smoothness_checks(target, settings)
    report.checks += checks
    report.path = {"paths": paths}
    bar.update(1)
    summary, timestep = stiffness_analysis(target, settings, rng, platform)
    report.stiffness = summary
    report.checks.append(timestep)
    bar.update(1)
    step = summary.get("recommended_timestep_fs", float("nan"))
    check, data = nve_check(target, step if math.isfinite(step) else float("nan"), settings, platform)
    report.checks.append(check)
    report.nve = data
    bar.update(1)
    report.checks.append(uncertainty_check(target, settings))
    bar.update(1)
    bar.close()
    return report


class _Silent:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total: int, show: bool):
    if not show:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc="validate", unit="stage")
