"""Configurations from OpenMM simulations and mdtraj trajectories (nm, kJ/mol, kJ/mol/nm).

One of the two modules outside :mod:`multiscale.openmm` that import OpenMM: its very job is to
read positions (and forces) out of a user's running OpenMM Simulation into the data layer."""

from __future__ import annotations

import numbers
from typing import List, Optional, Sequence, Union

import numpy as np
import openmm
from openmm import app, unit
from tqdm.auto import tqdm

from multiscale.data.configuration import Configuration

_FORCE_UNIT = unit.kilojoule_per_mole / unit.nanometer


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _platform(platform: Union[str, openmm.Platform]) -> openmm.Platform:
    if isinstance(platform, openmm.Platform):
        return platform
    try:
        return openmm.Platform.getPlatformByName(str(platform))
    except Exception as exc:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise ValueError(f"unknown OpenMM platform {platform!r}; available: {names}") from exc


def _check_types(types: Sequence[str], n: int, what: str) -> List[str]:
    types = [str(t) for t in types]
    if len(types) != n:
        raise ValueError(f"types has {len(types)} entries but the {what} has {n} particles; pass one type per particle")
    return types


def sample_simulation(
    simulation: app.Simulation,
    num_samples: int,
    interval: int,
    *,
    types: Optional[Sequence[str]] = None,
    system: Optional[openmm.System] = None,
    platform: Union[str, openmm.Platform] = "Reference",
    progress: bool = True,
) -> List[Configuration]:
    """Run ``simulation`` and record ``num_samples`` labelled configurations, one every ``interval`` steps.

    Each sample follows ``simulation.step(interval)`` (the first is taken after ``interval`` steps,
    not at the starting point) and records the positions (nm, as OpenMM holds them, not wrapped),
    the box (rows a, b, c in nm) when the simulated System is periodic, and the potential energy
    (kJ/mol) and forces (kJ/mol/nm). Labels come from the simulation's own state, or — when a
    teacher ``system`` is given — from that System evaluated at the same positions and box in one
    separate Context on ``platform`` (created once, reused for every sample). The teacher must have
    the same particle count and periodicity as the simulated System. No virial is recorded.

    ``types`` default to :func:`multiscale.openmm.topology_types` of ``simulation.topology``
    (element symbol, or atom name where there is no element). ``info`` is
    ``{"source": "openmm", "step": simulation.currentStep}``. ``progress`` shows a tqdm bar.
    """
    num_samples = _positive_int(num_samples, "num_samples")
    interval = _positive_int(interval, "interval")
    n = simulation.system.getNumParticles()
    if types is None:
        from multiscale.openmm.system import topology_types

        types = topology_types(simulation.topology)
    types = _check_types(types, n, "simulated System")
    periodic = simulation.system.usesPeriodicBoundaryConditions()

    teacher = None
    if system is not None:
        if system.getNumParticles() != n:
            raise ValueError(f"teacher system has {system.getNumParticles()} particles but the simulated System "
                             f"has {n}; the teacher must describe the same particles")
        if system.usesPeriodicBoundaryConditions() != periodic:
            raise ValueError(
                f"teacher system is {'periodic' if system.usesPeriodicBoundaryConditions() else 'non-periodic'} "
                f"but the simulated System is {'periodic' if periodic else 'non-periodic'}; "
                "labels would not match the recorded configurations — use the same boundary conditions"
            )
        teacher = openmm.Context(system, openmm.VerletIntegrator(0.001 * unit.picosecond), _platform(platform))

    configs: List[Configuration] = []
    try:
        for _ in tqdm(range(num_samples), desc="sampling", unit="sample", disable=not progress):
            simulation.step(interval)
            state = simulation.context.getState(
                getPositions=True, getEnergy=teacher is None, getForces=teacher is None
            )
            positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if periodic else None
            if teacher is not None:
                if periodic:
                    teacher.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
                teacher.setPositions(state.getPositions())
                state = teacher.getState(getEnergy=True, getForces=True)
            configs.append(
                Configuration(
                    types=types,
                    positions=np.array(positions, dtype=np.float64),
                    box=None if box is None else np.array(box, dtype=np.float64),
                    energy=state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                    forces=np.array(state.getForces(asNumpy=True).value_in_unit(_FORCE_UNIT), dtype=np.float64),
                    info={"source": "openmm", "step": int(simulation.currentStep)},
                )
            )
    finally:
        del teacher
    return configs


def configurations_from_trajectory(traj, *, types: Optional[Sequence[str]] = None, stride: int = 1) -> List[Configuration]:
    """Unlabelled Configurations from every ``stride``-th frame of an ``mdtraj.Trajectory``.

    Positions are ``traj.xyz`` (already nm); the box is ``traj.unitcell_vectors`` (rows a, b, c in
    nm) when the trajectory has a unit cell, else None. ``types`` default to each atom's element
    symbol, or its name where mdtraj has no element (element None or virtual site). ``info`` is
    ``{"source": "mdtraj", "frame": index in traj, "time_ps": traj.time}``.
    """
    stride = _positive_int(stride, "stride")
    if types is None:
        types = [
            atom.name if atom.element is None or atom.element.number == 0 else atom.element.symbol
            for atom in traj.topology.atoms
        ]
    types = _check_types(types, traj.n_atoms, "trajectory")
    vectors = traj.unitcell_vectors
    configs = []
    for frame in range(0, traj.n_frames, stride):
        try:
            configs.append(
                Configuration(
                    types=types,
                    positions=np.asarray(traj.xyz[frame], dtype=np.float64),
                    box=None if vectors is None else np.asarray(vectors[frame], dtype=np.float64),
                    info={"source": "mdtraj", "frame": frame, "time_ps": float(traj.time[frame])},
                )
            )
        except ValueError as exc:
            raise ValueError(f"trajectory frame {frame}: {exc}") from exc
    return configs
