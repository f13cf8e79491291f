"""Evaluating a System outside a Simulation: energies and forces at given positions, short NVE
and Langevin runs. What ``multiscale.validate`` asks of OpenMM, in plain numpy.

Units: positions and boxes nm, energies kJ/mol, forces kJ/mol/nm, time ps, masses amu, K.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import openmm
from openmm import unit

from multiscale.openmm.molecules import whole_positions
from multiscale.openmm.platforms import get_platform

#: unit roundoff of the arithmetic a platform's forces use: Reference computes in double; CPU,
#: CUDA and OpenCL (default precision) compute forces in single precision
DOUBLE_EPS = float(np.finfo(np.float64).eps)
SINGLE_EPS = float(np.finfo(np.float32).eps)


def _platform_eps(name: str, properties: Optional[dict]) -> float:
    if name == "Reference":
        return DOUBLE_EPS
    precision = (properties or {}).get("Precision", "")
    return DOUBLE_EPS if precision == "double" else SINGLE_EPS


@contextmanager
def barostats_off(system: openmm.System) -> Iterator[List[str]]:
    """Barostats (any force with ``setFrequency`` whose class name says Barostat) switched off
    while Contexts are made, so that evaluations and NVE runs keep the box; restored after.
    Yields the names of the barostats that were switched off."""
    saved = []
    for force in system.getForces():
        name = type(force).__name__
        if "Barostat" in name and hasattr(force, "setFrequency"):
            saved.append((force, force.getFrequency()))
            force.setFrequency(0)
    try:
        yield [type(force).__name__ for force, _ in saved]
    finally:
        for force, frequency in saved:
            force.setFrequency(frequency)


def system_masses(system: openmm.System) -> np.ndarray:
    """(N,) particle masses in amu (0 for virtual sites and fixed particles)."""
    return np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])


def system_constraints(system: openmm.System) -> List[Tuple[int, int, float]]:
    """(i, j, distance nm) of every constraint."""
    out = []
    for k in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(k)
        out.append((int(i), int(j), float(d.value_in_unit(unit.nanometer))))
    return out


def system_cutoffs(system: openmm.System) -> List[float]:
    """The distinct cutoffs (nm) of the System's cutoff forces (nonbonded, custom nonbonded)."""
    cutoffs = set()
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce) and force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
            cutoffs.add(round(force.getCutoffDistance().value_in_unit(unit.nanometer), 9))
        elif isinstance(force, openmm.CustomNonbondedForce) and force.getNonbondedMethod() != openmm.CustomNonbondedForce.NoCutoff:
            cutoffs.add(round(force.getCutoffDistance().value_in_unit(unit.nanometer), 9))
    return sorted(cutoffs)


def ewald_error_tolerance(system: openmm.System) -> float:
    """The Ewald/PME error tolerance of the System's NonbondedForce (0 when it uses no lattice sum):
    such Systems are translation invariant only to within it (the mesh is fixed in space)."""
    lattice = (openmm.NonbondedForce.Ewald, openmm.NonbondedForce.PME, openmm.NonbondedForce.LJPME)
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce) and force.getNonbondedMethod() in lattice:
            return float(force.getEwaldErrorTolerance())
    return 0.0


def has_cm_motion_remover(system: openmm.System) -> bool:
    return any(isinstance(force, openmm.CMMotionRemover) for force in system.getForces())


def degrees_of_freedom(system: openmm.System) -> int:
    """3 × massive particles − constraints − 3 (when the centre-of-mass motion is removed)."""
    massive = int(np.count_nonzero(system_masses(system) > 0))
    return 3 * massive - system.getNumConstraints() - (3 if has_cm_motion_remover(system) else 0)


def _vec3s(array: np.ndarray):
    return [openmm.Vec3(*map(float, row)) for row in np.asarray(array, dtype=np.float64)] * unit.nanometer


class SystemEvaluator:
    """Energy and forces of ``system`` at any positions (and box), on one platform.

    The Context is :class:`~multiscale.labels.openmm_teacher.OpenMMLabeller`'s (one, made once,
    virtual sites recomputed), made with the barostats off; ``energy_forces(positions, box)``.
    ``eps`` is the unit roundoff of the platform's force arithmetic, from which the checks derive
    their noise floors.
    """

    def __init__(self, system: openmm.System, platform: str = "Reference", properties: Optional[dict] = None):
        from multiscale.labels.openmm_teacher import OpenMMLabeller

        self.system = system
        self.platform = get_platform(str(platform)).getName()  # a missing platform is refused with install hints
        self.periodic = bool(system.usesPeriodicBoundaryConditions())
        self.eps = _platform_eps(self.platform, properties)
        self.masses = system_masses(system)
        with barostats_off(system):
            self._labeller = OpenMMLabeller(system, self.platform, properties)
        self.context = self._labeller.context
        self.calls = 0

    def molecules(self) -> List[List[int]]:
        """Particle indices of each molecule (connected by bonds and constraints), OpenMM's own."""
        return [list(m) for m in self.context.getMolecules()]

    @property
    def num_particles(self) -> int:
        return int(self.masses.size)

    def energy_forces(self, positions: np.ndarray, box: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
        """(potential energy kJ/mol, forces (N, 3) kJ/mol/nm) at ``positions`` (N, 3) nm."""
        if self.periodic and box is None:
            raise ValueError("the System is periodic: give the box (3, 3) nm")
        self.calls += 1
        return self._labeller.energy_forces(positions, box if self.periodic else None)


@dataclass
class EnergyTrace:
    """Energies (kJ/mol) of an MD run at ``time_ps``; ``blew_up`` says it went non-finite."""

    time_ps: np.ndarray
    potential: np.ndarray
    kinetic: np.ndarray
    degrees_of_freedom: int
    blew_up: bool = False
    message: str = ""

    @property
    def total(self) -> np.ndarray:
        return self.potential + self.kinetic


def _context(system, integrator, positions, box, platform, properties):
    with barostats_off(system):
        context = openmm.Context(system, integrator, get_platform(platform), dict(properties or {}))
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in np.asarray(box)])
    context.setPositions(_vec3s(whole_positions(system, positions, box)))
    if system.getNumConstraints():
        context.applyConstraints(1e-8)
    return context


def run_nve(
    system: openmm.System,
    positions: np.ndarray,
    box: Optional[np.ndarray],
    *,
    timestep_ps: float,
    steps: int,
    temperature_K: float,
    report_every: int = 10,
    platform: str = "CPU",
    properties: Optional[dict] = None,
    seed: int = 0,
    progress=None,
) -> EnergyTrace:
    """Velocity Verlet from ``positions`` with velocities drawn at ``temperature_K``; the
    potential and kinetic energy every ``report_every`` steps. Stops early (``blew_up``) if an
    energy goes non-finite or OpenMM refuses to go on (NaN coordinates)."""
    integrator = openmm.VerletIntegrator(float(timestep_ps))
    if system.getNumConstraints():
        integrator.setConstraintTolerance(1e-8)
    context = _context(system, integrator, positions, box, platform, properties)
    context.setVelocitiesToTemperature(float(temperature_K) * unit.kelvin, int(seed))
    times, potential, kinetic = [], [], []
    blew_up, message = False, ""
    # the first step settles what the drawn velocities are not yet (the centre-of-mass motion a
    # CMMotionRemover takes out, the constraint components, leapfrog's half-step kinetic energy):
    # energies are recorded from there on
    try:
        integrator.step(1)
    except Exception as err:  # noqa: BLE001
        return EnergyTrace(np.zeros(0), np.zeros(0), np.zeros(0), degrees_of_freedom(system), True,
                           f"OpenMM stopped at the first step: {err}")
    done = 0
    while True:
        state = context.getState(getEnergy=True)
        pe = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        ke = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        times.append(done * float(timestep_ps))
        potential.append(pe)
        kinetic.append(ke)
        if not (np.isfinite(pe) and np.isfinite(ke)):
            blew_up, message = True, f"energy went non-finite after {done} steps"
            break
        if done >= steps:
            break
        chunk = min(int(report_every), steps - done)
        try:
            integrator.step(chunk)
        except Exception as err:  # noqa: BLE001  (OpenMM raises OpenMMException on NaN coordinates)
            blew_up, message = True, f"OpenMM stopped after about {done} steps: {err}"
            break
        done += chunk
        if progress is not None:
            progress(chunk)
    return EnergyTrace(np.array(times), np.array(potential), np.array(kinetic), degrees_of_freedom(system), blew_up, message)


def thermal_snapshots(
    system: openmm.System,
    positions: np.ndarray,
    box: Optional[np.ndarray],
    *,
    temperature_K: float,
    timestep_ps: float,
    count: int,
    steps_between: int,
    friction_per_ps: float = 5.0,
    platform: str = "CPU",
    properties: Optional[dict] = None,
    seed: int = 0,
) -> List[np.ndarray]:
    """``count`` configurations (N, 3) nm of a Langevin run at ``temperature_K`` started from
    ``positions``, ``steps_between`` steps apart. Raises ValueError if the run goes non-finite."""
    integrator = openmm.LangevinMiddleIntegrator(float(temperature_K) * unit.kelvin, float(friction_per_ps) / unit.picosecond,
                                                 float(timestep_ps))
    integrator.setRandomNumberSeed(int(seed))
    context = _context(system, integrator, positions, box, platform, properties)
    context.setVelocitiesToTemperature(float(temperature_K) * unit.kelvin, int(seed))
    out = []
    for k in range(int(count)):
        try:
            integrator.step(int(steps_between))
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"the Langevin run for thermal perturbations blew up at {temperature_K:g} K "
                             f"with a {timestep_ps * 1000:.3g} fs step ({err})") from None
        state = context.getState(getPositions=True, getEnergy=True)
        if not np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)):
            raise ValueError(f"the Langevin run for thermal perturbations went non-finite at {temperature_K:g} K "
                             f"with a {timestep_ps * 1000:.3g} fs step")
        out.append(np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
    return out


def read_system_xml(path) -> openmm.System:
    """A System serialised with ``openmm.XmlSerializer``, or a ValueError naming the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no System file at {path}; write one with open(path, 'w').write(openmm.XmlSerializer.serialize(system))")
    text = path.read_text()
    try:
        system = openmm.XmlSerializer.deserialize(text)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path} is not an OpenMM System XML file ({str(err).strip() or type(err).__name__}); "
                         "write it with openmm.XmlSerializer.serialize(system)") from None
    if not isinstance(system, openmm.System):
        raise ValueError(f"{path} holds a serialised {type(system).__name__}, not a System")
    return system


def write_system_xml(system: openmm.System, path) -> None:
    """Serialise ``system`` (it must hold no ML force: TorchForce/PythonForce do not serialise) atomically."""
    from multiscale.atomic import atomic_write_text

    atomic_write_text(path, openmm.XmlSerializer.serialize(system))


def read_pdb(path) -> Tuple[np.ndarray, Optional[np.ndarray], List[Optional[str]], List[str], List[Optional[float]]]:
    """(positions (N, 3) nm, box (3, 3) nm or None, element symbols (None where there is no
    element), atom names, masses amu (None where there is no element)) of a PDB file."""
    from openmm import app

    pdb = app.PDBFile(str(path))
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)
    vectors = pdb.topology.getPeriodicBoxVectors()
    box = None if vectors is None else np.array([[float(c) for c in v.value_in_unit(unit.nanometer)] for v in vectors])
    elements = [atom.element.symbol if atom.element is not None else None for atom in pdb.topology.atoms()]
    names = [atom.name for atom in pdb.topology.atoms()]
    masses = [atom.element.mass.value_in_unit(unit.dalton) if atom.element is not None else None for atom in pdb.topology.atoms()]
    return positions, box, elements, names, masses


def element_masses(symbols) -> List[float]:
    """Masses (amu) of element symbols, OpenMM's table; a ValueError names an unknown symbol."""
    from openmm.app import element

    out = []
    for symbol in symbols:
        try:
            out.append(element.Element.getBySymbol(str(symbol)).mass.value_in_unit(unit.dalton))
        except KeyError:
            raise ValueError(f"{symbol!r} is not an element symbol, so its mass is unknown; give a System "
                             "(--system SYSTEM.xml) that holds the particle masses") from None
    return out


def default_box(system: openmm.System) -> np.ndarray:
    """The System's default periodic box (3, 3) nm."""
    return np.array([[float(c) for c in v.value_in_unit(unit.nanometer)] for v in system.getDefaultPeriodicBoxVectors()])
