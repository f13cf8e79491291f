"""A short NVE run at the recommended step: the total-energy drift in kT/ns/dof.

The drift is the slope of a straight line through the total energy; its resolution is what the
run's own fluctuations could fake (:func:`multiscale.analysis.energy.drift_resolution`). A run of a
few hundred steps cannot resolve the goal (1e-4 kT/ns/dof in mixed precision): the check fails
only on a drift beyond goal + resolution (a clear heating or cooling, e.g. from forces that are
not the energy's gradient or a step beyond the stable range), or on a blow-up.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from multiscale.analysis.energy import drift_resolution, energy_drift
from multiscale.openmm.evaluation import run_nve
from multiscale.units import kT
from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target


def nve_check(target: Target, timestep_fs: float, settings: ValidationSettings, platform: str, progress=None) -> Tuple[Check, Dict]:
    if not (timestep_fs > 0 and np.isfinite(timestep_fs)):
        return Check("nve_drift", "nve", None, settings.nve_drift_goal, False, "kT/ns/dof",
                     "not run: no recommended time step (see the timestep check)"), {}
    trace = run_nve(target.working.system, target.positions, target.box, timestep_ps=timestep_fs / 1000, steps=settings.nve_steps,
                    temperature_K=settings.temperature_K, report_every=settings.nve_report_every, platform=platform,
                    seed=settings.seed, progress=progress)
    data = {"time_ps": trace.time_ps.tolist(), "potential": trace.potential.tolist(), "kinetic": trace.kinetic.tolist(),
            "total": trace.total.tolist(), "timestep_fs": timestep_fs, "degrees_of_freedom": trace.degrees_of_freedom}
    goal = settings.nve_drift_goal
    if trace.blew_up:
        return Check("nve_drift", "nve", float("inf"), goal, False, "kT/ns/dof",
                     f"the NVE run at {timestep_fs:.3g} fs blew up: {trace.message}. The step is beyond the stable "
                     "range, or the forces are broken"), data
    if trace.time_ps.size < 3:
        return Check("nve_drift", "nve", None, goal, False, "kT/ns/dof", "the NVE run is too short to fit a drift: "
                     "raise nve_steps to at least 3 × nve_report_every"), data
    dof = max(trace.degrees_of_freedom, 1)
    drift = energy_drift(trace.time_ps, trace.total, dof, settings.temperature_K)
    resolution = drift_resolution(trace.time_ps, trace.total, dof, settings.temperature_K)
    data.update(drift=drift, drift_resolution=resolution)
    spread = float(np.std(trace.total)) / (max(trace.degrees_of_freedom, 1) * kT(settings.temperature_K))
    passed = bool(np.isfinite(drift) and abs(drift) <= goal + resolution)
    length_ps = float(trace.time_ps[-1] - trace.time_ps[0])
    detail = (f"drift {drift:.3g} kT/ns/dof (resolution {resolution:.2g}) over {length_ps:.3g} ps ({settings.nve_steps} "
              f"steps of {timestep_fs:.3g} fs, {platform}); goal ≤ {goal:g}; total-energy fluctuation {spread:.2g} kT/dof")
    if passed and resolution > goal:
        detail += f"; a run this short resolves drifts down to {resolution:.2g}, not the goal: run longer (nve_steps) to test it"
    if not passed:
        detail += "; the energy drifts beyond its noise: the step is too long or the forces are not conservative"
    return Check("nve_drift", "nve", drift, goal, passed, "kT/ns/dof", detail), data
