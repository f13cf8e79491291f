"""Symmetry checks: energy invariance under translations, rotations, lattice-vector shifts,
permutations of same-type particles and (where the model claims E(3)) inversion; force
equivariance under rotation.

Each check evaluates the energy at the structure and at transformed copies and reports the
largest |ΔE| against a tolerance set by the evaluator's arithmetic (see
:meth:`Target.energy_tolerance`). Rotations of a periodic cell cannot be handed to OpenMM (it
keeps box vectors in reduced form), so there the model is called directly.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target, relative_for


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random proper rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _invariance(name: str, target: Target, evaluator, transforms, settings: ValidationSettings, what: str, scope: str) -> Check:
    e0, _ = evaluator.energy_forces(target.positions, target.box)
    relative = relative_for(evaluator.eps, settings.energy_rtol_double, settings.energy_rtol_single)
    tolerance = target.energy_tolerance(evaluator, e0, relative)
    worst, worst_label = 0.0, ""
    for label, (positions, box) in transforms:
        e, _ = evaluator.energy_forces(positions, box)
        delta = abs(e - e0) if np.isfinite(e) else float("inf")
        if delta >= worst:
            worst, worst_label = delta, label
    passed = bool(worst <= tolerance)
    detail = (f"largest |ΔE| {worst:.3g} kJ/mol over {len(transforms)} {what} ({scope}); E = {e0:.6g} kJ/mol; "
              f"tolerance {tolerance:.3g} kJ/mol")
    if not passed:
        detail += f"; worst: {worst_label}. The energy is not invariant: check the model's features or the System's terms"
    return Check(name, "symmetry", worst, tolerance, passed, "kJ/mol", detail)


def _not_applicable(name: str, why: str) -> Check:
    return Check(name, "symmetry", None, None, None, "kJ/mol", f"not applicable: {why}")


def translation_check(target: Target, settings: ValidationSettings, rng) -> Check:
    transforms = []
    for k in range(settings.symmetry_trials):
        shift = rng.uniform(-1.0, 1.0, size=3)
        transforms.append((f"translation by {np.round(shift, 3).tolist()} nm", (target.positions + shift, target.box)))
    return _invariance("translation", target, target.precise, transforms, settings, "random translations", "the whole System")


def rotation_check(target: Target, settings: ValidationSettings, rng) -> Check:
    evaluator, scope = _rotation_evaluator(target)
    if evaluator is None:
        return _not_applicable("rotation", "a periodic System without a model: OpenMM keeps the cell in reduced form, so "
                                           "only the model's own rotations can be checked")
    centre = target.positions.mean(axis=0)
    transforms = []
    for k in range(settings.symmetry_trials):
        rot = random_rotation(rng)
        positions = (target.positions - centre) @ rot.T + centre
        box = None if target.box is None else target.box @ rot.T
        transforms.append((f"rotation {k}", (positions, box)))
    return _invariance("rotation", target, evaluator, transforms, settings, "random rotations", scope)


def _rotation_evaluator(target: Target):
    if not target.periodic:
        return target.precise, "the whole System"
    if target.model_evaluator is not None:
        return target.model_evaluator, "the model alone, cell rotated with it"
    return None, ""


def lattice_shift_check(target: Target, settings: ValidationSettings, rng) -> Check:
    if not target.periodic:
        return _not_applicable("lattice_shift", "open boundaries")
    molecules = target.molecules or [[i] for i in range(target.num_particles)]
    transforms = []
    for k in range(settings.symmetry_trials):
        positions = target.positions.copy()
        chosen = rng.choice(len(molecules), size=max(1, len(molecules) // 2), replace=False)
        for m in chosen:
            n = rng.integers(-2, 3, size=3)
            if not n.any():
                n[rng.integers(3)] = 1
            positions[molecules[m]] += n @ target.box
        transforms.append((f"lattice shifts {k}", (positions, target.box)))
    return _invariance("lattice_shift", target, target.precise, transforms, settings,
                       "shifts of half the molecules by lattice vectors", "the whole System; molecules shifted whole")


def permutation_check(target: Target, settings: ValidationSettings, rng) -> Check:
    if target.model_evaluator is None:
        return _not_applicable("permutation", "no model: a force field labels its particles by index, not by type")
    types = np.asarray(target.types)
    groups = [np.flatnonzero(types == t) for t in sorted(set(target.types))]
    groups = [g for g in groups if g.size > 1]
    if not groups:
        return _not_applicable("permutation", "no two particles share a type")
    transforms = []
    for k in range(settings.symmetry_trials):
        positions = target.positions.copy()
        for g in groups:
            positions[g] = target.positions[rng.permutation(g)]
        transforms.append((f"permutation {k}", (positions, target.box)))
    return _invariance("permutation", target, target.model_evaluator, transforms, settings,
                       "random permutations of same-type particles", "the model alone")


def inversion_check(target: Target, settings: ValidationSettings, rng) -> Check:
    if target.model_evaluator is None:
        return _not_applicable("inversion", "no model: a force field makes no E(3) claim (chiral terms are allowed)")
    if not target.claims_inversion:
        return _not_applicable("inversion", "the model is SE(3)-equivariant only (parity=False), so inversion may change its energy")
    centre = target.positions.mean(axis=0)
    positions = 2 * centre - target.positions  # the inverted lattice is the same lattice
    return _invariance("inversion", target, target.model_evaluator, [("inversion through the centroid", (positions, target.box))],
                       settings, "inversion", "the model alone")


def force_rotation_check(target: Target, settings: ValidationSettings, rng) -> Check:
    evaluator, scope = _rotation_evaluator(target)
    if evaluator is None:
        return Check("force_rotation", "symmetry", None, None, None, "relative",
                     "not applicable: a periodic System without a model (OpenMM keeps the cell in reduced form)")
    _, f0 = evaluator.energy_forces(target.positions, target.box)
    scale = float(np.sqrt(np.mean(np.sum(f0 ** 2, axis=1)))) or 1.0
    centre = target.positions.mean(axis=0)
    worst = 0.0
    for k in range(settings.symmetry_trials):
        rot = random_rotation(rng)
        positions = (target.positions - centre) @ rot.T + centre
        box = None if target.box is None else target.box @ rot.T
        _, f = evaluator.energy_forces(positions, box)
        error = float(np.sqrt(np.mean(np.sum((f - f0 @ rot.T) ** 2, axis=1)))) / scale
        worst = max(worst, error if np.isfinite(error) else float("inf"))
    threshold = relative_for(evaluator.eps, settings.force_rtol_double, settings.force_rtol_single)
    passed = bool(worst <= threshold)
    detail = (f"RMS |F(Rx) − R F(x)| / RMS |F| = {worst:.3g} over {settings.symmetry_trials} rotations ({scope}); "
              f"RMS |F| = {scale:.4g} kJ/mol/nm")
    if not passed:
        detail += "; the forces do not rotate with the structure: a non-equivariant feature or a wrong force sign/frame"
    return Check("force_rotation", "symmetry", worst, threshold, passed, "relative", detail)


def symmetry_checks(target: Target, settings: ValidationSettings, rng: Optional[np.random.Generator] = None) -> List[Check]:
    rng = rng or np.random.default_rng(settings.seed)
    return [check(target, settings, rng) for check in (translation_check, rotation_check, lattice_shift_check,
                                                        permutation_check, inversion_check, force_rotation_check)]
