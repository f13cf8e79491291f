"""A pair ramp set by feedback within one run: a proportional–integral controller on a global
parameter of the System (e.g. :data:`~multiscale.openmm.tabulated.INTERMOLECULAR_SCALE`, which
multiplies the model's intermolecular ramps) that drives a measured value to its target.

Why not separate trials (:mod:`~multiscale.openmm.ramp_iteration`): the thickness of a
solvent-free CG bilayer relaxes over hundreds of ps after the head–tail ramp changes (DMPC quick
patch: at A = 0 it fell from 3.33 to 2.9 nm over 320 ps at a fixed area; at 5.45 kJ/mol it rose
from 3.6 to 3.9 nm), so trials of tens of ps read the transient and the ramp overshoots (matched
to 3.46 nm in 60 ps trials, then 3.85 nm in the 160 ps run that followed). A controller follows the
slow relaxation inside one run and ends in a state equilibrated at its ramp.

The control law, tuned for a first-order response with gain ``sensitivity`` (relative change of
the value per unit of the parameter) and time constant ``relaxation_ps`` (internal-model tuning,
closed-loop time ≈ the relaxation time; a shorter ``relaxation_ps`` than the system's own settles
faster and overshoots more): with e the relative error, low-pass filtered over
``relaxation_ps``/10 against the measurement noise,

    A(t) = A₀ − (1/sensitivity) [e(t) + (1/relaxation_ps) ∫ e dt],

clipped to ±``limit`` with the integral held while clipped (no wind-up). The result is A averaged
over the run's last ``settled`` fraction (15 %): the slow drift of a bilayer's thickness keeps
the ramp climbing, so the latest A is the one the end state needs.

Units: ps, and those of the parameter and the measured value.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import openmm
from openmm import unit


def control_ramp(system: openmm.System, positions, box, measure: Callable[[np.ndarray, np.ndarray], float], *,
                 parameter: str, target: float, sensitivity: float, relaxation_ps: float, temperature_K: float,
                 steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0,
                 updates: int = 400, start: float = 0.0, limit: float = 20.0, settled: float = 0.15,
                 minimize: bool = True,
                 log: Optional[Callable[[str], None]] = None) -> Dict:
    """Run ``system`` (Langevin, ``steps`` steps from ``positions`` in ``box``, nm) while a PI
    controller sets its global ``parameter`` so that ``measure(positions, box)`` (called
    ``updates`` times, on (n, 3) and (3, 3) nm arrays) reaches ``target``.

    Returns ``{"A": mean parameter over the last ``settled`` fraction of the run, "value",
    "value_sem": the measured value there, "trace": [{"time_ps", "A", "value"}] every update, "positions", "box": the last frame
    (nm, lists)}``. A run that blows up raises RuntimeError."""
    from multiscale.openmm.short_runs import langevin_context

    if not sensitivity:
        raise ValueError("sensitivity must be non-zero (its sign says which way the parameter moves the value)")
    if not target:
        raise ValueError("the target must be non-zero (the error is relative to it)")
    if not 0.0 < settled <= 1.0:
        raise ValueError(f"settled={settled} must be a fraction of the run in (0, 1]")
    if relaxation_ps <= 0 or steps < 2 * updates or updates < 10:
        raise ValueError(f"need relaxation_ps > 0, updates >= 10 and steps >= 2 x updates "
                         f"(got {relaxation_ps}, {updates}, {steps})")
    context, integrator = langevin_context(system, positions, box, temperature_K=temperature_K, timestep_ps=timestep_ps,
                                           inner_steps=inner_steps, platform=platform, seed=seed, minimize=minimize,
                                           parameters={parameter: start})

    chunk = int(steps) // int(updates)
    dt = chunk * timestep_ps
    gain = 1.0 / float(sensitivity)
    filter_ps = relaxation_ps / 10.0
    integral, filtered, A = 0.0, None, float(start)
    trace = []
    for k in range(int(updates)):
        integrator.step(chunk)
        state = context.getState(getPositions=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        cell = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        if not np.all(np.isfinite(x)):
            raise RuntimeError(f"the controlled run blew up (NaN positions) after {(k + 1) * chunk} steps at A = {A:.3g}")
        value = float(measure(np.asarray(x), np.asarray(cell)))
        trace.append({"time_ps": (k + 1) * dt, "A": A, "value": value})
        error = (value - target) / target
        filtered = error if filtered is None else filtered + (error - filtered) * min(dt / filter_ps, 1.0)
        proposal = start - gain * (filtered + (integral + filtered * dt) / relaxation_ps)
        if abs(proposal) <= limit:
            integral += filtered * dt
            A = proposal
        else:
            A = float(np.clip(proposal, -limit, limit))
        context.setParameter(parameter, A)
        if log is not None and (k + 1) % max(updates // 8, 1) == 0:
            log(f"controller {parameter}: {(k + 1) * dt:.0f} ps, value {value:.4g} (target {target:.4g}), A = {A:.3f}")
    last = trace[len(trace) - max(int(round(settled * len(trace))), 1):]
    values = np.array([t["value"] for t in last])
    return {"A": float(np.mean([t["A"] for t in last])), "value": float(values.mean()),
            "value_sem": float(values.std(ddof=1) / np.sqrt(max(len(values) / 10, 1))), "trace": trace,
            "positions": np.asarray(x).tolist(), "box": np.asarray(cell).tolist()}
