"""OpenMM Systems around an ML potential, in the style of ``ForceField.createSystem``: thin callers of
:func:`multiscale.openmm.assembly.assemble_system`, plus copying a System force by force."""

from __future__ import annotations

from typing import List, Optional, Sequence

import openmm
from openmm import app, unit

from multiscale.models.potential import EquivariantPotential
from multiscale.openmm.assembly import CenterOfMassMotionRemover, MLTerm, assemble_system
from multiscale.openmm.bridge import is_ml_force


def topology_types(topology: app.Topology) -> List[str]:
    """One type name per atom: the element symbol, or the atom name where there is no element
    (coarse-grained beads)."""
    return [atom.element.symbol if atom.element is not None else atom.name for atom in topology.atoms()]


def create_system(
    topology: app.Topology,
    model: EquivariantPotential,
    *,
    particle_types: Optional[Sequence[str]] = None,
    periodic: Optional[bool] = None,
    backend: str = "torchforce",
    remove_cm_motion: bool = True,
) -> openmm.System:
    """An OpenMM System whose only potential is ``model``; masses come from the Topology.

    ``periodic=None`` follows the Topology (periodic iff it has box vectors). ``periodic=True``
    on a Topology without a box is refused, since there would be no cell to wrap into.
    """
    box = topology.getPeriodicBoxVectors()
    if periodic is None:
        periodic = box is not None
    if periodic and box is None:
        raise ValueError(
            "periodic=True but the Topology has no periodic box; call "
            "topology.setPeriodicBoxVectors(vectors_in_nm) first, or pass periodic=False for open boundaries"
        )
    types = list(particle_types) if particle_types is not None else topology_types(topology)
    if len(types) != topology.getNumAtoms():
        raise ValueError(
            f"particle-count mismatch: {len(types)} particle_types for a Topology of {topology.getNumAtoms()} atoms"
        )
    masses = [atom.element.mass.value_in_unit(unit.dalton) if atom.element is not None else 12.0 for atom in topology.atoms()]
    box_nm = [[float(c) for c in v] for v in box.value_in_unit(unit.nanometer)] if periodic else None
    # the box is taken from the Topology above (checked to exist), so an exact 2 nm cube is real
    terms = [MLTerm(model, types, bool(periodic), backend=backend)]
    if remove_cm_motion:
        terms.append(CenterOfMassMotionRemover())
    system = assemble_system(masses, box_nm=box_nm, terms=terms, allow_zero_mass=True)
    return system


def _is_ml_force(force: openmm.Force) -> bool:
    # Forces the bridge made carry its tag. Any other TorchForce or PythonForce cannot go through
    # the serializer either: read back from a System (getForce/getForces) a plugin force is a plain
    # openmm.Force in Python, recognised by being of no openmm class at all.
    if is_ml_force(force):
        return True
    name = type(force).__name__
    if name in ("TorchForce", "PythonForce"):
        return True
    return name == "Force" and _unknown_to_openmm(force)


def _unknown_to_openmm(force: openmm.Force) -> bool:
    """True for a Force that no openmm Python class wraps (a plugin force such as TorchForce)."""
    for cls in (getattr(openmm, n) for n in dir(openmm) if n.endswith("Force") and n != "Force"):
        if isinstance(cls, type) and hasattr(cls, "isinstance") and cls.isinstance(force):
            return False
    return True


def clone_system(system: openmm.System, *, keep=None) -> openmm.System:
    """A copy of ``system`` (particles, box, constraints, virtual sites, forces), force by force.

    ``keep(force) -> bool`` selects the forces to copy (default: all). ML forces (TorchForce,
    PythonForce) cannot go through OpenMM's XML serializer (cloning a whole System that holds a
    TorchForce crashes the process), so they must be left out by ``keep``; a clear error says so.
    """
    copy = openmm.System()
    for i in range(system.getNumParticles()):
        copy.addParticle(system.getParticleMass(i))
    copy.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for i in range(system.getNumConstraints()):
        copy.addConstraint(*system.getConstraintParameters(i))
    for i in range(system.getNumParticles()):
        if system.isVirtualSite(i):
            copy.setVirtualSite(i, openmm.XmlSerializer.clone(system.getVirtualSite(i)))
    for force in system.getForces():
        if keep is not None and not keep(force):
            continue
        if _is_ml_force(force):
            raise ValueError(
                f"cannot copy the ML force {force.getName()!r} through OpenMM's serializer; "
                "leave it out (keep=...) and add a fresh one with multiscale.openmm.torch_force"
            )
        copy.addForce(openmm.XmlSerializer.clone(force))
    return copy


def create_delta_system(
    base_system: openmm.System,
    model: EquivariantPotential,
    particle_types: Sequence[str],
    *,
    periodic: Optional[bool] = None,
    particles: Optional[Sequence[int]] = None,
    backend: str = "torchforce",
) -> openmm.System:
    """Δ-learning deployment: a copy of ``base_system`` plus the ML force (trained on
    E_high − E_base, see :func:`multiscale.training.delta.delta_configurations`).

    ``particle_types`` has one entry per particle the ML force acts on: all particles, or those in
    ``particles``. ``periodic=None`` follows the base System.
    """
    if periodic is None:
        periodic = base_system.usesPeriodicBoundaryConditions()
    # the box is the base System's, which its author set: an unchanged 2 nm default is refused
    term = MLTerm(model, list(particle_types), bool(periodic), particles, backend=backend, allow_default_box=False)
    return assemble_system(base=base_system, terms=[term])


def replace_ml_forces(
    system: openmm.System,
    model,
    particle_types: Sequence[str],
    *,
    periodic: Optional[bool] = None,
    backend: str = "torchforce",
) -> openmm.System:
    """A copy of ``system`` whose ML forces (TorchForce, PythonForce) are replaced by one force of
    ``model`` on all particles: e.g. the same System with a float64 copy of its float32 model.
    ``periodic=None`` follows the System."""
    if periodic is None:
        periodic = system.usesPeriodicBoundaryConditions()
    base = clone_system(system, keep=lambda force: not _is_ml_force(force))
    # the box is the System's own, which the caller set
    base.addForce(torch_force_for(model, particle_types, bool(periodic), backend, base))
    return base


def torch_force_for(model, particle_types: Sequence[str], periodic: bool, backend: str, system: openmm.System) -> openmm.Force:
    """The ML force of ``model`` on every particle of ``system`` (an ensemble gets its mean force)."""
    if type(model).__name__ == "EnsemblePotential":
        from multiscale.openmm.ensemble import ensemble_force

        return ensemble_force(model, list(particle_types), periodic, backend=backend, system=system, allow_default_box=True)
    from multiscale.openmm.bridge import torch_force

    return torch_force(model, list(particle_types), periodic, backend=backend, system=system, allow_default_box=True)
