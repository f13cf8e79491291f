"""Prior potentials for coarse-grained (CG) models, fitted by Boltzmann inversion with Jacobians.

A CG network learns the *difference* between the mapped reference forces and a physical prior.
The prior keeps bonded beads at sensible distances and angles, and keeps non-bonded beads from
overlapping in regions the training data never visited (where the network is unconstrained).

Inputs are plain arrays, so this module does not depend on the mapping code:

- ``positions``: CG bead positions, shape (T, n_beads, 3) (or (n_beads, 3) for one frame), nm.
- ``boxes``: periodic cells, shape (T, 3, 3) or (3, 3), rows are the cell vectors a, b, c in nm
  (OpenMM's convention, OpenMM's reduced triclinic form); ``None`` for open boundaries.
- ``bonds`` (i, j), ``angles`` (i, j, k) with j the vertex, ``dihedrals`` (i, j, k, l): bead indices.
- ``bead_types``: one type name (str) per bead.
- ``temperature_K``: temperature of the reference ensemble in K.

Units everywhere: nm, rad, kJ/mol, K. Force constants: kJ mol⁻¹ nm⁻² (bonds), kJ mol⁻¹ rad⁻²
(angles). Every harmonic prior uses OpenMM's convention U = ½ k (x − x₀)².

Fitting rules (one prior per canonical bead-type tuple; bonds of types (A, B) and (B, A) share one)
-------------------------------------------------------------------------------------------------
**Bonds and angles: weighted least-squares parabola on the Jacobian-corrected free energy.**
Samples are histogrammed (``bins`` bins between the ``tail_quantile`` and 1 − ``tail_quantile``
quantiles; for angles that reach within 0.05 rad of π the range is closed at π, and so it is for
angles reaching within 0.2 rad of π when the few samples above their maximum are explained by the
sin θ Jacobian alone, see ``expected_angles_beyond_max``), and so it is for an angle whose well is
closed below but still open at an upper edge within 0.2 rad of π). The free energy
of bin b is ``F_b = −kBT ln[n_b / (N w_b J̄_b)]`` with the bin-averaged Jacobian J̄_b of
J(r) = r² (bonds) or J(θ) = sin θ (angles), so ``F`` is the Boltzmann inversion
U(r) = −kBT ln[P(r)/r²] and U(θ) = −kBT ln[P(θ)/sin θ] (up to a constant). Starting at the lowest
bin, the *well* is the contiguous run of occupied bins with F ≤ F_min + ``fit_window_kT``·kBT.
A parabola a x² + b x + c is fitted to F over the well with weights n_b (the inverse variance of
ln n_b for Poisson counts); k = 2a and x₀ is its vertex. This fits the well itself (not the tails
of a possibly anharmonic distribution), and it is robust for angles near 180°, where the
reweighting by 1/sin θ that a moment-based fit would need diverges.

The fit is refused (ValueError naming the type tuple and the offending number) when: any sample is
NaN/inf; fewer than ``min_samples`` samples; all samples identical; the well is open (F stays within
the window up to an edge of the sampled range: a flat, repulsive or unbound distribution; the edge at
θ = π is a geometric bound and counts as closed for angles); the well spans fewer than
``min_well_bins`` bins; the fitted k is not positive or is below ``min_bond_k`` / ``min_angle_k``;
the vertex lies outside the well. For an angle whose free energy falls all the way to θ = π (vertex
beyond π, or no minimum inside [0, π]), the parabola is refitted with θ0 = π fixed: the
least-squares fit constrained to the domain.

**Bonds with** ``bond_fit="moments"``: no histogram. For U = ½k(r − r0)², P(r)/r² is a Gaussian of
mean r0 and variance kBT/k, so every sample is weighted by 1/r² and r0 = ⟨r⟩_w,
k = kBT/⟨(r − r0)²⟩_w. This cannot be ill-conditioned, so it suits the broad, skewed bonds of
several monomers per bead sampled briefly, where the well fit can be refused from one run to the next;
the ``min_bond_k`` floor still refuses unbound distributions.

**Dihedrals (optional): Fourier series of PeriodicTorsionForce terms.** No Jacobian (the dihedral
measure is uniform). The histogram on [−π, π) with ``dihedral_bins`` bins gives
F_b = −kBT ln[n_b/(N w)]; a weighted (n_b) linear least-squares fit of
c + Σₙ (aₙ cos nφ + bₙ sin nφ) over the occupied bins, n in ``dihedral_periodicities``, is rewritten
as Σₙ kₙ [1 + cos(nφ − δₙ)] with kₙ = hypot(aₙ, bₙ) ≥ 0, δₙ = atan2(bₙ, aₙ) (the constant is
dropped). Dihedral angles follow the IUPAC convention used by OpenMM (cis = 0, trans = ±π).

**Repulsive non-bonded prior.** Pairs of beads not excluded by ``exclusion`` ("1-2", "1-3" or
"1-4": beads separated by at most 1, 2 or 3 bonds are excluded) interact through a purely
repulsive pair potential (energy ≥ 0, monotone decreasing, force never attractive), so all
attraction is left to the network:

- ``"r12"``: U(r) = ε[(σ/r)¹² − (σ/r_c)¹²] for r < r_c, 0 beyond (shifted to vanish at the cutoff);
- ``"wca"``: U(r) = 4ε[(σ/r)¹² − (σ/r)⁶] + ε for r < 2^(1/6) σ, 0 beyond.

ε = ``repulsive_epsilon_kT``·kBT. σ rule: for every frame and every bead i of type A, take the
distance to its nearest non-excluded bead of type B within ``nonbonded_cutoff_nm`` (minimum
image); pool these nearest-neighbour distances over frames and beads (both directions, A→B and
B→A); σ_AB is their ``repulsive_quantile`` quantile (numpy's default linear interpolation).
Nearest-neighbour distances, unlike all pair distances, do not depend on the box size or the
cutoff. (Computed from all non-excluded pairs for small systems, with the cell list of multiscale.neighbors for large
ones; :func:`contact_distances`.) In OpenMM the "r12" shift uses the cutoff given to
:func:`multiscale.openmm.priors.priors_to_openmm`. At r = σ the prior is about ε (exactly ε for "wca", ε minus a tiny shift for "r12"), so it
is ≲ kBT over the sampled contacts and grows steeply where the data have no samples. Refused when a
type pair that occurs among non-excluded pairs has fewer than ``min_contacts`` contacts, or when
σ < ``min_sigma_nm`` (overlapping beads point to a mapping error).

Modules (one concept each): :mod:`~multiscale.cg.priors.config` (options),
:mod:`~multiscale.cg.priors.records` (fitted priors), :mod:`~multiscale.cg.priors.contacts` (pairs
the repulsion acts on, contact distances), :mod:`~multiscale.cg.priors.samples` (samples per type),
:mod:`~multiscale.cg.priors.fits` (Boltzmann inversion and fits) and
:mod:`~multiscale.cg.priors.plots` (diagnostics). The OpenMM forces are built from the records by
:mod:`multiscale.openmm.priors`; geometry (minimum image, bonds, angles, dihedrals) lives in
:mod:`multiscale.cg.geometry` and the bead graph in :mod:`multiscale.cg.topology`.
"""

# geometry names stay importable from here, as before the split
from multiscale.cg.geometry import bond_angles, bond_lengths, dihedral_angles, minimum_image, pair_distances
from multiscale.cg.priors.config import BOND_FITS, PriorConfig
from multiscale.cg.priors.contacts import contact_distances, excluded_pairs, nonbonded_pairs, nonbonded_type_pairs
from multiscale.cg.priors.fits import (
    Inversion,
    boltzmann_inversion,
    expected_angles_beyond_max,
    fit_bond_moments,
    fit_harmonic,
    fit_priors,
    fit_priors_from_samples,
    fit_torsion,
    repulsive_sigma,
)
from multiscale.cg.priors.plots import plot_priors
from multiscale.cg.priors.records import (
    AnglePrior,
    BondPrior,
    DihedralPrior,
    Priors,
    RepulsivePrior,
    TypeKey,
    canonical_key,
)
from multiscale.cg.priors.samples import PriorSamples, collect_samples

__all__ = [
    "AnglePrior",
    "BondPrior",
    "DihedralPrior",
    "Inversion",
    "BOND_FITS",
    "PriorConfig",
    "PriorSamples",
    "Priors",
    "RepulsivePrior",
    "TypeKey",
    "boltzmann_inversion",
    "bond_angles",
    "bond_lengths",
    "canonical_key",
    "collect_samples",
    "contact_distances",
    "dihedral_angles",
    "excluded_pairs",
    "expected_angles_beyond_max",
    "fit_bond_moments",
    "fit_harmonic",
    "fit_priors",
    "fit_priors_from_samples",
    "fit_torsion",
    "minimum_image",
    "nonbonded_pairs",
    "nonbonded_type_pairs",
    "pair_distances",
    "plot_priors",
    "repulsive_sigma",
]
