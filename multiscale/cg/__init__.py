"""Coarse-graining by force matching: mappings (atoms → beads) and force maps.

Units: positions nm, forces kJ/mol/nm, masses amu.

* :mod:`multiscale.cg.mapping` — mapping definitions as data (residue templates, k monomers per
  bead, one bead per molecule; YAML section ``cg_mapping``), :func:`build_mapping` and the
  :class:`Mapping` (M_x, M_f, bead names/types/masses, bonds/angles/dihedrals, chains, CG topology).
* :mod:`multiscale.cg.forcemap` — plain-sum, constraint-aware and optimal (minimum-noise) force
  maps, and :func:`check_force_map` for M_f M_xᵀ = I.
"""

from multiscale.cg.forcemap import (
    ForceMapError,
    OptimalForceMap,
    basic_force_map,
    check_constraint_cancellation,
    check_force_map,
    constraint_aware_force_map,
    constraint_groups,
    crossing_constraints,
    default_force_map,
    optimal_force_map,
)
from multiscale.cg.mapping import (
    WEIGHT_MODES,
    BeadDefinition,
    Mapping,
    MappingDefinition,
    MappingError,
    MoleculeRule,
    PolymerRule,
    ResidueTemplate,
    build_mapping,
    constraints_of,
    masses_of,
)

__all__ = [
    "BeadDefinition",
    "ForceMapError",
    "Mapping",
    "MappingDefinition",
    "MappingError",
    "MoleculeRule",
    "OptimalForceMap",
    "PolymerRule",
    "ResidueTemplate",
    "WEIGHT_MODES",
    "basic_force_map",
    "build_mapping",
    "check_constraint_cancellation",
    "check_force_map",
    "constraint_aware_force_map",
    "constraint_groups",
    "crossing_constraints",
    "constraints_of",
    "default_force_map",
    "masses_of",
    "optimal_force_map",
]
