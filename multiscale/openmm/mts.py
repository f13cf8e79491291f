"""Multiple time stepping for CG Systems: which forces are fast, which slow, and the integrator.

Bonded terms (bonds, angles, torsions: cheap, stiff) go on the inner step; everything else (the
bead network, tabulated or repulsive pair forces: costly, and softer) on the outer step, and so do
the soft bonded terms named in :data:`SLOW_BONDED_NAMES`. The
groups are OpenMM force groups, read by :class:`RespaLangevinIntegrator`: the BAOAB-RESPA scheme of
Lagardère et al. 2019 that OpenMM ships as ``MTSLangevinIntegrator``, for two groups, written
with fewer computation steps. Barostats and motion removers are not forces of a group the
integrator evaluates; they keep whatever group they have.

Units: ps, K, 1/ps.
"""

from __future__ import annotations

import math
from typing import Tuple

import openmm

from multiscale.openmm.tabulated import CHAIN_PAIR_FORCE, INTRAMOLECULAR_RAMP_FORCE, _num
from multiscale.units import KB_KJ_PER_MOL_K

#: bonded force classes evaluated on the inner (fast) step
BONDED_FORCES = (openmm.HarmonicBondForce, openmm.HarmonicAngleForce, openmm.PeriodicTorsionForce,
                 openmm.RBTorsionForce, openmm.CustomBondForce, openmm.CustomAngleForce, openmm.CustomTorsionForce,
                 openmm.CustomCompoundBondForce)
#: bonded forces that go on the outer step all the same: the tabulated model's combined
#: bending–torsion terms, a few kJ/mol and damped by sin³θ₁ sin³θ₂ (soft). With OpenMM's angle
#: functions they cost 0.86 ms per call for the quick job's 96 terms on the CPU (on the inner step:
#: 2.4 ms of an 8.1 ms step with tables); written in coordinates, 0.12 ms. And the correction that
#: takes the intermolecular ramps back off each chain's own pairs: a linear ramp of < 1 kJ/mol
#: over the cutoff (the pair force it corrects is on the outer step), 0.05 ms per call. And the
#: chain-pair corrections (1-5, 1-6 bead distances): a few kJ/mol over tenths of a nm, as soft as
#: the pair tables they sit on.
SLOW_BONDED_NAMES = ("cg_tabulated_torsions", INTRAMOLECULAR_RAMP_FORCE, CHAIN_PAIR_FORCE)
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


class RespaLangevinIntegrator(openmm.CustomIntegrator):
    """BAOAB-RESPA Langevin dynamics for two force groups (Lagardère et al. 2019): the slow group
    kicks on the outer step ``timestep_ps``, the fast group on ``inner_steps`` sub-steps, each a
    BAOAB step with the thermostat in its middle.

    The scheme and its variables are those of OpenMM's
    ``MTSLangevinIntegrator(T, γ, dt, [(slow, 1), (fast, n)])``: without friction the two give one
    trajectory to rounding (a test), and with it they sample one ensemble (another), though not
    one trajectory from one seed (OpenMM's reference kernel draws its random numbers by
    computation step). Written here, not taken from OpenMM, because the CPU platform runs a
    CustomIntegrator's computation steps one by one, ~17 µs each for 192 beads, and OpenMM's
    general form spends 31 of them on a 60/3 step: the two half kicks that meet between sub-steps
    are one kick here, and the constraint steps are left out when the System has no constraints
    (a CG System's usual case): 15 steps, 0.15 ms less per 60/3 step of the quick
    polymer model. Units: K, 1/ps, ps."""

    def __init__(self, temperature_K: float, friction_per_ps: float, timestep_ps: float, inner_steps: int,
                 slow_group: int = SLOW_GROUP, fast_group: int = FAST_GROUP, constraints: bool = False):
        if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 1:
            raise ValueError(f"inner_steps must be a whole number >= 1, got {inner_steps!r}")
        if not (float(temperature_K) > 0 and float(friction_per_ps) > 0 and float(timestep_ps) > 0):
            raise ValueError(f"temperature_K ({temperature_K}), friction_per_ps ({friction_per_ps}) and "
                             f"timestep_ps ({timestep_ps}) must be > 0")
        super().__init__(float(timestep_ps))
        n = int(inner_steps)
        dt = float(timestep_ps)
        h = dt / n
        # the variables of OpenMM's MTSLangevinIntegrator, in its order, so that either loads the
        # other's checkpoints (x1 is used only with constraints)
        self.addGlobalVariable("a", math.exp(-float(friction_per_ps) * h))
        self.addGlobalVariable("b", math.sqrt(1.0 - math.exp(-2.0 * float(friction_per_ps) * h)))
        self.addGlobalVariable("kT", KB_KJ_PER_MOL_K * float(temperature_K))
        self.addPerDofVariable("x1", 0)
        slow, fast = f"f{int(slow_group)}", f"f{int(fast_group)}"
        self.addUpdateContextState()
        self.addComputePerDof("v", f"v+{_num(0.5 * dt)}*{slow}/m")
        self.addComputePerDof("v", f"v+{_num(0.5 * h)}*{fast}/m")
        for k in range(n):
            self.addComputePerDof("x", f"x+{_num(0.5 * h)}*v")
            self.addComputePerDof("v", "a*v+b*sqrt(kT/m)*gaussian")
            self.addComputePerDof("x", f"x+{_num(0.5 * h)}*v")
            if constraints:
                self.addComputePerDof("x1", "x")
                self.addConstrainPositions()
                self.addComputePerDof("v", f"v+(x-x1)/{_num(h)}")
                self.addConstrainVelocities()
            # the closing half kick of this sub-step and the opening one of the next, as one
            self.addComputePerDof("v", f"v+{_num(h if k < n - 1 else 0.5 * h)}*{fast}/m")
        self.addComputePerDof("v", f"v+{_num(0.5 * dt)}*{slow}/m")
        if constraints:
            self.addConstrainVelocities()


def mts_langevin(system: openmm.System, temperature_K: float, friction_per_ps: float, timestep_ps: float,
                 inner_steps: int) -> RespaLangevinIntegrator:
    """A :class:`RespaLangevinIntegrator` with outer step ``timestep_ps`` and ``inner_steps`` bonded
    sub-steps per outer step (forces grouped by :func:`split_fast_slow`, applied here)."""
    if isinstance(inner_steps, bool) or int(inner_steps) != inner_steps or inner_steps < 1:
        raise ValueError(f"inner_steps must be a whole number >= 1, got {inner_steps!r}")
    fast, slow = split_fast_slow(system)
    if fast == 0 or slow == 0:
        raise ValueError(
            f"multiple time stepping needs bonded forces for the inner step and other forces for the outer one; "
            f"this System has {fast} bonded and {slow} other forces. Use inner_steps=1 (plain Langevin)")
    return RespaLangevinIntegrator(temperature_K, friction_per_ps, timestep_ps, int(inner_steps),
                                   constraints=system.getNumConstraints() > 0)
