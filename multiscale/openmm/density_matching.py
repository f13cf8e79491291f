"""Iterated pressure correction by short constant-pressure runs: the ramp A (1 − r/r_c) on the
pair forces whose NPT density equals the reference's (the third route of the CG pressure
problem, after the virial constraint inside the fit and a volume-dependent term).

A force-matched model constrained to the right pressure at the reference volume can still settle
at another density, because its compressibility is its own. Here the density is measured
directly: a short NPT run per trial A, and the secant method on the relative density error.

Units: kJ/mol, g/cm³, K, bar, ps.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import openmm
from openmm import unit

from multiscale.cg.analysis.density import AMU_PER_NM3_TO_G_PER_CM3

#: first trial step: relative density change per kJ/mol of ramp (measured on the polyethylene
#: CG melt: A = −3.2 kJ/mol moved its density by +13.5 %), used before the secant has two points
GUESS_SLOPE_PER_KJ_MOL = -0.04


def npt_density(system: openmm.System, positions, box, *, temperature_K: float, steps: int, timestep_ps: float,
                inner_steps: int = 1, platform: str = "CPU", seed: int = 0) -> Dict[str, float]:
    """Mean density (g/cm³) over the second half of a Langevin run of ``system`` (which holds
    its barostat), from ``positions``/``box`` (nm)."""
    from multiscale.openmm.mts import mts_langevin

    system = openmm.XmlSerializer.clone(system)
    if inner_steps > 1:
        integrator = mts_langevin(system, temperature_K, 1.0, timestep_ps, inner_steps)
    else:
        integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin, 1.0 / unit.picosecond, timestep_ps * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in np.asarray(box)])
    context.setPositions(np.asarray(positions))
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed + 2)
    mass = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles()))
    chunk = max(steps // 30, 1)
    densities = []
    for _ in range(30):
        integrator.step(chunk)
        volume = context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer ** 3)
        densities.append(mass / volume * AMU_PER_NM3_TO_G_PER_CM3)
    kept = np.asarray(densities[15:])
    if not np.all(np.isfinite(kept)):
        raise RuntimeError("the NPT run of the density iteration blew up")
    return {"mean": float(kept.mean()), "sem": float(kept.std(ddof=1) / np.sqrt(len(kept) / 4))}


def match_density(system_for: Callable[[float], openmm.System], positions, box, *, target_g_cm3: float,
                  iterations: int, tolerance: float = 0.01, log=None, seed: int = 0, max_step_kj_mol: float = 2.0,
                  **run) -> Dict:
    """The ramp A (kJ/mol) whose NPT density is ``target_g_cm3``: ``system_for(A)`` builds the
    System (barostat included) with ramp A; each iteration runs :func:`npt_density` (``run``:
    its keyword arguments) and updates A by the secant method on the relative error (at most
    ``max_step_kj_mol`` per iteration: noisy densities make wild secants), stopping below
    ``tolerance``. Returns ``{"A_kj_mol", "history": [{A, density, sem, error}]}``, A the
    trial with the smallest |error|."""
    history: List[Dict[str, float]] = []
    A = 0.0
    for iteration in range(int(iterations)):
        measured = npt_density(system_for(A), positions, box, seed=seed + 7 * iteration, **run)
        error = measured["mean"] / target_g_cm3 - 1.0
        history.append({"A_kj_mol": A, "density_g_cm3": measured["mean"], "sem": measured["sem"], "relative_error": error})
        if log is not None:
            log(f"density iteration {iteration}: A = {A:.3f} kJ/mol -> {measured['mean']:.4f} g/cm³ ({100 * error:+.1f} %)")
        if abs(error) < tolerance:
            break
        if len(history) >= 2 and history[-1]["relative_error"] != history[-2]["relative_error"]:
            a0, e0 = history[-2]["A_kj_mol"], history[-2]["relative_error"]
            slope = (error - e0) / (A - a0) if A != a0 else GUESS_SLOPE_PER_KJ_MOL
            slope = slope if slope < 0 else GUESS_SLOPE_PER_KJ_MOL  # more attraction, denser
        else:
            slope = GUESS_SLOPE_PER_KJ_MOL
        A = A + float(np.clip(-error / slope, -max_step_kj_mol, max_step_kj_mol))
    best = min(history, key=lambda h: abs(h["relative_error"]))
    return {"A_kj_mol": best["A_kj_mol"], "history": history}
