"""Labels from any OpenMM System: energy (kJ/mol) and forces (kJ/mol/nm), e.g. a classical teacher.

One of the two modules outside :mod:`multiscale.openmm` that import OpenMM: its very job is to
evaluate a user's OpenMM System (a Context on it) as a labeller, beside the GFN2-xTB one."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import openmm
from openmm import unit

from multiscale.cg.geometry import whole_molecules
from multiscale.data.configuration import Configuration
from multiscale.labels.result import LabelResult
from multiscale.openmm.molecules import bonded_pairs, needs_whole_molecules

#: Step size of the integrator the Context needs; it is never stepped.
_UNUSED_STEP_PS = 0.001


class OpenMMLabeller:
    """Evaluate an OpenMM System on configurations through one Context, created once and reused.

    Parameters
    ----------
    system: the System to evaluate; its particle order is the configurations' particle order.
    platform: OpenMM platform name ("Reference", "CPU", "CUDA", "OpenCL").
    properties: platform properties, e.g. ``{"Precision": "double"}``.

    For a periodic System every configuration needs a box, in OpenMM's reduced form (rows a, b,
    c with a along x and b in the xy plane); it is set on the Context per configuration. Virtual
    site positions are recomputed from their parents. No virial is computed.
    """

    def __init__(
        self,
        system: openmm.System,
        platform: str = "Reference",
        properties: Optional[Dict[str, str]] = None,
    ) -> None:
        if not isinstance(system, openmm.System):
            raise TypeError(f"system must be an openmm.System, got {type(system).__name__}")
        names = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
        if platform not in names:
            raise ValueError(f"OpenMM has no platform named {platform!r}; available: {names}")
        self.system = system
        self.platform = platform
        self._integrator = openmm.VerletIntegrator(_UNUSED_STEP_PS)
        self.context = openmm.Context(
            system, self._integrator, openmm.Platform.getPlatformByName(platform), dict(properties or {})
        )
        self._periodic = system.usesPeriodicBoundaryConditions()
        self._virtual_sites = any(system.isVirtualSite(i) for i in range(system.getNumParticles()))
        # a force in raw coordinates (the tabulated CG model's bending–torsion terms) needs each
        # molecule whole: its bonded pairs, found once
        self._whole_pairs = bonded_pairs(system) if needs_whole_molecules(system) else None

    @property
    def name(self) -> str:
        """Recorded as ``info["labeller"]`` on every labelled configuration."""
        return f"OpenMM/{self.platform}"

    def label(self, configs: Sequence[Configuration]) -> LabelResult:
        """Energy and forces for each configuration; non-finite results are reported by index.

        Raises ValueError up front for a particle-count mismatch, a missing box on a periodic
        System, a box on a non-periodic System, or a box not in OpenMM's reduced form.
        """
        configs = list(configs)
        for index, config in enumerate(configs):
            self._check(index, config)

        result = LabelResult()
        for index, config in enumerate(configs):
            try:
                energy, forces = self._evaluate(index, config)
            except openmm.OpenMMException as error:
                result.failures.append((index, f"OpenMMException: {error}"))
                continue
            if not (np.isfinite(energy) and np.all(np.isfinite(forces))):
                result.failures.append((index, f"OpenMM returned a non-finite energy ({energy}) or forces"))
                continue
            info = dict(config.info)
            info.update(label_index=index, labeller=self.name)
            result.configurations.append(config.with_labels(energy=energy, forces=forces, info=info))
            result.indices.append(index)
        return result

    def _check(self, index: int, config: Configuration) -> None:
        if not isinstance(config, Configuration):
            raise TypeError(f"configuration {index} is a {type(config).__name__}, expected a multiscale Configuration")
        expected = self.system.getNumParticles()
        if config.num_particles != expected:
            raise ValueError(
                f"configuration {index} has {config.num_particles} particles but the System has {expected}; "
                "configurations must list the System's particles in the System's order"
            )
        if self._periodic and config.box is None:
            raise ValueError(
                f"configuration {index} has no box but the System is periodic; give Configuration.box (nm)"
            )
        if not self._periodic and config.box is not None:
            raise ValueError(
                f"configuration {index} has a periodic box but the System is not periodic; "
                "drop the box (box=None) or label with a periodic System"
            )
        if config.box is not None and np.any(config.box[np.triu_indices(3, 1)] != 0.0):
            raise ValueError(
                f"configuration {index}: box {config.box.tolist()} is not in OpenMM's reduced form; "
                "rotate the cell so that a lies along x and b in the xy plane (box[0,1] = box[0,2] = box[1,2] = 0)"
            )

    def _evaluate(self, index: int, config: Configuration):
        if config.box is not None:
            try:
                self.context.setPeriodicBoxVectors(*(openmm.Vec3(*map(float, row)) for row in config.box))
            except openmm.OpenMMException as error:
                raise ValueError(f"configuration {index}: OpenMM refused the box {config.box.tolist()}: {error}") from None
        return self.energy_forces(config.positions)

    def energy_forces(self, positions, box=None):
        """(energy kJ/mol, forces (N, 3) kJ/mol/nm) at ``positions`` (N, 3) nm, with ``box`` (3, 3)
        nm set first when given; no checks (:meth:`label` checks whole configurations)."""
        if box is not None:
            self.context.setPeriodicBoxVectors(*(openmm.Vec3(*map(float, row)) for row in np.asarray(box)))
        positions = np.asarray(positions, dtype=np.float64)
        if self._whole_pairs is not None:  # forces in raw coordinates: molecules made whole first
            current = self.context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            positions = whole_molecules(positions, self._whole_pairs, np.asarray(current))
        self.context.setPositions(positions)
        if self._virtual_sites:
            self.context.computeVirtualSites()
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        return float(energy), forces
