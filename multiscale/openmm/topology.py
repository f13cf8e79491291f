"""OpenMM Topologies built from plain CG data: the bead topology of a
:class:`~multiscale.cg.mapping.Mapping` (names, types, chains, bonds, box)."""

from __future__ import annotations

import warnings

from openmm import app

#: Residue names that OpenMM's PDBFile treats as standard (no CONECT records for their bonds).
_PDB_STANDARD = set(getattr(app.PDBFile, "_standardResidues", [
    "ALA", "ASN", "CYS", "GLU", "HIS", "LEU", "MET", "PRO", "THR", "TYR", "ARG", "ASP", "GLN", "GLY", "ILE", "LYS",
    "PHE", "SER", "TRP", "VAL", "A", "G", "C", "U", "I", "DA", "DG", "DC", "DT", "DI", "HOH"]))


def _pdb_residue_name(bead_type: str) -> str:
    """Residue name for a bead type in the CG topology: the first 3 characters (PDB's limit); a
    name that PDB treats as standard (ALA, HOH, A, C, DA, ...) gets a '_' so that CONECT records
    are written for its bonds and readers do not apply residue templates."""
    name = bead_type[:3]
    if name in _PDB_STANDARD:
        name = name[:2] + "_" if len(name) == 3 else name + "_"
    return name


def cg_topology(mapping) -> app.Topology:
    """An OpenMM Topology of the beads: one chain per molecule (``chains``); one residue per
    molecule named ``mapping.molecule_names[k]`` when the mapping has them (a lipid), else one
    residue per bead named after its type (first 3 characters, PDB's limit; PDB-standard names such as
    'C', 'A' or 'HOH' get a '_' appended or substituted so CONECT records are written), one
    atom per bead named after the bead (first 4 characters), element None, bonds = bead bonds,
    periodic box of the atomistic topology. Atom k is bead k."""
    top = app.Topology()
    atoms = []
    short = {t: _pdb_residue_name(t) for t in mapping.unique_types}
    clashes = sorted(t for t in short if list(short.values()).count(short[t]) > 1)
    if clashes:
        warnings.warn(
            f"bead types {clashes} get the same residue name in the CG topology (first 3 characters); it cannot "
            "tell them apart (Mapping.bead_types still does). Use types of at most 3 characters", stacklevel=2,
        )
    names = getattr(mapping, "molecule_names", None)
    for k, chain_beads in enumerate(mapping.chains):
        chain = top.addChain()
        if names is not None:
            residue = top.addResidue(names[k], chain, id=str(k + 1))
            atoms += [top.addAtom(mapping.bead_names[bead][:4], None, residue) for bead in chain_beads]
            continue
        for pos, bead in enumerate(chain_beads):
            residue = top.addResidue(short[mapping.bead_types[bead]], chain, id=str(pos + 1))
            atoms.append(top.addAtom(mapping.bead_names[bead][:4], None, residue))
    for i, j in mapping.bead_bonds:
        top.addBond(atoms[i], atoms[j])
    if mapping.box is not None:
        top.setPeriodicBoxVectors(mapping.box)
    return top
