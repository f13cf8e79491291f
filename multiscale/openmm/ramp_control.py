"""Pair ramps set by feedback within one run: proportional–integral controllers, each on a
global parameter of the System (e.g. :data:`~multiscale.openmm.tabulated.INTERMOLECULAR_SCALE`,
which multiplies the model's intermolecular ramps), that drive measured values to their targets.

Why not separate trials (:mod:`~multiscale.openmm.ramp_iteration`): the thickness of a
solvent-free CG bilayer relaxes over hundreds of ps after the head–tail ramp changes (DMPC quick
patch: at A = 0 it fell from 3.33 to 2.9 nm over 320 ps at a fixed area; at 5.45 kJ/mol it rose
from 3.6 to 3.9 nm), so trials of tens of ps read the transient and the ramp overshoots (matched
to 3.46 nm in 60 ps trials, then 3.85 nm in the 160 ps run that followed). A controller follows the
slow relaxation inside one run and ends in a state equilibrated at its ramps. Two ramps that act
on each other's values (the bilayer's thickness and its lateral pressure both answer to the
head–tail and the all-pair ramp) are controlled together, each by its own channel
(:class:`ControlChannel`), in the same run: set one after the other, the second undid the first
(a seed whose thickness was on target after its controller ended 9 % thick after the area
matching).

The control law of a channel, tuned for a first-order response with gain ``sensitivity`` (change
of the value, in units of ``scale``, per unit of the parameter) and time constant ``relaxation_ps``
(internal-model tuning, closed-loop time ≈ the relaxation time; a shorter ``relaxation_ps`` than
the system's own settles faster and overshoots more): with e = (value − target)/scale, low-pass
filtered over ``filter_ps`` (default ``relaxation_ps``/10) against the measurement noise,

    A(t) = A₀ − (1/sensitivity) [e(t) + (1/relaxation_ps) ∫ e dt],

clipped to ±``limit`` with the integral held while clipped (no wind-up). The result is A averaged
over the run's last ``settled`` fraction (15 %): the slow drift of a bilayer's thickness keeps
the ramp climbing, so the latest A is the one the end state needs.

Units: ps, and those of the parameter and the measured value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import openmm
from openmm import unit

from multiscale.openmm.evaluation import degrees_of_freedom, system_masses
from multiscale.openmm.overheating import OverheatingError, check_temperature

#: measure(positions (n, 3) nm, box (3, 3) nm, parameters {name: current value}) -> value
Measure = Callable[[np.ndarray, np.ndarray, Mapping[str, float]], float]


@dataclass
class ControlChannel:
    """One controlled value: ``measure`` (see :data:`Measure`) driven to ``target`` by the global
    ``parameter``. ``scale``: the error's unit (default |target|: a relative error);
    ``sensitivity``: d(value/scale)/d(parameter), its sign says which way the parameter moves the
    value; ``start``: the parameter's first value, ``limit``: its bound (±, or [``lower``,
    ``limit``] when ``lower`` is given)."""

    parameter: str
    measure: Measure
    target: float
    sensitivity: float
    relaxation_ps: float
    scale: Optional[float] = None
    filter_ps: Optional[float] = None
    start: float = 0.0
    limit: float = 20.0
    lower: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.sensitivity:
            raise ValueError(f"{self.parameter}: sensitivity must be non-zero (its sign says which way the parameter "
                             "moves the value)")
        if self.scale is None and not self.target:
            raise ValueError(f"{self.parameter}: a target of 0 needs a scale (the error is relative to the target "
                             "otherwise)")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"{self.parameter}: scale must be > 0, got {self.scale}")
        if not self.relaxation_ps > 0 or (self.filter_ps is not None and not self.filter_ps > 0):
            raise ValueError(f"{self.parameter}: relaxation_ps and filter_ps must be > 0")
        low = -self.limit if self.lower is None else self.lower
        if not self.limit > 0 or not low <= self.start <= self.limit:
            raise ValueError(f"{self.parameter}: need limit > 0 and start within [{low}, {self.limit}] (got {self.start})")


def control_ramps(system: openmm.System, positions, box, channels: Sequence[ControlChannel], *, temperature_K: float,
                  steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0,
                  updates: int = 400, settled: float = 0.15, minimize: bool = True,
                  revise: Optional[Callable[[np.ndarray, np.ndarray], Optional[openmm.System]]] = None,
                  revise_every: int = 0, revise_until: float = 1.0, fixed: Optional[Mapping[str, float]] = None,
                  observe: Optional[Mapping[str, Measure]] = None,
                  log: Optional[Callable[[str], None]] = None) -> Dict:
    """Run ``system`` (Langevin, ``steps`` steps from ``positions`` in ``box``, nm) while one PI
    controller per channel sets its global parameter so that its measured value (taken
    ``updates`` times) reaches its target.

    ``revise(positions (k, n, 3), boxes (k, 3, 3))``, called every ``revise_every`` updates with
    the frames of the updates since its last call, may return a new System (the same particles
    and global parameters; e.g. bonded tables refined on those frames) that the run goes on with
    from its current state; it is called only within the first ``revise_until`` fraction of the
    run and never within the settled part, so that the controllers settle on the last System.
    ``fixed``: global parameters held at these values throughout (not controlled). ``observe``:
    values measured at every update alongside, without a controller (``measure(x, cell,
    parameters)``), returned under "observed" as {"value": mean over the settled part, "trace":
    [{"time_ps", "value"}]}.

    Returns ``{"channels": {parameter: {"A": mean parameter over the last ``settled`` fraction of
    the run, "value", "value_sem": the measured value there, "target", "trace": [{"time_ps", "A",
    "value"}] every update}}, "positions", "box": the last frame (nm, lists)}``. A run that blows
    up raises RuntimeError."""
    from multiscale.openmm.short_runs import langevin_context

    channels = list(channels)
    names = [c.parameter for c in channels]
    if not channels or len(set(names)) != len(names):
        raise ValueError(f"need at least one channel and one channel per parameter (got {names})")
    if not 0.0 < settled <= 1.0:
        raise ValueError(f"settled={settled} must be a fraction of the run in (0, 1]")
    if steps < 2 * updates or updates < 10:
        raise ValueError(f"need updates >= 10 and steps >= 2 x updates (got {updates}, {steps})")
    fixed = dict(fixed or {})
    observe = dict(observe or {})
    if set(fixed) & set(names):
        raise ValueError(f"a parameter cannot be both controlled and fixed: {sorted(set(fixed) & set(names))}")
    context, integrator = langevin_context(system, positions, box, temperature_K=temperature_K, timestep_ps=timestep_ps,
                                           inner_steps=inner_steps, platform=platform, seed=seed, minimize=minimize,
                                           parameters={**fixed, **{c.parameter: c.start for c in channels}})
    observed: Dict[str, list] = {name: [] for name in observe}
    dof, masses = degrees_of_freedom(system), system_masses(system)

    chunk = int(steps) // int(updates)
    dt = chunk * timestep_ps
    first_settled = int(updates) - max(int(round(settled * int(updates))), 1)
    current = {c.parameter: float(c.start) for c in channels}
    integral = {name: 0.0 for name in names}
    filtered: Dict[str, Optional[float]] = {name: None for name in names}
    traces: Dict[str, list] = {name: [] for name in names}
    if revise is not None and revise_every < 1:
        raise ValueError(f"revise needs revise_every >= 1 (updates between its calls), got {revise_every}")
    since_x, since_box, revisions = [], [], 0
    for k in range(int(updates)):
        integrator.step(chunk)
        state = context.getState(getPositions=True)
        x = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        cell = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        if not np.all(np.isfinite(x)):
            raise OverheatingError(f"the controlled run blew up (NaN positions) after {(k + 1) * chunk} steps at {current}; "
                                   f"the time step {timestep_ps:g} ps is too long for the model's stiffest terms")
        check_temperature(context, temperature_K, what=f"the controlled run (after {(k + 1) * chunk} steps at {current})",
                          timestep_ps=timestep_ps, dof=dof, masses=masses)
        values = {c.parameter: float(c.measure(x, cell, dict(current))) for c in channels}
        for name, measure in observe.items():
            observed[name].append({"time_ps": (k + 1) * dt, "value": float(measure(x, cell, {**fixed, **current}))})
        for c in channels:
            name, value = c.parameter, values[c.parameter]
            traces[name].append({"time_ps": (k + 1) * dt, "A": current[name], "value": value})
            error = (value - c.target) / (c.scale if c.scale is not None else abs(c.target))
            filter_ps = c.filter_ps if c.filter_ps is not None else c.relaxation_ps / 10.0
            f = filtered[name]
            f = error if f is None else f + (error - f) * min(dt / filter_ps, 1.0)
            filtered[name] = f
            proposal = c.start - (f + (integral[name] + f * dt) / c.relaxation_ps) / c.sensitivity
            low = -c.limit if c.lower is None else c.lower
            if low <= proposal <= c.limit:
                integral[name] += f * dt
                current[name] = proposal
            else:
                current[name] = float(np.clip(proposal, low, c.limit))
            context.setParameter(name, current[name])
        if revise is not None:
            since_x.append(x)
            since_box.append(cell)
            if (k + 1) % revise_every == 0 and k + 1 < min(first_settled, revise_until * updates):
                revised = revise(np.asarray(since_x), np.asarray(since_box))
                since_x, since_box = [], []
                if revised is not None:
                    velocities = context.getState(getVelocities=True).getVelocities(asNumpy=True)
                    context, integrator = langevin_context(revised, x, cell, temperature_K=temperature_K,
                                                           timestep_ps=timestep_ps, inner_steps=inner_steps,
                                                           platform=platform, seed=seed + 7919 * (k + 1), minimize=False,
                                                           parameters={**fixed, **current})
                    context.setVelocities(velocities)
                    revisions += 1
        if log is not None and (k + 1) % max(updates // 8, 1) == 0:
            log(f"controller at {(k + 1) * dt:.0f} ps: " + "; ".join(
                f"{c.parameter} = {current[c.parameter]:.3f} (value {values[c.parameter]:.4g}, target {c.target:.4g})"
                for c in channels))
    out = {"channels": {}, "positions": x.tolist(), "box": cell.tolist(), "revisions": revisions,
           "observed": {name: {"value": float(np.mean([t["value"] for t in trace[first_settled:]])), "trace": trace}
                        for name, trace in observed.items()}}
    for c in channels:
        last = traces[c.parameter][first_settled:]
        v = np.array([t["value"] for t in last])
        out["channels"][c.parameter] = {
            "A": float(np.mean([t["A"] for t in last])), "value": float(v.mean()),
            "value_sem": float(v.std(ddof=1) / np.sqrt(max(len(v) / 10, 1))) if len(v) > 1 else float("nan"),
            "target": float(c.target), "trace": traces[c.parameter]}
    return out


def control_ramp(system: openmm.System, positions, box, measure: Callable[[np.ndarray, np.ndarray], float], *,
                 parameter: str, target: float, sensitivity: float, relaxation_ps: float, temperature_K: float,
                 steps: int, timestep_ps: float, inner_steps: int = 1, platform: str = "CPU", seed: int = 0,
                 updates: int = 400, start: float = 0.0, limit: float = 20.0, settled: float = 0.15,
                 minimize: bool = True, log: Optional[Callable[[str], None]] = None) -> Dict:
    """One channel of :func:`control_ramps` with a relative error: ``measure(positions, box)``
    driven to ``target`` (non-zero) by the global ``parameter``. Returns ``{"A", "value",
    "value_sem", "trace", "positions", "box"}`` (see :func:`control_ramps`)."""
    if not target:
        raise ValueError("the target must be non-zero (the error is relative to it)")
    channel = ControlChannel(parameter, lambda x, cell, _: measure(x, cell), target, sensitivity, relaxation_ps,
                             start=start, limit=limit)
    result = control_ramps(system, positions, box, [channel], temperature_K=temperature_K, steps=steps,
                           timestep_ps=timestep_ps, inner_steps=inner_steps, platform=platform, seed=seed, updates=updates,
                           settled=settled, minimize=minimize, log=log)
    found = result["channels"][parameter]
    return {k: found[k] for k in ("A", "value", "value_sem", "trace")} | {"positions": result["positions"],
                                                                          "box": result["box"]}
