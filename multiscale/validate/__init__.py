"""``multiscale validate``: can I trust this model inside MD, and at what time step?

Symmetry, conservative forces, smoothness at the cutoff, the stiffest mode of the mass-weighted
Hessian (and the largest safe Verlet step), a short NVE run and, for ensembles, the force spread,
each with its number, threshold and pass/fail. From Python::

    from multiscale.validate import validate
    report = validate(system, positions_nm, box_nm, model=model, types=types, quick=True)
    print(report.table()); report.recommended_timestep_fs

From the shell: ``python -m multiscale.validate --model PATH --structure FILE [--system SYSTEM.xml]``.
"""

from multiscale.validate.pipeline import build_target, validate
from multiscale.validate.report import Check, ValidationReport
from multiscale.validate.settings import QUICK, ValidationSettings

__all__ = ["validate", "build_target", "ValidationReport", "Check", "ValidationSettings", "QUICK"]
