"""The one place where a System is assembled: particles, box, then each term added by its own
generator, in the style of ``ForceField.createSystem`` delegating each kind of term to a generator.

:func:`assemble_system` takes plain data (masses in amu, a (3, 3) box in nm) or a base System to
extend (Δ-learning's baseline), and a list of terms.
A term is any object with ``add_to(system)``; the ones here cover what multiscale builds:

* :class:`MLTerm` — the ML potential (TorchForce or PythonForce; tagged, in ``ML_FORCE_GROUP``);
* :class:`EnsembleTerm` — the ensemble-mean ML force of active learning;
* :class:`PriorTerms` — the CG priors (bonds, angles, dihedrals, repulsion);
* :class:`~multiscale.openmm.tabulated.TabulatedTerms` — the tabulated (MS-CG) CG family;
* :class:`PressureRamp` — the CG pressure correction on intermolecular bead pairs;
* :class:`ForceTerm` — an OpenMM Force built elsewhere in this layer (a restraint);
* :class:`Barostat` — a Monte Carlo barostat;
* :class:`CenterOfMassMotionRemover`.

``create_system``, ``create_delta_system``, ``build_cg_system`` and the exploration System of
active learning are thin callers of :func:`assemble_system`; long-range electrostatics (PME) and
ML/MM embedding join as further terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import openmm
from openmm import unit



@dataclass
class MLTerm:
    """The ML potential ``model`` on ``particles`` (default: all), types ``particle_types``."""

    model: Any
    particle_types: Sequence[str]
    periodic: bool
    particles: Optional[Sequence[int]] = None
    backend: str = "torchforce"
    #: the box was set by the assembly from the caller's cell, so an exact 2 nm cube is real
    allow_default_box: bool = True

    def add_to(self, system: openmm.System) -> int:
        from multiscale.openmm.bridge import torch_force

        particles = None if self.particles is None else list(self.particles)
        return system.addForce(torch_force(self.model, list(self.particle_types), bool(self.periodic), particles,
                                           backend=self.backend, system=system, allow_default_box=self.allow_default_box))


@dataclass
class EnsembleTerm:
    """The ensemble-mean force of an :class:`~multiscale.models.ensemble.EnsemblePotential`."""

    ensemble: Any
    particle_types: Sequence[str]
    periodic: bool
    backend: str = "pythonforce"

    def add_to(self, system: openmm.System) -> int:
        from multiscale.openmm.ensemble import ensemble_force

        return system.addForce(ensemble_force(self.ensemble, list(self.particle_types), bool(self.periodic),
                                              backend=self.backend, allow_default_box=True))


@dataclass
class PriorTerms:
    """The CG prior forces of ``priors`` on beads of ``bead_types`` with the given bonded terms
    (:func:`multiscale.openmm.priors.priors_to_openmm`)."""

    priors: Any
    bead_types: Sequence[str]
    bonds: Any
    angles: Any = ()
    dihedrals: Any = ()
    nonbonded_cutoff_nm: float = 1.0
    periodic: bool = True

    def add_to(self, system: openmm.System) -> int:
        from multiscale.openmm.priors import priors_to_openmm

        index = -1
        for force in priors_to_openmm(self.priors, self.bead_types, self.bonds, self.angles, self.dihedrals,
                                      nonbonded_cutoff_nm=self.nonbonded_cutoff_nm, periodic=self.periodic):
            index = system.addForce(force)
        return index


@dataclass
class PressureRamp:
    """The CG pressure correction (:class:`multiscale.openmm.pressure.PressureCorrection`) on the
    intermolecular pairs of ``molecules`` (bead index lists)."""

    correction: Any
    molecules: Sequence[Sequence[int]]

    def add_to(self, system: openmm.System) -> int:
        return self.correction.add_to(system, self.molecules)


@dataclass
class ForceTerm:
    """An OpenMM Force built elsewhere in this layer (e.g. the flat-bottom restraint of exploration)."""

    force: openmm.Force

    def add_to(self, system: openmm.System) -> int:
        return system.addForce(self.force)


@dataclass
class Barostat:
    """A Monte Carlo barostat at ``pressure_bar`` and ``temperature_K``, trying every ``frequency`` steps."""

    pressure_bar: float
    temperature_K: float
    seed: int = 0
    frequency: int = 25

    def add_to(self, system: openmm.System) -> int:
        barostat = openmm.MonteCarloBarostat(self.pressure_bar * unit.bar, self.temperature_K * unit.kelvin, self.frequency)
        barostat.setRandomNumberSeed(int(self.seed))
        return system.addForce(barostat)


@dataclass
class MembraneBarostat:
    """OpenMM's ``MonteCarloMembraneBarostat`` for a bilayer in the xy plane: the area (x and y
    scaled together) at ``tension_bar_nm`` (surface tension; 0 = tension-free, the force field's
    own area) and the normal at ``pressure_bar``; ``z_mode`` "free" (a solvated bilayer) or
    "fixed" (a solvent-free one, whose normal pressure is that of vacuum). Units: bar, bar·nm, K."""

    pressure_bar: float
    temperature_K: float
    tension_bar_nm: float = 0.0
    z_mode: str = "free"
    seed: int = 0
    frequency: int = 25

    def __post_init__(self) -> None:
        if self.z_mode not in ("free", "fixed"):
            raise ValueError(f"z_mode must be 'free' (solvated bilayer) or 'fixed' (solvent-free), got {self.z_mode!r}")

    def add_to(self, system: openmm.System) -> int:
        cls = openmm.MonteCarloMembraneBarostat
        z_mode = cls.ZFree if self.z_mode == "free" else cls.ZFixed
        barostat = cls(self.pressure_bar * unit.bar, self.tension_bar_nm * unit.bar * unit.nanometer,
                       self.temperature_K * unit.kelvin, cls.XYIsotropic, z_mode, self.frequency)
        barostat.setRandomNumberSeed(int(self.seed))
        return system.addForce(barostat)


@dataclass
class CenterOfMassMotionRemover:
    """Removes the centre-of-mass motion every ``frequency`` steps."""

    frequency: int = 1

    def add_to(self, system: openmm.System) -> int:
        return system.addForce(openmm.CMMotionRemover(self.frequency))


def assemble_system(masses_amu: Optional[Sequence[float]] = None, *, base: Optional[openmm.System] = None,
                    box_nm=None, terms: Sequence[Any] = (), allow_zero_mass: bool = False,
                    what: str = "a particle") -> openmm.System:
    """The System: particles, box, then each of ``terms`` added in order (``term.add_to(system)``).

    Either ``masses_amu`` (one particle per entry, amu; each > 0 unless ``allow_zero_mass``) with
    the periodic cell ``box_nm`` ((3, 3), rows a, b, c in nm; None for open boundaries), or
    ``base``: a System whose particles, box, constraints, virtual sites and forces are copied
    (:func:`multiscale.openmm.system.clone_system`; it must hold no ML force) and extended.
    """
    if (masses_amu is None) == (base is None):
        raise ValueError("give either masses_amu (a new System) or base (a System to copy and extend)")
    if base is not None:
        from multiscale.openmm.system import clone_system

        if box_nm is not None:
            raise ValueError("base= keeps the base System's box; do not pass box_nm with it")
        system = clone_system(base)
    else:
        masses = np.asarray(masses_amu, dtype=np.float64).ravel()
        system = openmm.System()
        for mass in masses:
            if not np.isfinite(mass) or mass < 0 or (mass == 0 and not allow_zero_mass):
                raise ValueError(f"{what} has mass {mass} amu; every one needs a positive mass (at least one massive atom)")
            system.addParticle(float(mass) * unit.dalton)
        if box_nm is not None:
            box = np.asarray(box_nm, dtype=np.float64)
            if box.shape != (3, 3) or not np.all(np.isfinite(box)):
                raise ValueError(f"box must be a finite (3, 3) array in nm (rows a, b, c), got shape {box.shape}")
            system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box] * unit.nanometer)
    for term in terms:
        if not callable(getattr(term, "add_to", None)):
            raise TypeError(f"a System term must have add_to(system), got {type(term).__name__}")
        term.add_to(system)
    return system
