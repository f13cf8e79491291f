"""The molecules of an OpenMM System as plain data, and positions with each molecule whole.

Forces written in the particles' raw coordinates (the tabulated model's bending–torsion terms,
:func:`multiscale.openmm.tabulated.bending_torsion_expression`) see no periodic images: OpenMM
keeps a molecule whole once it is whole, so positions handed to a Context are made whole first.

Units: nm.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np
import openmm
from openmm import unit

from multiscale.cg.geometry import whole_molecules
from multiscale.openmm.tabulated import CHAIN_PAIR_FORCE, INTRAMOLECULAR_RAMP_FORCE


#: bonded forces whose pairs are not chemical bonds: they join beads of one chain that may be
#: far apart (the tabulated model's 1-5 and 1-6 chain-pair tables; the correction that takes the
#: intermolecular ramps off a chain's own pairs). A molecule is made whole along its bonds only:
#: the minimum image of a pair longer than half the cell is the wrong one, and a walk through it
#: would tear the chain in the raw coordinates that the torsion and chain-pair terms read.
NOT_BONDS = (CHAIN_PAIR_FORCE, INTRAMOLECULAR_RAMP_FORCE)


def bonded_pairs(system: openmm.System) -> np.ndarray:
    """(M, 2) particle pairs joined by the System's bonded forces: the bonds of harmonic and
    custom bond forces, and consecutive particles of each custom compound bond (angles and
    torsions join particles that bonds already join); the forces named in :data:`NOT_BONDS`
    are left out."""
    pairs = []
    for force in system.getForces():
        if force.getName() in NOT_BONDS:
            continue
        if isinstance(force, (openmm.HarmonicBondForce, openmm.CustomBondForce)):
            for k in range(force.getNumBonds()):
                i, j = force.getBondParameters(k)[:2]
                pairs.append((int(i), int(j)))
        elif isinstance(force, openmm.CustomCompoundBondForce):
            for k in range(force.getNumBonds()):
                particles = list(force.getBondParameters(k)[0])
                pairs.extend((int(a), int(b)) for a, b in zip(particles[:-1], particles[1:]))
    return np.asarray(pairs, dtype=int).reshape(-1, 2)


#: a custom compound bond expression that reads a particle's raw coordinate (x1, y2, z3, ...)
_RAW_COORDINATE = re.compile(r"\b[xyz][1-9][0-9]*\b")


def needs_whole_molecules(system: openmm.System) -> bool:
    """True when the System is periodic and a force reads raw particle coordinates (a
    CustomCompoundBondForce whose expression uses x1, y1, ...): then a molecule split across the
    cell's faces would give that force wrong energies."""
    if not system.usesPeriodicBoundaryConditions():
        return False
    return any(isinstance(f, openmm.CustomCompoundBondForce) and _RAW_COORDINATE.search(f.getEnergyFunction())
               for f in system.getForces())


def whole_positions(system: openmm.System, positions, box: Optional[np.ndarray]) -> np.ndarray:
    """``positions`` (N, 3) nm with the System's molecules made whole in ``box`` (3, 3) nm (the
    System's default box when None) where the System :func:`needs_whole_molecules`; otherwise
    unchanged."""
    x = np.asarray(positions, dtype=float)
    if not needs_whole_molecules(system):
        return x
    if box is None:
        box = np.array([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()])
    return whole_molecules(x, bonded_pairs(system), np.asarray(box, dtype=float))
