"""Multiple time stepping for CG Systems: which forces are fast, which slow, and the integrator.

Bonded terms (bonds, angles, torsions: cheap, stiff) go on the inner step; everything else (the
bead network, tabulated or repulsive pair forces: costly, and softer) on the outer step, and so do
the soft bonded terms named in :data:`SLOW_BONDED_NAMES`. The
groups are OpenMM force groups, read by ``MTSLangevinIntegrator`` (the BAOAB-RESPA scheme of
Lagardère et al. 2019 that OpenMM ships). Barostats and motion removers are not forces of a group
the integrator evaluates; they keep whatever group they have.

Units: ps, K, 1/ps.
"""

from __future__ import annotations

from typing import List, Tuple

import openmm
from openmm import unit

#: bonded force classes evaluated on the inner (fast) step
BONDED_FORCES = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce,
                 openmm.RBTorsionForce, openmm.CustomBondForce, openmm.CustomAngleForce, openmm.CustomTorsionForce,
                 openmm.CustomCompoundBondForce)
#: bonded forces that go on the outer step all the same: the tabulated model's combined
#: bending–torsion terms, a few kJ/mol and damped by sin³θ₁ sin³θ₂ (soft). With OpenMM's angle
#: functions they cost 0.86 ms per call for the quick job's 96 terms on the CPU (on the inner step:
#: 2.4 ms of an 8.1 ms step with tables); written in coordinates, 0.12 ms.
SLOW_BONDED_NAMES = ("cg_tabulated_torsions",)
#: the force groups :func:`split_fast_slow` assigns
FAST_GROUP, SLOW_GROUP = 0, 1


def split_fast_slow(system: openmm.System) -> Tuple[int, int]:
    """Put the bonded forces of ``system`` in :data:`FAST_GROUP` and every other force (with the
    bonded ones named in :data:`SLOW_BONDED_NAMES`) in :data:`SLOW_GROUP` (in place); returns the
    number of fast and slow forces."""
    fast = slow = 0
    for force in system.getForces():
        if isinstance(force, (openmm.MonteCarloBarostat, openmm.MonteCarloAnisotropicBarostat,
                              openmm.MonteCarloMembraneBarostat, openmm.CMMotionRemover)):
            continue
        if isinstance(force, BONDED_FORCES) and force.getName() not in SLOW_BONDED_NAMES:
            force.setForceGroup(FAST_GROUP)
            fast += 1
        else:
            force.setForceGroup(SLOW_GROUP)
            slow += 1
    return fast, slow


def mts_langevin(system: openmm.System, temperature_K: float, friction_per_ps: float, timestep_ps: float,
                 inner_steps: int) -> openmm.MTSLangevinIntegrator:
    """An ``MTSLangevinIntegrator`` with outer step ``timestep_ps`` and ``inner_steps`` bonded
    sub-steps per outer step (forces grouped by :func:`split_fast_slow`, applied here)."""
    if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be a whole number >= 1, got {inner_steps!r}")
    fast, slow = split_fast_slow(system)
    if fast == 0 or slow == 0:
        raise ValueError(
            f"multiple time stepping needs bonded forces for the inner step and other forces for the outer one; "
            f"this System has {fast} bonded and {slow} other forces. Use inner_steps=1 (plain Langevin)")
    groups: List[Tuple[int, int]] = [(SLOW_GROUP, 1), (FAST_GROUP, int(inner_steps))]
    return openmm.MTSLangevinIntegrator(temperature_K * unit.kelvin, friction_per_ps / unit.picosecond,
                                        timestep_ps * unit.picosecond, groups)
