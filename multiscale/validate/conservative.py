"""Conservative forces: the forces against central finite differences of the energy.

A force that is not −∇E (a wrong sign, a missing term in a hand-written force, a force from a
model other than the energy's) heats or cools an NVE run however small the step. Sampled
particles: the one with the largest force, then random others (massive particles only: a
virtual site's position is not free).
"""

from __future__ import annotations

from typing import List

import numpy as np

from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target, is_double


def sample_particles(target: Target, forces: np.ndarray, count: int, rng) -> List[int]:
    massive = np.flatnonzero(target.masses > 0)
    if massive.size == 0:
        raise ValueError("every particle has zero mass; nothing can move")
    magnitude = np.linalg.norm(forces[massive], axis=1)
    first = int(massive[int(np.argmax(magnitude))])
    others = [int(i) for i in rng.permutation(massive) if int(i) != first]
    return [first] + others[: max(0, int(count) - 1)]


def _difference(evaluator, target: Target, i: int, axis: int, h: float) -> float:
    """−(E(x + h e) − E(x − h e)) / 2h: the finite-difference force component."""
    plus = target.positions.copy()
    minus = target.positions.copy()
    plus[i, axis] += h
    minus[i, axis] -= h
    e_plus, _ = evaluator.energy_forces(plus, target.box)
    e_minus, _ = evaluator.energy_forces(minus, target.box)
    return -(e_plus - e_minus) / (2 * h)


#: RMS displacement (nm) of the probes that measure the energy's rounding noise, and their number
NOISE_PROBE_NM = 1e-5
NOISE_PROBES = 6


def energy_noise(evaluator, target: Target, energy: float, forces: np.ndarray, rng) -> float:
    """RMS of E(x + δ) − E(x) + F·δ over a few random δ of RMS 1e-5 nm: what is left once the
    first-order change is taken out is the energy's rounding (the second-order term, ½ δᵀHδ, is
    orders of magnitude below it in single precision); measured, because a network's float32
    rounding grows with its intermediate values, not with |E| alone."""
    massive = np.flatnonzero(target.masses > 0)
    residuals = []
    for _ in range(NOISE_PROBES):
        delta = np.zeros_like(target.positions)
        delta[massive] = rng.normal(scale=NOISE_PROBE_NM, size=(massive.size, 3))
        e, _ = evaluator.energy_forces(target.positions + delta, target.box)
        residuals.append(e - energy + float(np.sum(forces * delta)))
    return float(np.sqrt(np.mean(np.square(residuals))))


def gradient_check(name: str, evaluator, target: Target, settings: ValidationSettings, rng, label: str) -> Check:
    """Forces of ``evaluator`` against central differences of its energy, Richardson-extrapolated
    from steps h and h/2 (truncation error O(h⁴)); in single precision h is larger and the
    threshold adds the rounding the measured energy noise carries into the differences."""
    energy, forces = evaluator.energy_forces(target.positions, target.box)
    particles = sample_particles(target, forces, settings.gradient_particles, rng)
    double = is_double(evaluator.eps)
    h = settings.gradient_step_double_nm if double else settings.gradient_step_single_nm
    analytic, numeric = [], []
    for i in particles:
        for axis in range(3):
            coarse = _difference(evaluator, target, i, axis, h)
            fine = _difference(evaluator, target, i, axis, h / 2)
            numeric.append((4 * fine - coarse) / 3)
            analytic.append(forces[i, axis])
    analytic = np.asarray(analytic)
    numeric = np.asarray(numeric)
    scale = float(np.sqrt(np.mean(analytic ** 2)))
    error = float(np.sqrt(np.mean((analytic - numeric) ** 2)))
    value = error / scale if scale > 0 else error
    if double:
        threshold = settings.gradient_rtol_double
        floor = ""
    else:
        # the energy's rounding, measured at the structure, carried through the central difference
        noise = energy_noise(evaluator, target, energy, forces, rng)
        # Richardson's (4 D(h/2) − D(h))/3 carries about 2 σ_E / h of rounding; allow 3 times that
        floor_force = 6 * noise / h
        threshold = settings.gradient_rtol_single + (floor_force / scale if scale > 0 else floor_force)
        floor = (f" (threshold includes the energy-rounding floor {floor_force:.2g} kJ/mol/nm: energy noise {noise:.2g} "
                 f"kJ/mol measured at the structure, step {h:g} nm)")
    if not np.isfinite(value):
        value = float("inf")
    passed = bool(value <= threshold)
    worst = int(np.argmax(np.abs(analytic - numeric)))
    particle, axis = particles[worst // 3], "xyz"[worst % 3]
    detail = (f"{label}: RMS |F − F_fd| / RMS |F| = {value:.3g} on {len(particles)} particles × 3 components "
              f"(RMS |F| {scale:.4g} kJ/mol/nm){floor}; worst: particle {particle} {axis}, "
              f"F {analytic[worst]:.6g} vs −dE/dx {numeric[worst]:.6g}")
    if not passed:
        detail += ". The forces are not the gradient of the energy: the force and energy come from different expressions"
    return Check(name, "conservative", value, threshold, passed, "relative", detail)


def conservative_checks(target: Target, settings: ValidationSettings, rng, working_label: str, precise_label: str) -> List[Check]:
    checks = [gradient_check("gradient", target.working, target, settings, rng, working_label)]
    if target.precise is not target.working:
        checks.append(gradient_check("gradient_float64", target.precise, target, settings, rng, precise_label))
    return checks
