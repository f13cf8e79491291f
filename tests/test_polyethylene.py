"""systems.polyethylene: TraPPE-UA parameters against the published numbers (Martin & Siepmann,
J. Phys. Chem. B 102, 2569 (1998)), OpenMM energies against the published functional forms, the
exclusion rule, and the melt builder (density, overlaps, bond lengths, short stable MD).

The published numbers are written literally here (K, Å, degrees; k_B in kJ/mol/K from CODATA
2018), not imported from the module under test.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import multiscale  # noqa: E402,F401  (torch before openmmtorch)
from systems import polyethylene as pe  # noqa: E402

KB = 0.00831446261815324  # kJ/mol/K (CODATA 2018)
GROUPS = {"bond": 0, "angle": 1, "torsion": 2, "nonbonded": 3}
BIG_BOX = np.eye(3) * 4.0  # nm: an isolated molecule with the published 1.4 nm cutoff
PUBLISHED = {
    # site: (eps/kB in K, sigma in Å, mass in amu)
    "CH3": (98.0, 3.75, 15.035),
    "CH2": (46.0, 3.95, 14.027),
}
C1, C2, C3 = 355.03 * KB, -68.19 * KB, 791.32 * KB  # torsion, kJ/mol
THETA0 = math.radians(114.0)
K_THETA = 62500.0 * KB  # kJ/mol/rad^2, U = (k_theta/2)(theta - theta0)^2


def published_torsion(phi):
    return C1 * (1 + np.cos(phi)) + C2 * (1 - np.cos(2 * phi)) + C3 * (1 + np.cos(3 * phi))


def group_energy(system, positions, group, platform="Reference"):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def energies(system, conformations, group):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    out = []
    for positions in conformations:
        context.setPositions(positions)
        out.append(context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    return np.array(out)


def butane(phi, bond=0.154, theta=THETA0):
    """CH3-CH2-CH2-CH3 with dihedral phi (IUPAC: trans = pi), built here independently."""
    b = np.array([0.0, 0.0, 0.0])
    c = np.array([bond, 0.0, 0.0])
    a = b + bond * np.array([math.cos(theta), math.sin(theta), 0.0])
    # d: angle b-c-d = theta, rotated by phi about the b->c axis from the cis position
    d_cis = c + bond * np.array([-math.cos(theta), math.sin(theta), 0.0])
    rel = d_cis - c
    rot = np.array([rel[0], rel[1] * math.cos(phi), rel[1] * math.sin(phi)])
    return np.array([a, b, c, c + rot]) + 2.0


def dihedral(p):
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    n = b1 / np.linalg.norm(b1)
    v, w = b0 - b0 @ n * n, b2 - b2 @ n * n
    return math.atan2(np.cross(n, v) @ w, v @ w)


def test_parameters_match_published_values():
    for site, (eps_k, sigma_a, mass) in PUBLISHED.items():
        assert pe.EPSILON_KJ_MOL[site] == pytest.approx(eps_k * KB, rel=1e-12)
        assert pe.SIGMA_NM[site] == pytest.approx(sigma_a / 10, rel=1e-12)
        assert pe.SITE_MASSES_AMU[site] == mass
    assert pe.BOND_LENGTH_NM == pytest.approx(0.154, rel=1e-12)
    assert pe.THETA0_RAD == pytest.approx(THETA0, rel=1e-12)
    assert pe.ANGLE_K_KJ_MOL_RAD2 == pytest.approx(K_THETA, rel=1e-12)
    assert pe.TORSION_C_KJ_MOL == pytest.approx((C1, C2, C3), rel=1e-12)
    assert pe.CUTOFF_NM == pytest.approx(1.4, rel=1e-12)
    # the documented bond stiffness: RMS fluctuation sqrt(kT/k) = 0.003 nm at 450 K
    assert math.sqrt(KB * 450.0 / pe.BOND_K_KJ_MOL_NM2) == pytest.approx(0.003, rel=1e-9)

    # ... and the System carries them
    topology = pe.polyethylene_topology(2, 5)
    system = pe.trappe_system(topology, BIG_BOX)
    assert system.getNumConstraints() == 0
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(10)]
    assert masses == [15.035, 14.027, 14.027, 14.027, 15.035] * 2
    forces = {type(f).__name__: f for f in system.getForces()}
    nb = forces["NonbondedForce"]
    assert nb.getNonbondedMethod() == openmm.NonbondedForce.CutoffPeriodic
    assert nb.getCutoffDistance().value_in_unit(unit.nanometer) == pytest.approx(1.4)
    assert nb.getUseDispersionCorrection() and not nb.getUseSwitchingFunction()
    for i, site in enumerate(["CH3", "CH2", "CH2", "CH2", "CH3"]):
        charge, sigma, eps = nb.getParticleParameters(i)
        assert charge.value_in_unit(unit.elementary_charge) == 0.0
        assert sigma.value_in_unit(unit.nanometer) == pytest.approx(PUBLISHED[site][1] / 10)
        assert eps.value_in_unit(unit.kilojoule_per_mole) == pytest.approx(PUBLISHED[site][0] * KB)
    bonds = forces["HarmonicBondForce"]
    assert bonds.getNumBonds() == 8
    _, _, r0, k = bonds.getBondParameters(0)
    assert r0.value_in_unit(unit.nanometer) == pytest.approx(0.154) and k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2) == pytest.approx(pe.BOND_K_KJ_MOL_NM2)
    assert forces["HarmonicAngleForce"].getNumAngles() == 6
    assert forces["PeriodicTorsionForce"].getNumTorsions() == 2 * 2 * 3  # two dihedrals per chain, three terms each


def test_topology_conventions():
    topology = pe.polyethylene_topology(3, 6)
    assert topology.getNumChains() == 3 and topology.getNumAtoms() == 18 and topology.getNumBonds() == 15
    chain = list(topology.chains())[1]
    assert [r.name for r in chain.residues()] == ["CH3", "CH2", "CH2", "CH2", "CH2", "CH3"]
    assert [a.name for a in chain.atoms()] == ["CH3", "CH2", "CH2", "CH2", "CH2", "CH3"]
    assert all(a.element is None for a in topology.atoms())
    assert all(b[0].residue.chain is b[1].residue.chain for b in topology.bonds())


def test_torsion_energy_equals_published_formula_and_trans_is_the_global_minimum():
    system = pe.trappe_system(pe.polyethylene_topology(1, 4), BIG_BOX)
    rng = np.random.default_rng(3)
    phis = rng.uniform(-math.pi, math.pi, 40)
    conformations = [butane(phi) for phi in phis]
    assert [dihedral(p) for p in conformations] == pytest.approx(list(phis), abs=1e-9)
    np.testing.assert_allclose(energies(system, conformations, GROUPS["torsion"]), published_torsion(phis), atol=1e-9, rtol=1e-9)
    # scan: the minimum is at trans, with U = 0 there; both gauche wells lie above it
    grid = np.radians(np.arange(-180.0, 180.0, 1.0))
    scan = energies(system, [butane(phi) for phi in grid], GROUPS["torsion"])
    assert abs(abs(grid[np.argmin(scan)]) - math.pi) < 1e-9
    assert scan.min() == pytest.approx(0.0, abs=1e-9)
    gauche = scan[np.abs(np.abs(np.degrees(grid)) - 65) < 20].min()
    assert gauche > 2.0  # kJ/mol: ~ 0.5-0.6 kcal/mol above trans


def test_angle_and_bond_energies_equal_published_formulas():
    system = pe.trappe_system(pe.polyethylene_topology(1, 3), BIG_BOX)
    rng = np.random.default_rng(4)
    thetas = rng.uniform(math.radians(90), math.radians(150), 20)
    lengths = rng.uniform(0.145, 0.165, 20)
    conformations = []
    for theta, r in zip(thetas, lengths):
        conformations.append(np.array([[r, 0, 0], [0, 0, 0], [r * math.cos(theta), r * math.sin(theta), 0]]) + 2.0)
    angle = energies(system, conformations, GROUPS["angle"])
    np.testing.assert_allclose(angle, 0.5 * K_THETA * (thetas - THETA0) ** 2, rtol=1e-9, atol=1e-9)
    bond = energies(system, conformations, GROUPS["bond"])
    np.testing.assert_allclose(bond, 2 * 0.5 * pe.BOND_K_KJ_MOL_NM2 * (lengths - 0.154) ** 2, rtol=1e-9, atol=1e-9)


def _unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def lennard_jones_reference(positions, types, chain_of, index_in_chain, cutoff, excluded=3):
    """Plain-numpy LJ with Lorentz-Berthelot and the published exclusion rule (intramolecular
    pairs only when more than ``excluded`` = 3 bonds apart), truncated at the cutoff, no tail
    correction."""
    total = 0.0
    n = len(positions)
    for i in range(n):
        for j in range(i + 1, n):
            if chain_of[i] == chain_of[j] and abs(index_in_chain[i] - index_in_chain[j]) <= excluded:
                continue
            r = np.linalg.norm(positions[i] - positions[j])
            if r >= cutoff:
                continue
            eps = math.sqrt(PUBLISHED[types[i]][0] * PUBLISHED[types[j]][0]) * KB
            sigma = 0.5 * (PUBLISHED[types[i]][1] + PUBLISHED[types[j]][1]) / 10
            total += 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)
    return total


def test_exclusions_only_pairs_more_than_three_bonds_apart_interact():
    topology = pe.polyethylene_topology(2, 7)
    system = pe.trappe_system(topology, BIG_BOX)
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    # exceptions: exactly the pairs of one chain within three bonds, all with zero LJ
    excepted = set()
    for k in range(nb.getNumExceptions()):
        i, j, charge, _, eps = nb.getExceptionParameters(k)
        assert eps.value_in_unit(unit.kilojoule_per_mole) == 0.0 and charge.value_in_unit(unit.elementary_charge**2) == 0.0
        excepted.add((min(i, j), max(i, j)))
    expected = {(c * 7 + a, c * 7 + b) for c in range(2) for a in range(7) for b in range(a + 1, 7) if b - a <= 3}
    assert excepted == expected

    # energies: random trans/gauche conformations of the two chains, 0.5-0.8 nm apart, so 1-4, 1-5
    # and intermolecular pairs sit in the repulsive / attractive range; OpenMM (tail correction off)
    # equals the reference sum with the published rule, and not the sum that also counts 1-4 pairs
    nb.setUseDispersionCorrection(False)
    types = pe.site_types(topology)
    chain_of = [a.residue.chain.index for a in topology.atoms()]
    index_in_chain = [a.residue.index - 7 * a.residue.chain.index for a in topology.atoms()]
    rng = np.random.default_rng(5)
    conformations, references, with_14 = [], [], []
    while len(conformations) < 6:
        positions = np.empty((14, 3))
        for c in range(2):
            walk = [np.array([2.0, 2.0, 2.0]), np.array([2.154, 2.0, 2.0])]
            walk.append(pe._place(walk[0] + rng.normal(size=3), walk[0], walk[1], np.array([rng.uniform(-3, 3)]))[0])
            for _k in range(4):
                walk.append(pe._place(walk[-3], walk[-2], walk[-1], np.array([rng.choice([-1.13, 1.13, math.pi])]))[0])
            positions[7 * c : 7 * c + 7] = walk
        positions[7:] += 0.65 * _unit(rng)
        gaps = np.linalg.norm(positions[:7, None] - positions[None, 7:], axis=-1)
        if gaps.min() < 0.3:
            continue
        conformations.append(positions)
        references.append(lennard_jones_reference(positions, types, chain_of, index_in_chain, 1.4))
        with_14.append(lennard_jones_reference(positions, types, chain_of, index_in_chain, 1.4, excluded=2))
    openmm_energies = energies(system, conformations, GROUPS["nonbonded"])
    np.testing.assert_allclose(openmm_energies, references, rtol=1e-9, atol=1e-9)
    assert np.all(np.abs(np.array(with_14) - openmm_energies) > 0.5)  # the check can tell 1-4 in from out

    def end_to_end_contact_energy(chain_length):
        """Nonbonded energy of a stretched chain whose two ends are put 0.2 nm apart."""
        chain = pe.trappe_system(pe.polyethylene_topology(1, chain_length), BIG_BOX, dispersion_correction=False)
        pos = 0.2 + np.arange(chain_length)[:, None] * np.array([[0.5, 0.0, 0.0]])
        pos[-1] = pos[0] + np.array([0.0, 0.2, 0.0])
        return group_energy(chain, pos, GROUPS["nonbonded"])

    assert end_to_end_contact_energy(4) == 0.0  # the ends of butane are 1-4
    assert end_to_end_contact_energy(5) > 10.0  # the ends of pentane are 1-5


def test_dispersion_correction_equals_analytic_tail_formula():
    topology = pe.polyethylene_topology(20, 12)
    box = np.eye(3) * 3.2
    with_tail = pe.trappe_system(topology, box)
    without = pe.trappe_system(topology, box, dispersion_correction=False)
    positions = np.random.default_rng(6).uniform(0, 3.2, (240, 3))
    e_tail = group_energy(with_tail, positions, GROUPS["nonbonded"], "CPU") - group_energy(without, positions, GROUPS["nonbonded"], "CPU")
    # Allen & Tildesley: U_tail = (2 pi / V) sum_ab N_a N_b 4 eps_ab [sigma^12 / (9 rc^9) - sigma^6 / (3 rc^3)]
    rc, volume = 1.4, 3.2**3
    counts = {"CH3": 40, "CH2": 200}
    expected = 0.0
    for a in counts:
        for b in counts:
            eps = math.sqrt(PUBLISHED[a][0] * PUBLISHED[b][0]) * KB
            sigma = 0.5 * (PUBLISHED[a][1] + PUBLISHED[b][1]) / 10
            expected += counts[a] * counts[b] * 4 * eps * (sigma**12 / (9 * rc**9) - sigma**6 / (3 * rc**3))
    expected *= 2 * math.pi / volume
    assert e_tail < 0
    assert e_tail == pytest.approx(expected, rel=1e-3)  # agrees to ~3e-5 (CPU platform, single precision)


def test_cutoff_and_argument_errors_are_clear():
    topology = pe.polyethylene_topology(1, 4)
    with pytest.raises(ValueError, match="half the box"):
        pe.trappe_system(topology, np.eye(3) * 2.8)  # 1.4 nm cutoff needs > 2.8 nm
    pe.trappe_system(topology, np.eye(3) * 2.81)
    with pytest.raises(ValueError, match="smaller cutoff_nm"):
        pe.build_melt(4, 12)  # a ~1.1 nm box with the published 1.4 nm cutoff
    with pytest.raises(ValueError, match="chain_length"):
        pe.build_melt(4, 1, cutoff_nm=0.4)
    with pytest.raises(ValueError, match="num_chains"):
        pe.build_melt(0, 12, cutoff_nm=0.4)
    with pytest.raises(ValueError, match="kg/m"):
        pe.build_melt(4, 12, density_g_cm3=750.0, cutoff_nm=0.4)
    with pytest.raises(ValueError, match="periodic"):
        pe.trappe_system(topology)


def test_default_density_estimate_matches_experimental_alkane_densities():
    # experimental liquid densities at 298.15 K (g/cm^3); the estimate was fitted to these
    assert pe.estimate_melt_density_g_cm3(16, 298.15) == pytest.approx(0.770, rel=0.01)
    assert pe.estimate_melt_density_g_cm3(12, 298.15) == pytest.approx(0.745, rel=0.01)
    assert 0.74 < pe.estimate_melt_density_g_cm3(2000, 450.0) < 0.78  # long-chain PE melt


def test_build_melt_density_overlaps_bonds_and_short_md():
    num_chains, length = 4, 12
    topology, positions, box, system = pe.build_melt(num_chains, length, density_g_cm3=0.70, temperature_K=450, cutoff_nm=0.55, seed=2)
    assert positions.shape == (48, 3) and box.shape == (3, 3)
    np.testing.assert_allclose(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer), box)
    mass_amu = num_chains * (2 * 15.035 + (length - 2) * 14.027)
    density = mass_amu * 1.66053906660e-24 / (np.linalg.det(box) * 1e-21)  # g / cm^3
    assert density == pytest.approx(0.70, rel=1e-9)
    assert pe.mass_density_g_cm3(system, box) == pytest.approx(0.70, rel=1e-9)

    chain_of = np.repeat(np.arange(num_chains), length)
    edge = box[0, 0]

    def check(pos):
        delta = pos[:, None] - pos[None]
        delta -= edge * np.round(delta / edge)
        r = np.linalg.norm(delta, axis=-1)
        inter = chain_of[:, None] != chain_of[None]
        assert r[inter].min() > 0.3
        i = np.arange(len(pos) - 1)
        bonded = (i + 1) % length != 0
        bond = np.linalg.norm(pos[i + 1] - pos[i], axis=1)[bonded]
        assert np.all(np.abs(bond - 0.154) < 0.05 * 0.154)

    check(positions)
    integrator = openmm.LangevinMiddleIntegrator(450 * unit.kelvin, 5.0 / unit.picosecond, 0.001 * unit.picosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(450 * unit.kelvin, 1)
    integrator.step(200)
    state = context.getState(getPositions=True, getForces=True, getEnergy=True)
    moved = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.all(np.isfinite(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    i = np.arange(len(moved) - 1)
    bond = np.linalg.norm(moved[i + 1] - moved[i], axis=1)[(i + 1) % length != 0]
    # thermal bonds: each within 5 of the force field's own rms fluctuations (0.003 nm at 450 K;
    # "within 5 % of 0.154", 2.6 of them, failed for one of 44 bonds when the trajectory changed
    # with the thread count), and their spread about that size
    sigma = pe.BOND_RMS_FLUCTUATION_NM
    assert np.all(np.abs(bond - 0.154) < 5 * sigma)
    assert 0.3 * sigma < np.sqrt(np.mean((bond - 0.154) ** 2)) < 2.0 * sigma
    assert np.abs(moved - positions).max() > 0.01  # it did move
