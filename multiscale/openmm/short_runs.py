"""Short Langevin runs that return their frames: the measurements of the CG corrections that
iterate against simulations (density, bilayer area and thickness, bonded distributions).

Units: nm, ps, K.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import openmm
from openmm import unit

from multiscale.openmm.evaluation import degrees_of_freedom, system_masses
from multiscale.openmm.overheating import OverheatingError, check_temperature


def langevin_context(system: openmm.System, positions, box, *, temperature_K: float, timestep_ps: float,
                     inner_steps: int = 1, platform: str = "CPU", seed: int = 0, minimize: bool = True,
                     parameters: Optional[Dict[str, float]] = None):
    """(Context, integrator) of a Langevin run of a copy of ``system`` (friction 1/ps; multiple
    time stepping when ``inner_steps`` > 1) at ``positions`` in ``box`` (nm) with the global
    ``parameters`` set, energy-minimised when ``minimize``, velocities drawn at ``temperature_K``.
    A parameter the System lacks raises ValueError."""
    from multiscale.openmm.molecules import whole_positions
    from multiscale.openmm.mts import mts_langevin

    system = openmm.XmlSerializer.clone(system)
    if inner_steps > 1:
        integrator = mts_langevin(system, temperature_K, 1.0, timestep_ps, inner_steps)
    else:
        integrator = openmm.LangevinMiddleIntegrator(temperature_K * unit.kelvin, 1.0 / unit.picosecond, timestep_ps * unit.picosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in np.asarray(box, dtype=float)])
    context.setPositions(whole_positions(system, positions, box))
    for name, value in (parameters or {}).items():
        if name not in context.getParameters():
            raise ValueError(f"the System has no global parameter {name!r} (it has {sorted(context.getParameters())})")
        context.setParameter(name, float(value))
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 200)
    context.setVelocitiesToTemperature(temperature_K * unit.kelvin, seed + 2)
    return context, integrator


def sample_run(system: openmm.System, positions, box, *, temperature_K: float, steps: int, timestep_ps: float,
               inner_steps: int = 1, platform: str = "CPU", seed: int = 0, frames: int = 30, minimize: bool = True
               ) -> Tuple[np.ndarray, np.ndarray]:
    """``frames`` evenly spaced frames of a Langevin run of ``steps`` steps of ``system`` (its
    barostat, if any, included) from ``positions`` in ``box`` (nm; energy-minimised first when
    ``minimize``): (positions (frames, n, 3) nm, boxes (frames, 3, 3) nm). A run that blows up
    raises RuntimeError (:class:`~multiscale.openmm.overheating.OverheatingError` when it boils or
    its velocities turn NaN)."""
    context, integrator = langevin_context(system, positions, box, temperature_K=temperature_K, timestep_ps=timestep_ps,
                                           inner_steps=inner_steps, platform=platform, seed=seed, minimize=minimize)
    chunk = max(int(steps) // int(frames), 1)
    xyz, cells = [], []
    dof, masses = degrees_of_freedom(system), system_masses(system)
    for k in range(int(frames)):
        integrator.step(chunk)
        check_temperature(context, temperature_K, what=f"a short run (after {(k + 1) * chunk} of {steps} steps)",
                          timestep_ps=timestep_ps, dof=dof, masses=masses)
        state = context.getState(getPositions=True)
        xyz.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        cells.append(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    xyz, cells = np.asarray(xyz, dtype=np.float64), np.asarray(cells, dtype=np.float64)
    if not np.all(np.isfinite(xyz)):
        raise OverheatingError(f"a short run of {steps} steps at {timestep_ps} ps blew up (NaN positions); the time step "
                               "is too long for the model's stiffest terms")
    return xyz, cells
