"""Priors by Boltzmann inversion (multiscale.cg.priors).

References not written by the project: exact Boltzmann distributions sampled by rejection (bond with
the r² Jacobian, angle with sin θ, torsion without), analytic biases of a fit that omits the Jacobian,
OpenMM's own energies (Reference platform, double precision), the IUPAC construction of a dihedral,
and brute-force minimum images over ±6 cells. Units: nm, rad, kJ/mol, K.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import openmm
import pytest

from multiscale.cg.priors import (
    AnglePrior,
    BondPrior,
    DihedralPrior,
    PriorConfig,
    Priors,
    PriorSamples,
    RepulsivePrior,
    bond_angles,
    bond_lengths,
    collect_samples,
    contact_distances,
    dihedral_angles,
    excluded_pairs,
    fit_bond_moments,
    fit_harmonic,
    fit_priors,
    fit_priors_from_samples,
    fit_torsion,
    nonbonded_pairs,
    plot_priors,
    repulsive_sigma,
)
from multiscale.openmm.priors import priors_to_openmm
from multiscale.units import kT

TEMPERATURE = 300.0
KBT = kT(TEMPERATURE)


def rejection_sample(density, lo, hi, n, seed):
    """n exact samples of the unnormalised 1-D ``density`` on [lo, hi] by uniform rejection."""
    rng = np.random.default_rng(seed)
    bound = 1.02 * density(np.linspace(lo, hi, 20001)).max()
    out, have = [], 0
    while have < n:
        x = rng.uniform(lo, hi, 4 * n)
        keep = x[rng.uniform(0.0, bound, x.size) < density(x)]
        out.append(keep)
        have += keep.size
    return np.concatenate(out)[:n]


def bond_density(k, r0):
    return lambda r: r**2 * np.exp(-0.5 * k * (r - r0) ** 2 / KBT)


def angle_density(k, theta0):
    return lambda t: np.sin(t) * np.exp(-0.5 * k * (t - theta0) ** 2 / KBT)


def parabola_fit(samples, jacobian, bins=100, window_kT=3.0):
    """Test-side fit: a parabola on −kBT ln[n_b / J(center)] within window_kT of the lowest bin."""
    counts, edges = np.histogram(samples, bins=bins)
    centers = 0.5 * (edges[1:] + edges[:-1])
    ok = counts > 0
    free = -KBT * np.log(counts[ok] / jacobian(centers[ok]))
    x = centers[ok]
    sel = free - free.min() <= window_kT * KBT
    a, b, _ = np.polyfit(x[sel], free[sel], 2, w=np.sqrt(counts[ok][sel]))
    return 2.0 * a, -b / (2.0 * a)


# ---------------------------------------------------------------------------------------------
# (1) bonds with the r² Jacobian
# ---------------------------------------------------------------------------------------------


def test_bond_fit_recovers_k_r0_and_naive_fit_is_biased():
    k, r0 = 500.0, 0.30  # width sqrt(kBT/k) = 0.071 nm: the r² Jacobian matters
    width = math.sqrt(KBT / k)
    r = rejection_sample(bond_density(k, r0), r0 - 8 * width, r0 + 8 * width, 60000, seed=1)

    k_fit, r0_fit = fit_harmonic(r, "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    assert k_fit == pytest.approx(k, rel=0.03)
    assert r0_fit == pytest.approx(r0, rel=0.01)

    # Without the Jacobian the minimum sits where k(r − r0) = 2kBT/r and the curvature is k + 2kBT/r².
    r_naive = 0.5 * (r0 + math.sqrt(r0**2 + 8 * KBT / k))
    k_naive_expected = k + 2 * KBT / r_naive**2
    k_naive, r0_naive = parabola_fit(r, lambda x: np.ones_like(x))
    assert r0_naive == pytest.approx(r_naive, rel=0.02)
    assert abs(r0_naive - r0) > 0.02  # 10 % off: the test can tell a fit that forgets r²
    assert k_naive == pytest.approx(k_naive_expected, rel=0.04)
    assert abs(k_naive - k) / k > 0.06
    # the same test-side fitter with the Jacobian is unbiased: the bias is the Jacobian's
    k_jac, r0_jac = parabola_fit(r, lambda x: x**2)
    assert r0_jac == pytest.approx(r0, rel=0.01) and k_jac == pytest.approx(k, rel=0.04)


def test_bond_moments_recover_k_r0_and_need_the_jacobian():
    k, r0 = 500.0, 0.30
    width = math.sqrt(KBT / k)
    r = rejection_sample(bond_density(k, r0), r0 - 8 * width, r0 + 8 * width, 60000, seed=2)
    k_fit, r0_fit = fit_harmonic(r, "bond", TEMPERATURE, PriorConfig(bond_fit="moments"), ("A", "B"))
    assert (k_fit, r0_fit) == pytest.approx(fit_bond_moments(r, TEMPERATURE, PriorConfig(), ("A", "B")))
    assert k_fit == pytest.approx(k, rel=0.03)
    assert r0_fit == pytest.approx(r0, abs=0.002)
    # the plain sample mean is shifted by the r² Jacobian (≈ 2 kBT/(k r0) = 0.033 nm here)
    assert float(np.mean(r)) - r0 > 0.02


def test_bond_moments_refuse_unbound_distributions_and_bad_options():
    rng = np.random.default_rng(3)
    unbound = rng.uniform(0.3, 3.0, 5000)
    with pytest.raises(ValueError, match=r"bond type \(A, B\).*too broad"):
        fit_bond_moments(unbound, TEMPERATURE, PriorConfig(min_bond_k=10.0), ("A", "B"))
    with pytest.raises(ValueError, match="bond_fit must be one of"):
        PriorConfig(bond_fit="mean")


# ---------------------------------------------------------------------------------------------
# (2) angles with the sin θ Jacobian
# ---------------------------------------------------------------------------------------------


def test_angle_fit_recovers_k_theta0_and_naive_fit_is_biased():
    k, theta0 = 40.0, 2.2
    theta = rejection_sample(angle_density(k, theta0), 0.0, math.pi, 60000, seed=2)

    k_fit, theta0_fit = fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(), ("A", "B", "C"))
    assert k_fit == pytest.approx(k, rel=0.03)
    assert theta0_fit == pytest.approx(theta0, abs=0.01)

    # Without sin θ: minimum of ½k(θ−θ0)² − kBT ln sin θ, i.e. k(θ−θ0) = kBT cot θ; curvature k + kBT/sin²θ.
    grid = np.linspace(1.5, 2.9, 200001)
    theta_naive = grid[np.argmin(0.5 * k * (grid - theta0) ** 2 - KBT * np.log(np.sin(grid)))]
    k_naive, theta0_naive = parabola_fit(theta, lambda x: np.ones_like(x))
    assert theta0_naive == pytest.approx(theta_naive, abs=0.012)
    assert abs(theta0_naive - theta0) > 0.03
    assert k_naive == pytest.approx(k + KBT / math.sin(theta_naive) ** 2, rel=0.05)
    assert abs(k_naive - k) / k > 0.06


@pytest.mark.parametrize("theta0", [3.0, math.pi])
def test_angle_fit_near_linear(theta0):
    """Wells cut by θ = π (near-linear CG angles) still fit; θ0 is clipped to π."""
    k = 100.0
    theta = rejection_sample(angle_density(k, theta0), 0.0, math.pi, 60000, seed=3)
    k_fit, theta0_fit = fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(), ("A", "B", "A"))
    assert k_fit == pytest.approx(k, rel=0.08)
    assert theta0_fit == pytest.approx(theta0, abs=0.02)
    assert theta0_fit <= math.pi


@pytest.mark.parametrize("seed", range(8))
def test_soft_linear_angle_fits_with_vertex_on_pi(seed):
    """A soft angle whose free energy falls all the way to π (short chains' end angles): noisy
    free fits put the vertex beyond π; the fit constrained to the domain returns θ0 = π."""
    k = 3.0  # kBT/k ≈ 0.8 rad²: (before the constrained refit, half of these seeds were refused)
    theta = rejection_sample(angle_density(k, math.pi), 0.0, math.pi, 1000, seed=seed)
    k_fit, theta0_fit = fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(min_samples=200), ("E", "M", "M"))
    assert k_fit == pytest.approx(k, rel=0.25)
    assert math.pi - 0.12 <= theta0_fit <= math.pi


def test_soft_near_linear_angle_from_a_short_sample_is_bounded_at_pi():
    """A soft angle sampled briefly never comes within 0.05 rad of π (sin θ starves the bins there);
    the missing samples are explained by the Jacobian, so the well counts as bounded at π and fits.
    A distribution cut off below π with plenty of samples at its edge stays refused."""
    from multiscale.cg.priors import expected_angles_beyond_max

    k, theta0 = 12.0, 2.75
    theta = rejection_sample(angle_density(k, theta0), 0.0, math.pi, 500, seed=11)
    assert math.pi - theta.max() > 0.05  # the plain tolerance would call the well open
    assert expected_angles_beyond_max(theta) < 3.0
    k_fit, theta0_fit = fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(min_samples=200), ("E", "M", "M"))
    assert k_fit == pytest.approx(k, rel=0.25)
    assert theta0_fit == pytest.approx(theta0, abs=0.1)
    # flat free energy up to 0.1 rad below π, densely sampled: the edge is real, not the Jacobian
    flat = rejection_sample(np.sin, 1.5, math.pi - 0.1, 20000, seed=12)
    assert expected_angles_beyond_max(flat) > 3.0
    with pytest.raises(ValueError, match="no closed well"):
        fit_harmonic(flat, "angle", TEMPERATURE, PriorConfig(), ("A", "B", "C"))


def test_soft_angle_whose_short_sample_stops_short_of_pi_is_closed_at_pi():
    """A soft near-linear angle (well closed below) whose sample stops 0.06 rad short of π with
    plenty of samples at that edge (so the Jacobian alone does not explain it): the well counts as
    bounded at π instead of being refused, as a host-dependent short CG run did in polymer_cg."""
    from multiscale.cg.priors import expected_angles_beyond_max

    k, theta0 = 12.0, 2.75
    theta = rejection_sample(angle_density(k, theta0), 0.0, math.pi, 20000, seed=13)
    theta = theta[theta < math.pi - 0.06]
    assert expected_angles_beyond_max(theta) > 3.0  # the Jacobian rule alone would not close it
    k_fit, theta0_fit = fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(), ("M", "M", "M"))
    assert k_fit == pytest.approx(k, rel=0.25)
    assert theta0_fit == pytest.approx(theta0, abs=0.1)


# ---------------------------------------------------------------------------------------------
# (3) dihedrals: Fourier series, no Jacobian
# ---------------------------------------------------------------------------------------------


def test_torsion_fit_recovers_potential_up_to_constant():
    true = DihedralPrior(("A", "B", "B", "A"), [(1, 0.5, 2.0), (2, math.pi, 1.5), (3, 0.0, 1.0)])
    phi = rejection_sample(lambda x: np.exp(-true.energy(x) / KBT), -math.pi, math.pi, 100000, seed=4)
    terms = fit_torsion(phi, TEMPERATURE, PriorConfig(), true.types)
    fitted = DihedralPrior(true.types, terms)

    grid = np.linspace(-math.pi, math.pi, 721)
    u_true = true.energy(grid) - true.energy(grid).mean()
    u_fit = fitted.energy(grid) - fitted.energy(grid).mean()
    assert np.ptp(u_true) > 6.0  # a potential with several kBT of structure
    assert np.max(np.abs(u_fit - u_true)) < 0.3
    by_n = {n: (phase, kn) for n, phase, kn in terms}
    assert by_n[1][1] == pytest.approx(2.0, rel=0.08) and by_n[1][0] == pytest.approx(0.5, abs=0.06)
    assert by_n[2][1] == pytest.approx(1.5, rel=0.08) and abs(math.cos(by_n[2][0]) + 1.0) < 0.01
    # a mirrored potential (phase −0.5) would be detected: the sign of φ is not lost
    mirrored = DihedralPrior(true.types, [(1, -0.5, 2.0), (2, math.pi, 1.5), (3, 0.0, 1.0)])
    u_mirror = mirrored.energy(grid) - mirrored.energy(grid).mean()
    assert np.max(np.abs(u_fit - u_mirror)) > 1.0


# ---------------------------------------------------------------------------------------------
# (4) the OpenMM forces reproduce the prior energy functions
# ---------------------------------------------------------------------------------------------

TYPES = ["A", "B", "B", "A", "C"]
BONDS = [(0, 1), (1, 2), (2, 3)]
ANGLES = [(0, 1, 2), (1, 2, 3)]
DIHEDRALS = [(0, 1, 2, 3)]
#: with exclusion "1-3" on the chain 0-1-2-3 plus a free bead 4 (worked out by hand)
NONBONDED = [(0, 3), (0, 4), (1, 4), (2, 4), (3, 4)]


def hand_priors(form):
    return Priors(
        temperature_K=TEMPERATURE,
        exclusion="1-3",
        repulsive_form=form,
        cutoff_nm=1.2,
        bonds={("A", "B"): BondPrior(("A", "B"), 1200.0, 0.35), ("B", "B"): BondPrior(("B", "B"), 800.0, 0.40)},
        angles={("A", "B", "B"): AnglePrior(("A", "B", "B"), 60.0, 2.0)},
        dihedrals={("A", "B", "B", "A"): DihedralPrior(("A", "B", "B", "A"),
                                                        [(1, 0.7, 2.0), (2, math.pi, 1.0), (3, -0.4, 0.5)])},
        repulsive={("A", "A"): RepulsivePrior(("A", "A"), 0.30, 2.5),
                   ("A", "C"): RepulsivePrior(("A", "C"), 0.35, 2.0),
                   ("B", "C"): RepulsivePrior(("B", "C"), 0.28, 3.0)},
    )


def iupac_chain(phi):
    """Beads 0-1-2-3 with dihedral φ by construction (IUPAC: looking along 1→2, the bond 1→0 turned
    clockwise by φ eclipses 2→3; looking along +z, clockwise takes +x to +y), plus a free bead 4."""
    j = np.array([0.0, 0.0, 0.0])
    k = np.array([0.0, 0.0, 0.38])
    i = j + np.array([0.32, 0.0, -0.12])
    l = k + np.array([0.33 * math.cos(phi), 0.33 * math.sin(phi), 0.10])
    return np.array([i, j, k, l, [0.15, 0.45, 0.25]])


def openmm_energies(forces, positions, box=None):
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(10.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    for group, force in enumerate(forces):
        force.setForceGroup(group)
        system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(positions)
    out = {}
    for group, force in enumerate(forces):
        state = context.getState(getEnergy=True, groups={group})
        out[force.getName()] = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    return out


def numpy_energies(priors, x, phi, cutoff):
    """Reference energies from the textbook formulas with plain distances (open boundaries)."""
    dist = lambda a, b: float(np.linalg.norm(x[b] - x[a]))
    e_bond = 0.5 * 1200 * (dist(0, 1) - 0.35) ** 2 + 0.5 * 800 * (dist(1, 2) - 0.40) ** 2 \
        + 0.5 * 1200 * (dist(2, 3) - 0.35) ** 2
    def angle(a, b, c):
        u, v = x[a] - x[b], x[c] - x[b]
        return math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v))
    e_angle = 0.5 * 60 * (angle(0, 1, 2) - 2.0) ** 2 + 0.5 * 60 * (angle(1, 2, 3) - 2.0) ** 2
    e_torsion = 2.0 * (1 + math.cos(phi - 0.7)) + 1.0 * (1 + math.cos(2 * phi - math.pi)) \
        + 0.5 * (1 + math.cos(3 * phi + 0.4))
    params = {(0, 3): (0.30, 2.5), (0, 4): (0.35, 2.0), (1, 4): (0.28, 3.0), (2, 4): (0.28, 3.0), (3, 4): (0.35, 2.0)}
    e_rep = 0.0
    for (a, b), (sig, eps) in params.items():
        r = dist(a, b)
        if priors.repulsive_form == "r12":
            e_rep += eps * ((sig / r) ** 12 - (sig / cutoff) ** 12) if r < cutoff else 0.0
        else:
            e_rep += 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6) + eps if r < 2 ** (1 / 6) * sig else 0.0
    return {"cg_prior_bonds": e_bond, "cg_prior_angles": e_angle,
            "cg_prior_torsions": e_torsion, "cg_prior_repulsion": e_rep}


@pytest.mark.parametrize("form", ["r12", "wca"])
def test_openmm_forces_match_prior_energies(form):
    priors = hand_priors(form)
    assert nonbonded_pairs(5, BONDS, "1-3").tolist() == [list(p) for p in NONBONDED]
    cutoff = 1.2
    for phi in (-2.6, -0.9, 0.0, 0.4, 1.7, math.pi):
        x = iupac_chain(phi)
        # the project's dihedral matches the IUPAC construction
        assert dihedral_angles(x, DIHEDRALS)[0, 0] == pytest.approx(math.remainder(phi, 2 * math.pi), abs=1e-9) or \
            abs(abs(phi) - math.pi) < 1e-9
        forces = priors_to_openmm(priors, TYPES, BONDS, ANGLES, DIHEDRALS, nonbonded_cutoff_nm=cutoff, periodic=False)
        assert [type(f).__name__ for f in forces] == [
            "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "CustomNonbondedForce"]
        got = openmm_energies(forces, x)
        want = numpy_energies(priors, x, phi, cutoff)
        assert want["cg_prior_repulsion"] > 0.0 or form == "wca"
        for name in want:
            assert got[name] == pytest.approx(want[name], rel=1e-7, abs=1e-9), (name, phi)
    # the repulsive part is not trivially zero at a compressed configuration
    x = iupac_chain(0.3)
    x[4] = x[1] + np.array([0.0, 0.24, 0.0])
    got = openmm_energies(priors_to_openmm(priors, TYPES, BONDS, ANGLES, DIHEDRALS, nonbonded_cutoff_nm=cutoff,
                                           periodic=False), x)
    assert got["cg_prior_repulsion"] == pytest.approx(numpy_energies(priors, x, 0.3, cutoff)["cg_prior_repulsion"],
                                                      rel=1e-7)
    assert got["cg_prior_repulsion"] > 1.0


def test_openmm_forces_periodic_triclinic():
    """A compact configuration centred on a cell corner and wrapped into the cell (beads at
    opposite corners) gives the energies of the compact configuration."""
    priors = hand_priors("r12")
    box = np.array([[2.2, 0.0, 0.0], [0.6, 2.0, 0.0], [-0.5, 0.7, 1.9]])  # OpenMM reduced form
    x = iupac_chain(1.1)
    frac = (x - x.mean(axis=0)) @ np.linalg.inv(box)
    shifted = (frac - np.floor(frac)) @ box
    assert np.ptp(frac - np.floor(frac), axis=0).min() > 0.5  # the cluster really is split across the cell
    cutoff = 0.8
    forces = priors_to_openmm(priors, TYPES, BONDS, ANGLES, DIHEDRALS, nonbonded_cutoff_nm=cutoff, periodic=True)
    assert forces[-1].getNonbondedMethod() == openmm.CustomNonbondedForce.CutoffPeriodic
    got = openmm_energies(forces, shifted, box)
    want = numpy_energies(priors, x, 1.1, cutoff)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-7, abs=1e-9), name
    assert bond_lengths(shifted, BONDS, box) == pytest.approx(bond_lengths(x, BONDS), abs=1e-12)


def test_openmm_refuses_missing_types_and_long_range():
    priors = hand_priors("r12")
    with pytest.raises(ValueError, match=r"no bond prior for type \('A', 'C'\)"):
        priors_to_openmm(priors, TYPES, BONDS + [(3, 4)], nonbonded_cutoff_nm=1.2, periodic=False)
    with pytest.raises(ValueError, match=r"reaches the cutoff"):
        priors_to_openmm(priors, TYPES, BONDS, ANGLES, nonbonded_cutoff_nm=0.3, periodic=False)
    with pytest.raises(ValueError, match=r"repulsive non-bonded prior for type \('C', 'C'\)"):
        priors_to_openmm(priors, TYPES + ["C"], BONDS, ANGLES, nonbonded_cutoff_nm=1.2, periodic=False)


# ---------------------------------------------------------------------------------------------
# (5) refusals
# ---------------------------------------------------------------------------------------------


def test_refuses_repulsive_and_flat_distributions():
    sigma = 0.3
    r = rejection_sample(lambda x: x**2 * np.exp(-((sigma / np.maximum(x, 1e-3)) ** 12)), 0.05, 1.0, 20000, seed=5)
    with pytest.raises(ValueError, match=r"bond type \(A, B\): no closed well"):
        fit_harmonic(r, "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    # isotropic orientations: P(θ) ∝ sin θ, flat after the Jacobian
    theta = rejection_sample(np.sin, 0.0, math.pi, 20000, seed=6)
    with pytest.raises(ValueError, match=r"angle type \(A, B, C\): no closed well"):
        fit_harmonic(theta, "angle", TEMPERATURE, PriorConfig(), ("A", "B", "C"))


def test_refuses_few_samples_nan_tiny_k_and_overlap():
    good = rejection_sample(bond_density(500.0, 0.3), 0.05, 0.6, 2000, seed=7)
    with pytest.raises(ValueError, match=r"bond type \(A, B\): only 100 samples"):
        fit_harmonic(good[:100], "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    bad = good.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match=r"1 of 2000 samples are NaN"):
        fit_harmonic(bad, "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    with pytest.raises(ValueError, match=r"all 600 samples equal"):
        fit_harmonic(np.full(600, 0.3), "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    soft = rejection_sample(bond_density(5.0, 10.0), 5.0, 15.0, 20000, seed=8)
    with pytest.raises(ValueError, match=r"k = \S+ kJ/mol/nm\^2 is below the floor 10"):
        fit_harmonic(soft, "bond", TEMPERATURE, PriorConfig(), ("A", "B"))
    assert fit_harmonic(soft, "bond", TEMPERATURE, PriorConfig(min_bond_k=1.0), ("A", "B"))[0] == \
        pytest.approx(5.0, rel=0.1)
    with pytest.raises(ValueError, match=r"non-bonded type \(A, C\): repulsive sigma = 0.05\d* nm .* floor 0.1 nm"):
        repulsive_sigma(np.random.default_rng(0).uniform(0.05, 0.5, 1000), PriorConfig(), ("A", "C"))
    with pytest.raises(ValueError, match=r"non-bonded type \(A, C\): only 7 close contacts"):
        repulsive_sigma(np.full(7, 0.4), PriorConfig(), ("A", "C"))


def test_fit_priors_gathers_refusals_by_type():
    good = rejection_sample(bond_density(500.0, 0.3), 0.05, 0.6, 5000, seed=9)
    flat = rejection_sample(lambda x: x**2, 0.1, 1.0, 5000, seed=10)
    samples = PriorSamples(bonds={("A", "B"): good, ("B", "C"): flat, ("C", "C"): good[:30]})
    with pytest.raises(ValueError) as err:
        fit_priors_from_samples(samples, TEMPERATURE, PriorConfig(use_repulsive=False))
    message = str(err.value)
    assert "2 prior fit(s) refused" in message
    assert "bond type (B, C): no closed well" in message and "bond type (C, C): only 30 samples" in message
    assert "(A, B)" not in message


# ---------------------------------------------------------------------------------------------
# (6) minimum image in a triclinic box vs brute force
# ---------------------------------------------------------------------------------------------


def brute_vector(d, box, reach=6):
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3))) @ box
    images = d[None, :] + shifts
    return images[np.argmin(np.linalg.norm(images, axis=1))]


def test_minimum_image_geometry_triclinic_vs_brute_force():
    rng = np.random.default_rng(11)
    box = np.array([[2.0, 0.0, 0.0], [0.9, 1.8, 0.0], [-0.8, 0.7, 1.6]])  # reduced, strongly tilted
    n = 12
    x = rng.uniform(-3.0, 5.0, size=(3, n, 3))  # unwrapped, several cells away
    boxes = np.stack([box, 1.1 * box, 0.95 * box])
    pairs = np.array(list(itertools.combinations(range(n), 2)))
    quads = np.array([rng.permutation(n)[:4] for _ in range(20)])
    r = bond_lengths(x, pairs, boxes)
    theta = bond_angles(x, quads[:, :3], boxes)
    phi = dihedral_angles(x, quads, boxes)
    for t in range(3):
        v = lambda a, b: brute_vector(x[t, b] - x[t, a], boxes[t])
        ref_r = [np.linalg.norm(v(a, b)) for a, b in pairs]
        np.testing.assert_allclose(r[t], ref_r, rtol=0, atol=1e-12)
        for m, (a, b, c, d) in enumerate(quads):
            u, w = v(b, a), v(b, c)
            ref_theta = math.acos(np.clip(np.dot(u, w) / np.linalg.norm(u) / np.linalg.norm(w), -1, 1))
            assert theta[t, m] == pytest.approx(ref_theta, abs=1e-9)
            b1, b2, b3 = v(a, b), v(b, c), v(c, d)
            n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
            cos_phi = np.dot(n1, n2) / np.linalg.norm(n1) / np.linalg.norm(n2)
            assert math.cos(phi[t, m]) == pytest.approx(cos_phi, abs=1e-9)
            assert np.sign(phi[t, m]) == np.sign(np.dot(np.cross(n1, n2), b2))
    # a trans chain is ±π and a cis chain 0 (IUPAC, as PeriodicTorsionForce)
    trans = np.array([[0.3, 0, -0.1], [0, 0, 0], [0, 0, 0.4], [-0.3, 0, 0.5]])
    cis = trans.copy()
    cis[3, 0] = 0.3
    assert abs(dihedral_angles(trans, DIHEDRALS)[0, 0]) == pytest.approx(math.pi)
    assert dihedral_angles(cis, DIHEDRALS)[0, 0] == pytest.approx(0.0, abs=1e-12)


def brute_contacts(x, types, excluded, box, cutoff, reach=6):
    """Pooled nearest non-excluded neighbour distances per sorted type pair, brute force."""
    out = {}
    n = x.shape[1]
    for t in range(x.shape[0]):
        for i in range(n):
            for b in sorted(set(types)):
                d = [np.linalg.norm(x[t, j] - x[t, i]) if box is None
                     else np.linalg.norm(brute_vector(x[t, j] - x[t, i], box[t], reach))
                     for j in range(n) if j != i and types[j] == b and (min(i, j), max(i, j)) not in excluded]
                d = [v for v in d if v < cutoff]
                if d:
                    out.setdefault(tuple(sorted((types[i], b))), []).append(min(d))
    return {k: np.sort(v) for k, v in out.items()}


def test_contact_distances_vs_brute_force_triclinic():
    rng = np.random.default_rng(12)
    box = np.array([[2.0, 0.0, 0.0], [0.9, 1.8, 0.0], [-0.8, 0.7, 1.6]])
    types = ["A", "B", "A", "C", "B", "A", "C", "A", "B", "B"]
    bonds = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6)]
    x = rng.uniform(-2.0, 4.0, size=(4, len(types), 3))
    boxes = np.stack([box] * 4)
    excluded = {tuple(p) for p in excluded_pairs(len(types), bonds, "1-3").tolist()}
    assert (0, 2) in excluded and (0, 3) not in excluded and (4, 6) in excluded
    want = brute_contacts(x, types, excluded, boxes, 0.7)
    for method in ("pairs", "cells"):
        got = contact_distances(x, types, bonds, boxes, exclusion="1-3", cutoff_nm=0.7, method=method)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(np.sort(got[key]), want[key], atol=1e-9)
    # open boundaries
    want = brute_contacts(x, types, excluded, None, 1.5)
    for method in ("pairs", "cells"):
        got = contact_distances(x, types, bonds, None, exclusion="1-3", cutoff_nm=1.5, method=method)
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_allclose(np.sort(got[key]), want[key], atol=1e-9)


# ---------------------------------------------------------------------------------------------
# (7) the repulsive prior: purely repulsive, σ by the documented rule
# ---------------------------------------------------------------------------------------------


def test_repulsive_sigma_rule_and_monotone_repulsion():
    rng = np.random.default_rng(13)
    edge = 2.2
    n_chains, frames = 8, 40
    types = ["A", "B", "A"] * n_chains
    bonds = [(3 * c, 3 * c + 1) for c in range(n_chains)] + [(3 * c + 1, 3 * c + 2) for c in range(n_chains)]
    x = rng.uniform(0.0, edge, size=(frames, len(types), 3))
    boxes = np.broadcast_to(np.eye(3) * edge, (frames, 3, 3))
    config = PriorConfig(repulsive_quantile=0.05, min_contacts=20, nonbonded_cutoff_nm=0.9)
    samples = collect_samples(x, types, bonds, boxes=boxes, config=config)
    samples.bonds, samples.angles = {}, {}  # random positions: only the non-bonded prior is meaningful
    priors = fit_priors_from_samples(samples, TEMPERATURE, config)
    # the rule, by brute force: nearest non-excluded (other chain) neighbour of each type, pooled
    excluded = {(3 * c + a, 3 * c + b) for c in range(n_chains) for a, b in ((0, 1), (1, 2), (0, 2))}
    want = brute_contacts(x, types, excluded, boxes, 0.9, reach=1)  # all beads inside the cube
    assert set(priors.repulsive) == {("A", "A"), ("A", "B"), ("B", "B")}
    for key, prior in priors.repulsive.items():
        assert prior.sigma == pytest.approx(np.quantile(want[key], 0.05), abs=1e-12)
        assert prior.n_contacts == want[key].size
        assert prior.epsilon == pytest.approx(KBT)
    assert priors.repulsive[("A", "A")].sigma != priors.repulsive[("A", "B")].sigma

    for form in ("r12", "wca"):
        prior = priors.repulsive[("A", "B")]
        r = np.linspace(0.5 * prior.sigma, 0.9, 2000)
        u = prior.energy(r, form, 0.9)
        assert np.all(u >= 0.0)
        inside = r < (prior.sigma * 2 ** (1 / 6) if form == "wca" else 0.9)
        assert np.all(np.diff(u[inside]) < 0.0) and np.all(u[~inside] == 0.0)
        assert prior.energy(np.array([prior.sigma]), form, 0.9)[0] == pytest.approx(KBT, rel=0.01)
        # OpenMM: the force between two beads always pushes them apart
        two = Priors(temperature_K=TEMPERATURE, repulsive_form=form, repulsive={("A", "B"): prior})
        force = priors_to_openmm(two, ["A", "B"], [], nonbonded_cutoff_nm=0.9, periodic=False)[-1]
        system = openmm.System()
        system.addParticle(1.0)
        system.addParticle(1.0)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        for d in np.linspace(0.8 * prior.sigma, 1.05 * prior.sigma, 6):
            context.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(d, 0, 0)])
            f = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
                openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
            assert f[1][0] > 0.0 and f[0][0] < 0.0


# ---------------------------------------------------------------------------------------------
# end to end: a chain ensemble built from exact internal-coordinate distributions
# ---------------------------------------------------------------------------------------------


def place(a, b, c, r, theta, phi):
    """Bead d with |cd| = r, angle b-c-d = θ, dihedral a-b-c-d = φ (vectorised over frames)."""
    bc = (c - b) / np.linalg.norm(c - b, axis=1, keepdims=True)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    m = np.cross(n, bc)
    return c + (-r * np.cos(theta))[:, None] * bc + (r * np.sin(theta) * np.cos(phi))[:, None] * m \
        + (r * np.sin(theta) * np.sin(phi))[:, None] * n


def test_fit_priors_end_to_end_json_and_plot(tmp_path):
    """For U = Σ bonds + Σ angles + torsion, independent internal coordinates drawn from their
    Jacobian-weighted marginals are an exact Boltzmann sample of the 4-bead chain."""
    frames = 20000
    torsion = DihedralPrior(("A", "B", "B", "A"), [(1, 0.0, 1.5), (3, math.pi, 1.0)])  # symmetric in φ
    r_ab = rejection_sample(bond_density(900.0, 0.38), 0.1, 0.7, 2 * frames, seed=20).reshape(2, frames)
    r_bb = rejection_sample(bond_density(1500.0, 0.45), 0.2, 0.7, frames, seed=21)
    th = rejection_sample(angle_density(50.0, 1.9), 0.0, math.pi, 2 * frames, seed=22).reshape(2, frames)
    phi = rejection_sample(lambda p: np.exp(-torsion.energy(p) / KBT), -math.pi, math.pi, frames, seed=23)
    x = np.zeros((frames, 4, 3))
    x[:, 1, 0] = r_ab[0]
    x[:, 2] = x[:, 1] + np.stack([-r_bb * np.cos(th[0]), r_bb * np.sin(th[0]), np.zeros(frames)], axis=1)
    x[:, 3] = place(x[:, 0], x[:, 1], x[:, 2], r_ab[1], th[1], phi)
    types = ["A", "B", "B", "A"]
    config = PriorConfig(use_dihedrals=True, nonbonded_cutoff_nm=2.5)
    samples = collect_samples(x, types, BONDS, ANGLES, DIHEDRALS, config=config)
    priors = fit_priors_from_samples(samples, TEMPERATURE, config)

    assert set(priors.bonds) == {("A", "B"), ("B", "B")} and set(priors.angles) == {("A", "B", "B")}
    assert priors.bonds[("A", "B")].n_samples == 2 * frames
    assert priors.bonds[("A", "B")].k == pytest.approx(900.0, rel=0.05)
    assert priors.bonds[("A", "B")].r0 == pytest.approx(0.38, rel=0.01)
    assert priors.bonds[("B", "B")].k == pytest.approx(1500.0, rel=0.05)
    assert priors.angles[("A", "B", "B")].k == pytest.approx(50.0, rel=0.05)
    assert priors.angles[("A", "B", "B")].theta0 == pytest.approx(1.9, abs=0.015)
    grid = np.linspace(-math.pi, math.pi, 361)
    fitted = priors.dihedrals[("A", "B", "B", "A")].energy(grid)
    assert np.max(np.abs((fitted - fitted.mean()) - (torsion.energy(grid) - torsion.energy(grid).mean()))) < 0.4
    # the one non-bonded pair (0, 3) is A–A; σ is the 1 % quantile of its distances (both directions)
    d03 = np.linalg.norm(x[:, 3] - x[:, 0], axis=1)
    assert priors.repulsive[("A", "A")].sigma == pytest.approx(np.quantile(np.concatenate([d03, d03]), 0.01))
    assert fit_priors(x[:2000], types, BONDS, ANGLES, temperature_K=TEMPERATURE,
                      config=PriorConfig(nonbonded_cutoff_nm=2.5)).bonds[("B", "B")].k == pytest.approx(1500, rel=0.15)

    restored = Priors.from_dict(json.loads(json.dumps(priors.to_dict())))
    assert restored.to_dict() == priors.to_dict()
    assert restored.dihedrals[("A", "B", "B", "A")].terms == priors.dihedrals[("A", "B", "B", "A")].terms
    with pytest.raises(ValueError, match="unknown prior field"):
        Priors.from_dict({**priors.to_dict(), "bond": []})

    path = plot_priors(priors, samples, tmp_path / "priors.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000


def test_prior_config_yaml_roundtrip(tmp_path):
    config = PriorConfig(bins=80, use_dihedrals=True, repulsive_form="wca", exclusion="1-4")
    config.to_yaml(tmp_path / "p.yaml")
    assert PriorConfig.from_yaml(tmp_path / "p.yaml") == config
    with pytest.raises(ValueError, match="repulsive_form"):
        PriorConfig(repulsive_form="lj")
    with pytest.raises(ValueError, match="unknown prior option"):
        PriorConfig.from_dict({"bin": 10})
    assert excluded_pairs(4, BONDS, "1-4").tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert excluded_pairs(4, BONDS, "1-2").tolist() == [[0, 1], [1, 2], [2, 3]]


def test_angle_moments_recover_a_harmonic_angle_from_its_boltzmann_distribution():
    """angle_fit "moments": samples drawn (by rejection) from the analytic
    P(θ) ∝ sin θ exp(−k(θ − θ0)²/2kBT) give back k and θ0."""
    from multiscale.cg.priors import PriorConfig
    from multiscale.cg.priors.fits import fit_angle_moments

    rng = np.random.default_rng(5)
    k, theta0, T = 40.0, 2.0, 300.0
    width = np.sqrt(kT(T) / k)
    x = rng.normal(theta0, width, 400_000)
    x = x[(x > 0) & (x < np.pi)]
    x = x[rng.uniform(size=x.size) < np.sin(x)]  # the sin θ Jacobian of the angle's density
    k_fit, theta_fit = fit_angle_moments(x, T, PriorConfig(angle_fit="moments"))
    assert k_fit == pytest.approx(k, rel=0.03)
    assert theta_fit == pytest.approx(theta0, abs=0.01)
    with pytest.raises(ValueError, match="angle_fit"):
        PriorConfig(angle_fit="peak")
