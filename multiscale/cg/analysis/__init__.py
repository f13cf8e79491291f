"""Validation of a coarse-grained (CG) model against the mapped reference.

Plain functions over ``mdtraj.Trajectory`` objects that return numpy arrays or floats, in the
style of mdtraj. Both trajectories describe the **same bead topology**: the mapped atomistic
reference (bead positions M_x r of every reference frame) and the CG simulation.

Units (OpenMM's): positions and lengths in nm, angles and dihedrals in rad, masses in amu
(dalton, g/mol), densities in g/cm³ (converted from amu/nm³ with
:data:`AMU_PER_NM3_TO_G_PER_CM3`), g(r) and Jensen–Shannon divergences dimensionless.

Conventions
-----------
* **Bead types.** By default the type of a bead is its atom name in the topology (the project's
  convention for element-None topologies, e.g. ``CH2``/``CH3`` in :mod:`systems.polyethylene`).
  Every function that groups by type takes ``types=``: one string per bead, which overrides the
  atom names. The topology of :meth:`multiscale.cg.Mapping.cg_topology` names atoms after the
  *beads* (and residues after the first 3 characters of the types), so pass
  ``types=mapping.bead_types`` there.
* **Bonded terms** come from the topology bonds: bonds i–j, angles i–j–k (two bonds sharing j),
  proper dihedrals i–j–k–l (a path of three bonds). A term's type tuple is the tuple of its bead
  types, read in the direction that sorts first (``(A, B)`` and ``(B, A)`` are one bond type;
  angles and dihedrals are unchanged by reversing the order of their beads).
* **Chains** are the topology chains; each chain must be connected by its bonds (one molecule)
  for :func:`make_chains_whole`, :func:`radius_of_gyration_per_chain` and
  :func:`end_to_end_distance`; in a bilayer each chain is one lipid.
* **Bilayers** lie in the xy plane, normal along z (:mod:`~.bilayer`: mid-plane, heights, leaflets).
* **Periodic boundaries.** Bonded geometry and pair distances use the minimum image
  (``periodic=True`` in mdtraj). Chain properties use chains made whole by unwrapping along the
  bonds (:func:`make_chains_whole`), so wrapped coordinates (DCD frames written with
  ``enforcePeriodicBox``) give the same Rg and end-to-end distances as unwrapped ones.
* **Report keys.** In the JSON report, type tuples are joined with ``-`` (``"CH2-CH2-CH3"``).

Modules: one observable per module (:mod:`~.bonded`, :mod:`~.rdf`, :mod:`~.radius_of_gyration`,
:mod:`~.end_to_end`, :mod:`~.chain_pairs`, :mod:`~.density`, :mod:`~.diffusion`; for bilayers :mod:`~.area_per_lipid`,
:mod:`~.thickness`, :mod:`~.density_profile`, :mod:`~.order_parameter`, :mod:`~.lateral_rdf`,
:mod:`~.leaflet_exchange`, :mod:`~.lateral_diffusion`), shared helpers (:mod:`~.beads`, :mod:`~.chains`,
:mod:`~.divergence`, :mod:`~.statistics`, :mod:`~.local_density`: what a local-density spring acts on), and the report (:mod:`~.observable`: the contract;
:mod:`~.comparisons`: the standard observables; :mod:`~.membrane`: a bilayer's; :mod:`~.report`: :func:`validation_report`;
:mod:`~.plots`), and :mod:`~.pair_counts` (what the pair tables' iterative Boltzmann inversion compares).
"""

from multiscale.cg.analysis.area_per_lipid import area_per_lipid
from multiscale.cg.analysis.beads import bead_types, check_same_topology
from multiscale.cg.analysis.bilayer import heights, leaflet_of, lipid_head_beads, midplane
from multiscale.cg.analysis.bonded import (
    BONDED_KINDS,
    DEFAULT_BONDED_BINS,
    bonded_distributions,
    bonded_terms,
    bonded_values,
    compare_bonded,
)
from multiscale.cg.analysis.chain_pairs import chain_pair_values
from multiscale.cg.analysis.chains import make_chains_whole
from multiscale.cg.analysis.comparisons import (
    BondedComparison,
    ChainPairComparison,
    ChainSizeComparison,
    DensityComparison,
    RDFComparison,
    polymer_observables,
)
from multiscale.cg.analysis.density import AMU_PER_NM3_TO_G_PER_CM3, AMU_TO_G, AVOGADRO_CONSTANT_PER_MOL, NM3_TO_CM3, density
from multiscale.cg.analysis.density_profile import density_profile
from multiscale.cg.analysis.diffusion import chain_center_of_mass_msd, chain_diffusion_coefficient
from multiscale.cg.analysis.divergence import jensen_shannon
from multiscale.cg.analysis.end_to_end import end_to_end_distance
from multiscale.cg.analysis.lateral_diffusion import lateral_diffusion_coefficient, lipid_lateral_msd
from multiscale.cg.analysis.lateral_rdf import lateral_rdf
from multiscale.cg.analysis.leaflet_exchange import lipids_leaving_leaflet
from multiscale.cg.analysis.membrane import (
    AreaPerLipidComparison,
    DensityProfileComparison,
    LateralDiffusionComparison,
    LateralRDFComparison,
    StabilityComparison,
    TailOrderComparison,
    TailPhaseComparison,
    ThicknessComparison,
    membrane_observables,
)
from multiscale.cg.analysis.local_density import (
    local_densities,
    local_density_weight,
    local_density_weight_derivative,
    virial_neutral_shift,
    virial_neutral_shifts,
)
from multiscale.cg.analysis.observable import Comparison, Observable, ReportContext
from multiscale.cg.analysis.order_parameter import bond_order_parameter
from multiscale.cg.analysis.pair_counts import PairCounts, pair_counts
from multiscale.cg.analysis.radius_of_gyration import radius_of_gyration_per_chain
from multiscale.cg.analysis.rdf import compare_rdfs, rdf, rdf_difference, rdf_pairs
from multiscale.cg.analysis.report import validation_report
from multiscale.cg.analysis.statistics import block_sem, correlated_sem, statistical_inefficiency
from multiscale.cg.analysis.thickness import bilayer_thickness

__all__ = [
    "AVOGADRO_CONSTANT_PER_MOL",
    "AMU_TO_G",
    "NM3_TO_CM3",
    "AMU_PER_NM3_TO_G_PER_CM3",
    "BONDED_KINDS",
    "DEFAULT_BONDED_BINS",
    "BondedComparison",
    "ChainPairComparison",
    "ChainSizeComparison",
    "Comparison",
    "DensityComparison",
    "Observable",
    "RDFComparison",
    "ReportContext",
    "bead_types",
    "bonded_terms",
    "bonded_values",
    "chain_pair_values",
    "bonded_distributions",
    "jensen_shannon",
    "compare_bonded",
    "rdf_pairs",
    "rdf",
    "rdf_difference",
    "compare_rdfs",
    "check_same_topology",
    "make_chains_whole",
    "radius_of_gyration_per_chain",
    "end_to_end_distance",
    "chain_center_of_mass_msd",
    "chain_diffusion_coefficient",
    "density",
    "block_sem",
    "correlated_sem",
    "statistical_inefficiency",
    "polymer_observables",
    "validation_report",
    "midplane",
    "heights",
    "leaflet_of",
    "lipid_head_beads",
    "area_per_lipid",
    "bilayer_thickness",
    "density_profile",
    "bond_order_parameter",
    "local_densities",
    "local_density_weight",
    "local_density_weight_derivative",
    "virial_neutral_shift",
    "virial_neutral_shifts",
    "PairCounts",
    "pair_counts",
    "lateral_rdf",
    "lipids_leaving_leaflet",
    "lipid_lateral_msd",
    "lateral_diffusion_coefficient",
    "AreaPerLipidComparison",
    "ThicknessComparison",
    "DensityProfileComparison",
    "TailOrderComparison",
    "TailPhaseComparison",
    "LateralRDFComparison",
    "StabilityComparison",
    "LateralDiffusionComparison",
    "membrane_observables",
]
