"""A run that boils: the kinetic temperature of a thermostatted run far above the thermostat's.

A time step too long for a model's stiffest terms does not always end in NaN coordinates. With
bonded tables as stiff as a gel's (a narrow bond distribution inverts to a steep well), a
Langevin run at 30 fs gains energy faster than the 1/ps friction removes it, and settles as a
gas of broken molecules at 10³–10⁷ K with every coordinate finite (measured on a DPPC model:
2,100 K after 0.15 ps, 4×10⁷ K after 2.3 ps; stable at 10 fs). Nothing downstream would notice: the
frames are written, and the report compares them. So the runs that know their thermostat's
temperature check the kinetic one against it and raise :class:`OverheatingError`.

The check allows the instantaneous kinetic temperature's own spread, sqrt(2 / N_dof) of the mean
(8 % for 300 beads), many times over: it fires at :data:`LIMIT_FACTOR` (1.5) × the target or 1 + 8
spreads, whichever is higher, so a correctly thermostatted run never trips it (8σ) while a
boiling one does within its first picoseconds.

Units: K, kJ/mol.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import openmm
from openmm import unit

# the degrees of freedom and masses as the NVE checks count them (one definition for the project)
from multiscale.openmm.evaluation import degrees_of_freedom, system_masses

#: the kinetic temperature, as a multiple of the thermostat's, above which a run is boiling
LIMIT_FACTOR = 1.5
#: ... or this many standard deviations of the instantaneous kinetic temperature, if higher
LIMIT_SIGMAS = 8.0

#: the molar gas constant R (kJ/mol/K), from OpenMM's units
GAS_CONSTANT_KJ_MOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


class OverheatingError(RuntimeError):
    """A thermostatted run's kinetic temperature far above the thermostat's, or NaN: a time step
    too long for the model (a RuntimeError)."""


def kinetic_temperature(kinetic_energy_kj_mol: float, dof: int) -> float:
    """T = 2 K / (N_dof R), K in kJ/mol (amu nm²/ps² is kJ/mol)."""
    return 2.0 * float(kinetic_energy_kj_mol) / (max(int(dof), 1) * GAS_CONSTANT_KJ_MOL_K)


def temperature_limit(target_K: float, dof: int) -> float:
    """The kinetic temperature above which a run at ``target_K`` with ``dof`` degrees of freedom is
    boiling: max(LIMIT_FACTOR, 1 + LIMIT_SIGMAS sqrt(2 / N_dof)) × target."""
    return float(target_K) * max(LIMIT_FACTOR, 1.0 + LIMIT_SIGMAS * math.sqrt(2.0 / max(int(dof), 1)))


def check_temperature(context: openmm.Context, target_K: float, *, what: str, timestep_ps: float,
                      dof: Optional[int] = None, masses: Optional[np.ndarray] = None) -> float:
    """The context's kinetic temperature (K), from its velocities (no force evaluation); raises
    :class:`OverheatingError` naming ``what``, the temperature and the fix when it is above
    :func:`temperature_limit`. ``dof`` and ``masses`` (``multiscale.openmm.evaluation``'s
    ``degrees_of_freedom`` and ``system_masses``) may be passed to save recounting them at every check."""
    system = context.getSystem()
    dof = degrees_of_freedom(system) if dof is None else dof
    masses = system_masses(system) if masses is None else masses
    v = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
    temperature = kinetic_temperature(0.5 * float(np.sum(masses[:, None] * np.asarray(v) ** 2)), dof)
    limit = temperature_limit(target_K, dof)
    if not math.isfinite(temperature):
        raise OverheatingError(f"{what} blew up (NaN or infinite velocities); the time step {float(timestep_ps):g} ps "
                               "is too long for the model's stiffest terms: use a shorter one (e.g. half)")
    if temperature > limit:
        raise OverheatingError(
            f"{what} is boiling: kinetic temperature {temperature:.3g} K against the thermostat's {float(target_K):g} K "
            f"(limit {limit:.0f} K), every coordinate finite; the time step {float(timestep_ps):g} ps is too long for "
            "the model's stiffest terms: use a shorter one (e.g. half)")
    return temperature


__all__ = ["LIMIT_FACTOR", "LIMIT_SIGMAS", "OverheatingError", "kinetic_temperature", "temperature_limit",
           "check_temperature"]
