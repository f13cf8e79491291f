"""Coarse-grained mappings: which atoms make which bead, written as data, and the linear maps
they define.

Units: positions in nm, forces in kJ/mol/nm, masses in amu (g/mol).

A :class:`MappingDefinition` (loadable from YAML, section ``cg_mapping``) combines three forms;
each residue name may be claimed by one of them only:

* ``residues`` — per-residue templates (:class:`ResidueTemplate`): residue name → beads, each with
  a name, a type, its atom names and weights ("mass": centre of mass, "geometry": centre of
  geometry, or an explicit list summing to 1), plus bead–bead ``bonds`` inside the residue and
  ``bonds_to_next`` to the beads of the next residue of the chain (used when that residue is
  covalently bonded to this one)::

      cg_mapping:
        residues:
          PC:
            beads:
              - {name: NC3, type: Q0, atoms: [N31, C32, C33, C34, C35], weights: mass}
              - {name: PO4, type: Qa, atoms: [P31, O32, O33, O34, O35], weights: geometry}
            bonds: [[NC3, PO4]]
            bonds_to_next: [[PO4, GL1]]

* ``polymers`` — k monomers per bead (:class:`PolymerRule`): along every chain made of the rule's
  residues (one residue = one monomer), each run of ``monomers_per_bead`` consecutive residues is
  one bead, consecutive beads are bonded, end beads may get their own type.
* ``molecules`` — one bead per small molecule (:class:`MoleculeRule`): per residue, or per
  covalently connected group of the rule's residues, e.g. one bead per water.

:func:`build_mapping` applies a definition to an OpenMM (or mdtraj) Topology and returns a
:class:`Mapping` holding M_x, M_f, the bead names/types/masses, the bead bond graph and chains.

Periodic boundaries. A centre of mass is only meaningful for a whole bead. OpenMM keeps the
coordinates it integrates unwrapped: ``State.getPositions()`` (without ``enforcePeriodicBox=True``)
returns every molecule whole if it started whole, and so do Modeller/PDBFile positions of
standard inputs. Beads inside one molecule can therefore be mapped with ``map_positions(x)``.
Beads made of several molecules (e.g. four waters per bead), or wrapped input (DCD frames written
with ``enforcePeriodicBox``), need ``map_positions(x, box)``: each atom is first shifted to the
periodic image nearest the bead's reference atom (its first atom of its own). That is exact as
long as each bead's atoms lie within half the smallest box width of that atom, which holds for
any sensible bead, and needs no bond-graph traversal.

Lipids: :func:`lipid_mapping_definition` writes Martini-like templates (head, phosphate, glycerol
and tail beads) for the glycerophospholipids of OpenMM's bilayer patches (:mod:`~.lipids`).

Modules: :mod:`~.definition` (definitions as data), :mod:`~.bead_mapping` (the :class:`Mapping`),
:mod:`~.build` (:func:`build_mapping`) and :mod:`~.system_data` (numbers read off OpenMM objects).
"""

from multiscale.cg.mapping.bead_mapping import Mapping
from multiscale.cg.mapping.build import build_mapping
from multiscale.cg.mapping.definition import (
    WEIGHT_MODES,
    BeadDefinition,
    MappingDefinition,
    MappingError,
    MoleculeRule,
    PolymerRule,
    ResidueTemplate,
)
from multiscale.cg.mapping.lipids import LIPID_BEAD_TYPES, lipid_mapping_definition, lipid_template
from multiscale.cg.mapping.system_data import constraints_of, masses_of, plain

__all__ = [
    "BeadDefinition",
    "Mapping",
    "MappingDefinition",
    "MappingError",
    "MoleculeRule",
    "PolymerRule",
    "ResidueTemplate",
    "WEIGHT_MODES",
    "build_mapping",
    "LIPID_BEAD_TYPES",
    "lipid_mapping_definition",
    "lipid_template",
    "constraints_of",
    "masses_of",
    "plain",
]
