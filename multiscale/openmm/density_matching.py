"""Iterated pressure correction by short constant-pressure runs: the ramp A (1 − r/r_c) on the
pair forces whose NPT density equals the reference's (the third route of the CG pressure
problem, after the virial constraint inside the fit and a volume-dependent term).

A force-matched model constrained to the right pressure at the reference volume can still settle
at another density, because its compressibility is its own. Here the density is measured
directly: a short NPT run per trial A, and the secant method on the relative density error.

Units: kJ/mol, g/cm³, K, bar, ps.
"""

from __future__ import annotations

from typing import Callable, Dict

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
    from multiscale.openmm.short_runs import sample_run

    _, cells = sample_run(system, positions, box, temperature_K=temperature_K, steps=steps, timestep_ps=timestep_ps,
                          inner_steps=inner_steps, platform=platform, seed=seed, frames=30)
    mass = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles()))
    kept = mass / np.abs(np.linalg.det(cells[15:])) * AMU_PER_NM3_TO_G_PER_CM3
    return {"mean": float(kept.mean()), "sem": float(kept.std(ddof=1) / np.sqrt(len(kept) / 4))}


def match_density(system_for: Callable[[float], openmm.System], positions, box, *, target_g_cm3: float,
                  iterations: int, tolerance: float = 0.01, log=None, seed: int = 0, max_step_kj_mol: float = 2.0,
                  **run) -> Dict:
    """The ramp A (kJ/mol) whose NPT density is ``target_g_cm3``: ``system_for(A)`` builds the
    System (barostat included) with ramp A; each iteration runs :func:`npt_density` (``run``:
    its keyword arguments) and updates A by the secant method on the relative error
    (:func:`~multiscale.openmm.ramp_iteration.iterate_ramp`; at most ``max_step_kj_mol`` per
    iteration: noisy densities make wild secants), stopping below ``tolerance``. Returns
    ``{"A_kj_mol", "history": [{A, density, sem, error}]}``, A the trial with the smallest |error|."""
    from multiscale.openmm.ramp_iteration import iterate_ramp

    def measure(A: float, trial: int):
        measured = npt_density(system_for(A), positions, box, seed=seed + 7 * trial, **run)
        return measured["mean"], measured["sem"]

    return iterate_ramp(measure, target=target_g_cm3, iterations=iterations, guess_slope=GUESS_SLOPE_PER_KJ_MOL,
                        tolerance=tolerance, max_step_kj_mol=max_step_kj_mol, value_key="density_g_cm3", log=log,
                        what="density iteration")
