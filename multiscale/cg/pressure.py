"""Old import path: the CG pressure and its correction evaluate OpenMM Systems, so they live in
:mod:`multiscale.openmm.pressure`. Kept so that existing scripts keep working."""

from multiscale.openmm.pressure import *  # noqa: F401,F403
from multiscale.openmm.pressure import FORCE_NAME, PARAMETER, PressureCorrection, fit_pressure_correction, molecular_pressure, ramp_force  # noqa: F401
