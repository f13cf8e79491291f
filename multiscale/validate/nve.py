"""A short NVE run at the recommended step: the total-energy drift in kT/ns/dof.

The drift is the slope of a straight line through block means of the total energy; its
resolution is what the run's own fluctuations could fake (see :func:`energy_drift`). A run of a
few hundred steps cannot resolve the goal (1e-4 kT/ns/dof in mixed precision): the check fails
only on a drift beyond goal + resolution (a clear heating or cooling, e.g. from forces that are
not the energy's gradient or a step beyond the stable range), or on a blow-up.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from multiscale.openmm.evaluation import EnergyTrace, run_nve
from multiscale.units import kT
from multiscale.validate.report import Check
from multiscale.validate.settings import ValidationSettings
from multiscale.validate.target import Target

#: block means the drift is fitted through
BLOCKS = 8


def energy_drift(trace: EnergyTrace, temperature_K: float) -> Tuple[float, float]:
    """(drift, resolution) of the total energy in kT/ns/dof.

    The drift is the least-squares slope through block means. The resolution is the larger of
    twice the slope's standard error from the block means and √12 σ/T, σ the RMS of the
    residual about the line and T the run's length: by Cauchy–Schwarz no fluctuation of RMS σ
    can fake a larger slope, however correlated (Verlet's bounded energy oscillation is)."""
    t = trace.time_ps
    total = trace.total
    blocks = min(BLOCKS, t.size // 2)
    if blocks < 3:
        return float("nan"), float("nan")
    edges = np.linspace(0, t.size, blocks + 1).astype(int)
    tb = np.array([t[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    eb = np.array([total[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    design = np.vstack([tb, np.ones_like(tb)]).T
    coefficients = np.linalg.lstsq(design, eb, rcond=None)[0]
    slope = coefficients[0]
    residual = eb - design @ coefficients
    se = float(np.sqrt(residual @ residual / (blocks - 2) / np.sum((tb - tb.mean()) ** 2)))
    line = np.polyfit(t, total, 1)
    sigma = float(np.std(total - np.polyval(line, t)))
    length = float(t[-1] - t[0])
    resolution = max(2 * se, np.sqrt(12) * sigma / length if length > 0 else float("inf"))
    per = 1000.0 / (max(trace.degrees_of_freedom, 1) * kT(temperature_K))  # kJ/mol/ps → kT/ns/dof
    return float(slope) * per, resolution * per


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
    drift, resolution = energy_drift(trace, settings.temperature_K)
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
