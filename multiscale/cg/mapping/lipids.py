"""Martini-like lipid mappings as data: residue templates written from a phospholipid's atom names.

A glycerophospholipid with CHARMM atom names (OpenMM's bilayer patches: POPC, DPPC, DMPC, DLPC,
DOPC; POPE, DLPE) maps to

==========  ======  =========================================================================
bead        type    heavy atoms (each hydrogen joins the bead of the heavy atom it is bonded to)
==========  ======  =========================================================================
NC3 / NH3   NC      the head group's amine: N and the carbons bonded to it, except C11's chain
                    partner (choline C12–C15, or ethanolamine C12)
PO4         PO      P, O11–O14 and C11
GL1         GL      C1, C2 and the sn-2 ester (O21, C21, O22)
GL2         GL      C3 and the sn-1 ester (O31, C31, O32)
C2A, C2B..  C, CT    the sn-2 tail carbons C22, C23, … in runs of about ``tail_carbons_per_bead``
                    (the remainder in the last one); the chain-end bead has its own type CT
C3A, C3B..  C, CT    the sn-1 tail carbons C32, C33, …
==========  ======  =========================================================================

(Martini 2 maps POPC to 13 beads this way, about 4 heavy atoms per bead.) The chain ends get
their own type so that every bond type joins beads of one size pair: with one tail type, DMPC's
C–C bonds would mix 5–4 and 4–4 carbon beads, two bond-length distributions under one table. Bonds: NC3–PO4,
PO4–GL1, GL1–GL2, GL1–C2A, GL2–C3A and along each tail. Hydrogens never leave their heavy
atom's bead, so bonds constrained to hydrogen (HBonds) cross no bead boundary and the summed force
map stays exact (:func:`~multiscale.cg.mapping.build_mapping` checks this with the constraints).

Tail carbons are numbered C{chain}{k}; PDB files that hold 4-character names write C210 as
"0C21", C214 as "4C21", and both forms are read. Water is not mapped (solvent-free): build with
``allow_unmapped=True``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from multiscale.cg.mapping.definition import MappingDefinition, MappingError, ResidueTemplate

#: bead types: head amine, phosphate, glycerol/ester, tail
HEAD_TYPE, PHOSPHATE_TYPE, GLYCEROL_TYPE, TAIL_TYPE, TAIL_END_TYPE = "NC", "PO", "GL", "C", "CT"
LIPID_BEAD_TYPES = (HEAD_TYPE, PHOSPHATE_TYPE, GLYCEROL_TYPE, TAIL_TYPE, TAIL_END_TYPE)

_PLAIN = re.compile(r"^C([23])(\d+)$")
_ROTATED = re.compile(r"^(\d)C([23])1$")  # PDB's 4-character form of C{chain}1{d}

WATER_NAMES = ("HOH", "WAT", "TIP3", "SOL")


def _tail_carbon(name: str):
    """(chain, position) of a tail carbon name, or None."""
    match = _PLAIN.match(name)
    if match:
        return int(match.group(1)), int(match.group(2))
    match = _ROTATED.match(name)
    if match:
        return int(match.group(2)), 10 + int(match.group(1))
    return None


def _split(run: Sequence[str], per_bead: int) -> List[List[str]]:
    """Consecutive runs of ``per_bead`` names, the remainder (fewer or more) in the last one, so
    that every bead but the chain end has the same size."""
    count = max(1, int(round(len(run) / per_bead)))
    sizes = [per_bead] * (count - 1) + [len(run) - per_bead * (count - 1)]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return [list(run[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def lipid_template(residue, tail_carbons_per_bead: int = 4) -> ResidueTemplate:
    """The residue template of one lipid residue (an OpenMM ``Residue`` with bonds)."""
    if tail_carbons_per_bead < 2:
        raise ValueError(f"tail_carbons_per_bead must be >= 2, got {tail_carbons_per_bead}")
    atoms = list(residue.atoms())
    names = {a.name for a in atoms}
    where = f"lipid residue {residue.name}"
    required = {"N", "P", "O11", "O12", "O13", "O14", "C11", "C1", "C2", "C3", "O21", "C21", "O22", "O31", "C31", "O32"}
    missing = sorted(required - names)
    if missing:
        raise MappingError(f"{where} lacks atom(s) {missing}; the lipid mapping reads CHARMM glycerophospholipid "
                           "names (as in OpenMM's bilayer patches); write a residue template for this lipid instead")
    heavy = [a for a in atoms if a.element is None or a.element.symbol != "H"]
    neighbours: Dict[str, List[str]] = {a.name: [] for a in atoms}
    for bond in residue.bonds():
        a, b = bond[0], bond[1]
        if a.residue is residue and b.residue is residue:
            neighbours[a.name].append(b.name)
            neighbours[b.name].append(a.name)
    bead_of: Dict[str, str] = {}
    head = ["N"] + [n for n in neighbours["N"] if n != "C11" and n.startswith("C")]
    # ethanolamine: N–C12–C11; choline: N bonded to C12–C15. The amine bead is N and its carbons
    head_name = "NC3" if len(head) >= 4 else "NH3"
    beads: List[Tuple[str, str, List[str]]] = [(head_name, HEAD_TYPE, head),
                                               ("PO4", PHOSPHATE_TYPE, ["P", "O11", "O12", "O13", "O14", "C11"]),
                                               ("GL1", GLYCEROL_TYPE, ["C1", "C2", "O21", "C21", "O22"]),
                                               ("GL2", GLYCEROL_TYPE, ["C3", "O31", "C31", "O32"])]
    tails: Dict[int, List[Tuple[int, str]]] = {2: [], 3: []}
    for atom in heavy:
        parsed = _tail_carbon(atom.name)
        if parsed is not None and parsed[1] >= 2 and atom.name not in ("C21", "C31"):
            tails[parsed[0]].append((parsed[1], atom.name))
    bonds = [[head_name, "PO4"], ["PO4", "GL1"], ["GL1", "GL2"]]
    for chain, anchor in ((2, "GL1"), (3, "GL2")):
        run = [name for _, name in sorted(tails[chain])]
        if len(run) < 2:
            raise MappingError(f"{where}: the sn-{1 if chain == 3 else 2} tail (carbons C{chain}2, C{chain}3, ...) was not found")
        previous = anchor
        parts = _split(run, tail_carbons_per_bead)
        for k, part in enumerate(parts):
            name = f"C{chain}{chr(ord('A') + k)}"
            beads.append((name, TAIL_END_TYPE if k == len(parts) - 1 else TAIL_TYPE, part))
            bonds.append([previous, name])
            previous = name
    for name, _, members in beads:
        for member in members:
            if member in bead_of:
                raise MappingError(f"{where}: atom {member} falls in beads {bead_of[member]} and {name}")
            bead_of[member] = name
    unassigned = [a.name for a in heavy if a.name not in bead_of]
    if unassigned:
        raise MappingError(f"{where}: heavy atom(s) {unassigned} are in no bead of the lipid mapping; write a residue "
                           "template for this lipid instead")
    members: Dict[str, List[str]] = {name: list(m) for name, _, m in beads}
    for atom in atoms:
        if atom.name in bead_of:
            continue
        partners = [n for n in neighbours[atom.name] if n in bead_of]
        if len(partners) != 1:
            raise MappingError(f"{where}: hydrogen {atom.name} is bonded to {len(partners)} heavy atoms; the template needs "
                               "the residue's bonds (load the structure with its CONECT records or a force field template)")
        members[bead_of[partners[0]]].append(atom.name)
    return ResidueTemplate(beads=[{"name": name, "type": kind, "atoms": members[name], "weights": "mass"}
                                  for name, kind, _ in beads], bonds=bonds)


def lipid_mapping_definition(topology, tail_carbons_per_bead: int = 4) -> MappingDefinition:
    """A :class:`MappingDefinition` with one :func:`lipid_template` per lipid residue name of
    ``topology`` (an OpenMM Topology); water is left out (solvent-free)."""
    templates: Dict[str, ResidueTemplate] = {}
    for residue in topology.residues():
        if residue.name in WATER_NAMES or residue.name in templates:
            continue
        templates[residue.name] = lipid_template(residue, tail_carbons_per_bead)
    if not templates:
        raise MappingError("the topology holds no lipid residues")
    return MappingDefinition(residues=templates)
