"""Plain numbers read off the OpenMM objects a mapping is built from (masses in amu, constrained
pairs, the topology), converted with mdtraj's unit module: this layer reads OpenMM objects
handed to it but imports no OpenMM."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np



def constraints_of(system) -> List[Tuple[int, int]]:
    """The constrained atom pairs (i, j) of an ``openmm.System`` (rigid water, HBonds, ...)."""
    return [tuple(int(x) for x in system.getConstraintParameters(k)[:2]) for k in range(system.getNumConstraints())]


def plain(quantity, unit_out: str) -> np.ndarray:
    """Plain float64 numbers in ``unit_out`` ("dalton", "nanometers") of an ``openmm.unit``
    Quantity as OpenMM returns them, converted by mdtraj's unit module: this layer reads OpenMM
    objects handed to it but imports no OpenMM. Plain numbers pass through (already in unit_out)."""
    if hasattr(quantity, "unit") and hasattr(quantity, "value_in_unit"):
        from mdtraj.utils import in_units_of

        values = np.asarray(quantity.value_in_unit(quantity.unit), dtype=np.float64)
        return np.asarray(in_units_of(values, quantity.unit.get_name(), unit_out), dtype=np.float64)
    return np.asarray(quantity, dtype=np.float64)


def masses_of(system) -> np.ndarray:
    """Particle masses of an ``openmm.System`` in amu, as an (N,) float64 array (0 for virtual sites)."""
    return np.array([float(plain(system.getParticleMass(k), "dalton")) for k in range(system.getNumParticles())])


def _as_openmm_topology(topology):
    if hasattr(topology, "to_openmm"):  # mdtraj.Topology
        return topology.to_openmm()
    if all(hasattr(topology, name) for name in ("atoms", "residues", "chains", "bonds", "getPeriodicBoxVectors")):
        return topology  # an openmm.app.Topology (duck-typed: read, not built, here)
    raise TypeError(f"expected an openmm.app.Topology or mdtraj.Topology, got {type(topology).__name__}")


def _residue_label(res) -> str:
    return f"residue {res.name} {res.id} (index {res.index}, chain {res.chain.id})"


def _atom_label(atom) -> str:
    return f"atom {atom.index} '{atom.name}' of residue {atom.residue.name} {atom.residue.id} (chain {atom.residue.chain.id})"

