"""Tests of multiscale.cg.analysis: divergences, RDFs, chain sizes, density and the report (nm, rad, amu)."""

from __future__ import annotations

import json
import math

import mdtraj as md
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from multiscale.cg import analysis as cga


# ----------------------------------------------------------------------------- builders


def chain_topology(chain_lengths, end="E", middle="M"):
    """Linear chains (one topology chain each), beads named ``end`` at chain ends and ``middle``
    inside, virtual element, bonds between consecutive beads."""
    top = md.Topology()
    for n in chain_lengths:
        chain = top.add_chain()
        previous = None
        for k in range(n):
            name = end if k in (0, n - 1) else middle
            atom = top.add_atom(name, md.element.virtual, top.add_residue(name, chain))
            if previous is not None:
                top.add_bond(previous, atom)
            previous = atom
    return top


def trajectory(xyz, top, box=None, angles=(90.0, 90.0, 90.0)):
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if box is None:
        return md.Trajectory(xyz, top)
    n = xyz.shape[0]
    lengths = np.tile(np.asarray(box, dtype=np.float32).reshape(1, 3), (n, 1))
    return md.Trajectory(xyz, top, unitcell_lengths=lengths, unitcell_angles=np.tile(np.float32(angles), (n, 1)))


def random_walk_melt(n_chains=6, n_beads=8, n_frames=6, box=3.0, bond=0.3, seed=0):
    """Freely jointed chains (bond ``bond`` nm) with random starts, stored wrapped into the box."""
    rng = np.random.default_rng(seed)
    xyz = np.empty((n_frames, n_chains * n_beads, 3))
    for f in range(n_frames):
        for c in range(n_chains):
            steps = rng.normal(size=(n_beads - 1, 3))
            steps *= bond / np.linalg.norm(steps, axis=1, keepdims=True)
            start = rng.random(3) * box
            xyz[f, c * n_beads:(c + 1) * n_beads] = start + np.vstack([np.zeros(3), np.cumsum(steps, axis=0)])
    return trajectory(np.mod(xyz, box), chain_topology([n_beads] * n_chains), box=(box, box, box))


def rod(n, spacing, direction=(1.0, 0.0, 0.0), start=(0.0, 0.0, 0.0)):
    d = np.asarray(direction, dtype=float)
    d /= np.linalg.norm(d)
    return np.asarray(start, dtype=float) + spacing * np.arange(n)[:, None] * d


# ----------------------------------------------------------------------------- Jensen–Shannon


def test_jensen_shannon_matches_scipy_including_empty_bins():
    rng = np.random.default_rng(1)
    for _ in range(5):
        p, q = rng.random(20), rng.random(20)
        p[rng.integers(0, 20, 4)] = 0.0  # empty bins on either side
        q[rng.integers(0, 20, 4)] = 0.0
        expected = jensenshannon(p, q, base=2) ** 2  # scipy returns the distance sqrt(JSD)
        assert cga.jensen_shannon(p, q) == pytest.approx(expected, rel=1e-10, abs=1e-14)
        assert cga.jensen_shannon(10 * p, q) == pytest.approx(expected, rel=1e-10, abs=1e-14)  # counts work too


def test_jensen_shannon_identical_zero_disjoint_one_and_errors():
    rng = np.random.default_rng(2)
    sample = rng.normal(size=5000)
    edges = np.linspace(-5, 5, 51)
    h = np.histogram(sample, edges)[0]
    assert cga.jensen_shannon(h, h) == pytest.approx(0.0, abs=1e-15)
    assert cga.jensen_shannon([1, 2, 0, 0], [0, 0, 3, 1]) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="same bins"):
        cga.jensen_shannon([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        cga.jensen_shannon([0, 0], [1, 2])
    with pytest.raises(ValueError, match="non-negative"):
        cga.jensen_shannon([-1, 2], [1, 2])


def test_jensen_shannon_noise_floor_formula():
    """Two independent samples of one distribution: JSD ≈ (K − 1)/(4 N ln 2) on average (docstring)."""
    rng = np.random.default_rng(3)
    n, k = 4000, 20
    edges = np.linspace(0, 1, k + 1)
    values = [cga.jensen_shannon(np.histogram(rng.random(n), edges)[0], np.histogram(rng.random(n), edges)[0])
              for _ in range(200)]
    assert np.mean(values) == pytest.approx((k - 1) / (4 * n * math.log(2)), rel=0.15)


# ----------------------------------------------------------------------------- bonded distributions


def test_bonded_terms_and_types_of_a_linear_chain():
    top = chain_topology([5])
    bonds, angles, dihedrals = cga.bonded_terms(top)
    assert bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert angles.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert dihedrals.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    values = cga.bonded_values(trajectory(rod(5, 0.3), top, box=(4, 4, 4)))
    assert sorted(values["bond"]) == [("E", "M"), ("M", "M")]  # (M, E) at the far end is type (E, M)
    assert values["bond"][("E", "M")].size == 2
    assert sorted(values["angle"]) == [("E", "M", "M"), ("M", "M", "M")]
    assert sorted(values["dihedral"]) == [("E", "M", "M", "M")]
    with pytest.raises(ValueError, match="one type per bead"):
        cga.bonded_values(trajectory(rod(5, 0.3), top), types=["A"] * 4)


def test_bonded_values_use_minimum_image_for_a_wrapped_zigzag():
    box = 2.0
    zigzag = np.array([[0.0, 0.0, 0.0], [0.3, 0.2, 0.0], [0.6, 0.0, 0.0], [0.9, 0.2, 0.0], [1.2, 0.0, 0.1]])
    top = chain_topology([5])
    inside = cga.bonded_values(trajectory(zigzag + 0.5, top, box=(box,) * 3))
    shifted = zigzag + np.array([1.6, 1.9, 1.95])  # crosses x = 2, y = 2 and z = 2
    wrapped = cga.bonded_values(trajectory(np.mod(shifted, box), top, box=(box,) * 3))
    for kind in cga.BONDED_KINDS:
        for key in inside[kind]:
            np.testing.assert_allclose(wrapped[kind][key], inside[kind][key], atol=1e-5)
    np.testing.assert_allclose(inside["bond"][("E", "M")], [math.hypot(0.3, 0.2), math.sqrt(0.14)], atol=1e-6)


def test_bonded_distributions_are_normalised_densities():
    traj = random_walk_melt()
    dists = cga.bonded_distributions(traj, bins={"bond": 10, "angle": 18, "dihedral": 36})
    for kind, per_type in dists.items():
        for density, edges in per_type.values():
            assert np.sum(density * np.diff(edges)) == pytest.approx(1.0)
    assert dists["angle"][("M", "M", "M")][1][[0, -1]] == pytest.approx([0.0, math.pi])
    assert dists["dihedral"][("M", "M", "M", "M")][1][[0, -1]] == pytest.approx([-math.pi, math.pi])


def test_compare_bonded_identical_is_zero_and_different_is_positive():
    ref = random_walk_melt(seed=4)
    result = cga.compare_bonded(ref, ref)
    for kind in cga.BONDED_KINDS:
        assert result["per_kind"][kind] == pytest.approx(0.0, abs=1e-12)
        assert all(v == pytest.approx(0.0, abs=1e-12) for v in result["per_type"][kind].values())
    assert result["n_terms"]["bond"] == {("E", "M"): 12, ("M", "M"): 30}
    stretched = md.Trajectory(ref.xyz * 1.3, ref.topology, unitcell_lengths=ref.unitcell_lengths * 1.3,
                          unitcell_angles=ref.unitcell_angles)
    different = cga.compare_bonded(ref, stretched)
    assert different["per_kind"]["bond"] > 0.9  # bond lengths 0.3 vs 0.39 nm: disjoint histograms
    assert different["per_kind"]["angle"] == pytest.approx(0.0, abs=1e-12)  # scaling keeps angles


def test_compare_bonded_reports_the_reference_half_against_half_floor():
    ref = random_walk_melt(seed=4)
    stretched = md.Trajectory(ref.xyz * 1.3, ref.topology, unitcell_lengths=ref.unitcell_lengths * 1.3,
                              unitcell_angles=ref.unitcell_angles)
    # a reference whose second half is the first stretched: its halves disagree as much as the
    # two trajectories do, whatever the CG trajectory
    drifting = md.join([ref, stretched])
    result = cga.compare_bonded(drifting, drifting)
    assert result["reference_halves"]["bond"][("M", "M")] == pytest.approx(
        cga.compare_bonded(ref, stretched)["per_type"]["bond"][("M", "M")], abs=0.02)
    assert result["reference_halves"]["bond"][("M", "M")] > 0.9
    assert result["reference_halves"]["angle"][("M", "M", "M")] == pytest.approx(0.0, abs=1e-12)
    # a reference made of one trajectory twice: identical halves, a zero floor
    doubled = cga.compare_bonded(md.join([ref, ref]), stretched)
    assert all(v == pytest.approx(0.0, abs=1e-12) for kind in doubled["reference_halves"].values() for v in kind.values())
    # one frame has no halves
    single = cga.compare_bonded(ref[0], ref[0])
    assert all(v is None for kind in single["reference_halves"].values() for v in kind.values())


# ----------------------------------------------------------------------------- RDF


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(5)
    n, box, frames = 200, 3.0, 40
    top = chain_topology([1] * n, end="A")
    for atom in list(top.atoms)[::2]:
        atom.name = "B"
    traj = trajectory(rng.random((frames, n, 3)) * box, top, box=(box,) * 3)
    for a, b in (("A", "A"), ("A", "B")):
        r, g = cga.rdf(traj, a, b, r_range=(0.0, 1.5), bins=30)
        assert r[0] == pytest.approx(0.025) and r.shape == g.shape == (30,)
        far = r > 0.4
        assert np.all(np.abs(g[far] - 1.0) < 0.12), g[far]
        assert np.mean(g[far]) == pytest.approx(1.0, abs=0.03)
        _, g_chunked = cga.rdf(traj, a, b, r_range=(0.0, 1.5), bins=30, max_distances=5000)
        np.testing.assert_allclose(g_chunked, g, rtol=1e-10)


def test_rdf_chunking_matches_mdtraj_and_intermolecular_normalisation():
    rng = np.random.default_rng(6)
    box, frames = 2.5, 30
    top = chain_topology([2] * 60, end="A")  # ideal-gas "dimers": bonded pairs excluded, g still -> 1
    traj = trajectory(rng.random((frames, 120, 3)) * box, top, box=(box,) * 3)
    pairs = cga.rdf_pairs(top, "A", "A")
    assert len(pairs) == 120 * 119 // 2 - 60
    r, g = cga.rdf(traj, "A", "A", r_range=(0, 1.2), bins=24)
    r_md, g_md = md.compute_rdf(traj, pairs, r_range=(0, 1.2), n_bins=24)
    np.testing.assert_allclose(r, r_md)
    np.testing.assert_allclose(g, g_md, rtol=1e-10)
    _, g_chunked = cga.rdf(traj, "A", "A", r_range=(0, 1.2), bins=24, max_distances=1000)
    np.testing.assert_allclose(g_chunked, g, rtol=1e-10)
    assert np.mean(g[r > 0.4]) == pytest.approx(1.0, abs=0.03)


def test_rdf_pair_exclusions_and_errors():
    top = chain_topology([4, 4])
    assert len(cga.rdf_pairs(top, "M", "M", exclude=0)) == 6
    assert len(cga.rdf_pairs(top, "M", "M", exclude=1)) == 4  # drops M1-M2 of each chain
    assert len(cga.rdf_pairs(top, "M", "M")) == 4  # intermolecular only
    assert len(cga.rdf_pairs(top, "E", "M", exclude=2)) == 8  # every E-M pair in a chain is 1-2 or 1-3
    with pytest.raises(ValueError, match="types present"):
        cga.rdf_pairs(top, "X", "M")
    traj = trajectory(np.random.default_rng(0).random((2, 8, 3)) * 2.0, top, box=(2.0,) * 3)
    with pytest.raises(ValueError, match="half the smallest box width"):
        cga.rdf(traj, "M", "M", r_range=(0.0, 1.2))
    single = trajectory(rod(4, 0.3), chain_topology([4]), box=(2.0,) * 3)
    with pytest.raises(ValueError, match="exclude=2 or 3"):
        cga.rdf(single, "M", "M")
    with pytest.raises(ValueError, match="unit cell"):
        cga.rdf(trajectory(rod(4, 0.3), chain_topology([4])), "E", "M")


def test_rdf_difference_metrics():
    r = np.linspace(0.005, 0.995, 100)
    g_ref = np.ones(100)
    same = cga.rdf_difference(r, g_ref, g_ref)
    assert same == {"abs_integral_ratio": 0.0, "rms": 0.0}
    shifted = cga.rdf_difference(r, g_ref, g_ref + 0.1)
    assert shifted["abs_integral_ratio"] == pytest.approx(0.1)
    assert shifted["rms"] == pytest.approx(0.1)


# ----------------------------------------------------------------------------- chains and density


def rod_rg(n, spacing):
    """Exact Rg of n equal masses at spacing b on a line: Rg² = (1/n) Σ_k (k − (n−1)/2)² b²
    = b² (n² − 1)/12, i.e. Rg = L sqrt((n + 1)/(12 (n − 1))) with L = (n − 1) b (→ L/√12 for n → ∞)."""
    return spacing * math.sqrt((n * n - 1) / 12.0)


def test_radius_of_gyration_and_end_to_end_of_a_rod():
    n, b = 10, 0.25
    length = (n - 1) * b
    traj = trajectory(rod(n, b, direction=(1, 2, 2), start=(1, 1, 1)), chain_topology([n]), box=(5.0,) * 3)
    rg = cga.radius_of_gyration_per_chain(traj, np.ones(n))
    assert rg.shape == (1, 1)
    assert rg[0, 0] == pytest.approx(rod_rg(n, b), rel=1e-6)
    assert rg[0, 0] == pytest.approx(length * math.sqrt((n + 1) / (12 * (n - 1))), rel=1e-6)
    assert cga.end_to_end_distance(traj)[0, 0] == pytest.approx(length, rel=1e-6)
    # masses by type give the same answer for equal masses; unequal masses: dumbbell formula
    assert cga.radius_of_gyration_per_chain(traj, {"E": 12.0, "M": 12.0})[0, 0] == pytest.approx(rod_rg(n, b), rel=1e-6)
    dumbbell = trajectory(rod(2, 0.4), chain_topology([2]), box=(3.0,) * 3)
    m1, m2 = 1.0, 3.0
    expected = 0.4 * math.sqrt(m1 * m2) / (m1 + m2)
    assert cga.radius_of_gyration_per_chain(dumbbell, [m1, m2])[0, 0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("angles", [(90.0, 90.0, 90.0), (70.0, 80.0, 60.0)])
def test_chain_properties_are_unchanged_across_the_periodic_boundary(angles):
    n, b = 10, 0.25
    length = (n - 1) * b  # 2.25 nm: longer than half the box, so minimum-image end-to-end would fail
    lengths = (3.0, 3.0, 3.0)
    top = chain_topology([n, n])
    inside = np.vstack([rod(n, b, direction=(1, 0.3, 0.2), start=(0.2, 0.2, 0.5)),
                        rod(n, b, direction=(0.2, 1, 0.1), start=(0.5, 0.1, 0.2))])
    ref = trajectory(inside, top, box=lengths, angles=angles)
    frames = []
    vectors = ref.unitcell_vectors[0].astype(float)  # rows a, b, c
    for shift in np.linspace(0.0, 1.0, 7):
        moved = inside + shift * (vectors[0] + 0.7 * vectors[1] + 0.4 * vectors[2])
        fractional = np.linalg.solve(vectors.T, moved.T).T
        frames.append(np.mod(fractional, 1.0) @ vectors)  # wrapped into the cell
    wrapped = trajectory(np.array(frames), top, box=lengths, angles=angles)
    assert np.ptp(wrapped.xyz[3, :n, 0]) > 2.0 or np.ptp(wrapped.xyz[3, :n, 1]) > 2.0  # really broken apart
    rg_ref = cga.radius_of_gyration_per_chain(ref, np.ones(2 * n))[0]
    rg = cga.radius_of_gyration_per_chain(wrapped, np.ones(2 * n))
    np.testing.assert_allclose(rg, np.tile(rg_ref, (7, 1)), rtol=1e-5)
    np.testing.assert_allclose(rg_ref, rod_rg(n, b), rtol=1e-5)
    np.testing.assert_allclose(cga.end_to_end_distance(wrapped), length, rtol=1e-5)
    whole = cga.make_chains_whole(wrapped)
    np.testing.assert_allclose(np.linalg.norm(np.diff(whole[:, :n], axis=1), axis=-1), b, rtol=1e-5)


def test_chain_errors_name_the_fix():
    top = chain_topology([3])
    top.add_atom("E", md.element.virtual, top.add_residue("E", top.chain(0)))  # unbonded bead in chain 0
    traj = trajectory(np.random.default_rng(0).random((1, 4, 3)), top, box=(2.0,) * 3)
    with pytest.raises(ValueError, match="not connected by bonds"):
        cga.radius_of_gyration_per_chain(traj, np.ones(4))
    good = trajectory(rod(3, 0.3), chain_topology([3]), box=(2.0,) * 3)
    with pytest.raises(ValueError, match="3 beads"):
        cga.radius_of_gyration_per_chain(good, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"no mass for bead types \['M'\]"):
        cga.radius_of_gyration_per_chain(good, {"E": 1.0})


def test_density_unit_conversion():
    # the constant from Avogadro's number agrees with the CODATA 2018 dalton, 1.66053906660e-24 g
    assert cga.AMU_PER_NM3_TO_G_PER_CM3 == pytest.approx(1.66053906660e-24 / 1e-21, rel=1e-9)
    assert cga.AMU_PER_NM3_TO_G_PER_CM3 == pytest.approx(1.0 / 6.02214076e23 * 1e21, rel=1e-15)
    n, box = 100, 2.0
    masses = np.full(n, 18.01528)
    traj = trajectory(np.random.default_rng(0).random((3, n, 3)) * box, chain_topology([1] * n), box=(box,) * 3)
    rho = cga.density(traj, masses)
    expected = n * 18.01528 / 6.02214076e23 / (box * 1e-7) ** 3  # g / cm³, 1 nm = 1e-7 cm
    np.testing.assert_allclose(rho, expected, rtol=1e-12)
    # water sanity: 33.4 molecules/nm³ is 1.0 g/cm³
    water = trajectory(np.zeros((1, 1, 3)), chain_topology([1]), box=(1.0, 1.0, 1.0 / 33.4277))
    assert cga.density(water, [18.01528])[0] == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="unit cell"):
        cga.density(trajectory(np.zeros((1, 1, 3)), chain_topology([1])), [1.0])


def test_block_sem():
    x = np.array([1.0, 3.0] * 10)
    assert cga.block_sem(x, n_blocks=10) == pytest.approx(0.0)
    assert math.isnan(cga.block_sem([1.0]))
    y = np.repeat(np.arange(4.0), 5)  # 4 blocks of means 0..3
    assert cga.block_sem(y, n_blocks=4) == pytest.approx(np.std(np.arange(4.0), ddof=1) / 2)


def _ar1(phi: float, n: int, realisations: int, rng) -> np.ndarray:
    """AR(1) series x_t = phi x_(t-1) + e_t, started in its stationary distribution."""
    x = np.empty((realisations, n))
    x[:, 0] = rng.normal(size=realisations) / math.sqrt(1.0 - phi ** 2)
    noise = rng.normal(size=(realisations, n))
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


def test_statistical_inefficiency_and_correlated_sem_against_an_ar1_process():
    rng = np.random.default_rng(7)
    # theory: g = (1 + phi) / (1 - phi) for AR(1); 19 at phi = 0.9, 1 for white noise
    assert cga.statistical_inefficiency(_ar1(0.9, 200_000, 1, rng)[0]) == pytest.approx(19.0, rel=0.1)
    assert cga.statistical_inefficiency(rng.normal(size=20_000)) == pytest.approx(1.0, abs=0.1)
    assert cga.statistical_inefficiency(np.full(50, 2.5)) == 1.0
    assert cga.correlated_sem(np.full(50, 2.5)) == 0.0
    # a run only ~10 correlation times long (g ~ 200 of 2000 samples), as a small bilayer's area:
    # against the spread of the means of 400 independent runs, ten blocks understate the error
    # more than the autocorrelation estimate does
    runs = _ar1(0.99, 2000, 400, rng)
    spread = runs.mean(axis=1).std(ddof=1)
    correlated = np.median([cga.correlated_sem(r) for r in runs]) / spread
    blocks = np.median([cga.block_sem(r) for r in runs]) / spread
    assert 0.7 < correlated < 1.2
    assert blocks < correlated - 0.05


# ----------------------------------------------------------------------------- report


def test_validation_report_identical_and_perturbed(tmp_path):
    ref = random_walk_melt(n_chains=6, n_beads=8, n_frames=6, seed=7)
    masses = {"E": 15.035, "M": 14.027}
    report = cga.validation_report(ref, ref, masses, out_dir=tmp_path / "same", speedup=12.5,
                                   extra={"model": "test", "steps": 100}, rdf_bins=30)
    written = sorted(p.name for p in (tmp_path / "same").iterdir())
    assert "report.json" in written and "report.md" in written
    assert {"bonded_bond.png", "bonded_angle.png", "bonded_dihedral.png", "rdf.png", "chains.png"} <= set(written)
    assert not [name for name in written if name.endswith(".tmp")]
    on_disk = json.loads((tmp_path / "same" / "report.json").read_text())
    assert on_disk == report
    for key in ("system", "bonded", "rdf", "radius_of_gyration", "end_to_end", "density", "speedup", "extra",
                "settings", "files"):
        assert key in report
    assert set(report["bonded"]["per_type"]["bond"]) == {"E-M", "M-M"}
    assert set(report["rdf"]["per_pair"]) == {"E-E", "E-M", "M-M"}
    assert all(v == 0.0 for kind in report["bonded"]["per_type"].values() for v in kind.values())
    assert all(v["rms"] == 0.0 for v in report["rdf"]["per_pair"].values())
    for key in ("radius_of_gyration", "end_to_end"):
        block = report[key]
        assert block["relative_difference_percent"] == 0.0
        assert len(block["ref"]["per_chain_mean"]) == 6 and block["ref"]["sem"] is not None
        assert block["ref"]["mean"] == pytest.approx(block["cg"]["mean"])
        assert block["jsd"] == 0.0  # identical distributions
        assert block["jsd_reference_halves"] > 0.0  # 3 frames against 3 of a random walk: a noise floor
    # chain pairs of the 8-bead chains: 1-4, 1-5 and 1-6 distances per type pair (E ends, M middles)
    assert set(report["chain_pairs"]) == {"1-4 E-M", "1-4 M-M", "1-5 E-M", "1-5 M-M", "1-6 E-M", "1-6 M-M"}
    assert all(v["jsd"] == 0.0 and v["relative_difference_percent"] == 0.0 for v in report["chain_pairs"].values())
    assert report["density"]["relative_difference_percent"] == 0.0
    assert report["density"]["reference"] == report["density"]["cg"] == pytest.approx(
        (12 * 15.035 + 36 * 14.027) / 27.0 * cga.AMU_PER_NM3_TO_G_PER_CM3)
    assert report["speedup"] == 12.5 and report["extra"] == {"model": "test", "steps": 100}
    markdown = (tmp_path / "same" / "report.md").read_text()
    assert "| bond | E-M |" in markdown and "Rg (nm)" in markdown and "12.5" in markdown

    # a CG run with every length 10 % longer: Rg, end-to-end +10 %, density −24.9 %, bonds differ
    cg = md.Trajectory(ref.xyz * 1.1, ref.topology, unitcell_lengths=ref.unitcell_lengths * 1.1,
                          unitcell_angles=ref.unitcell_angles)
    scaled = cga.validation_report(ref, cg, masses, out_dir=tmp_path / "scaled", rdf_bins=30)
    assert scaled["radius_of_gyration"]["relative_difference_percent"] == pytest.approx(10.0, abs=1e-3)
    assert scaled["end_to_end"]["relative_difference_percent"] == pytest.approx(10.0, abs=1e-3)
    assert scaled["radius_of_gyration"]["jsd"] > 0.05 and scaled["end_to_end"]["jsd"] > 0.05
    for v in scaled["chain_pairs"].values():
        assert v["relative_difference_percent"] == pytest.approx(10.0, abs=1e-3) and v["jsd"] > 0.02
    assert "## Chain pairs" in (tmp_path / "scaled" / "report.md").read_text()
    assert "distribution JSD" in (tmp_path / "scaled" / "report.md").read_text()
    assert "reference half against half" in (tmp_path / "scaled" / "report.md").read_text()
    # the noise floor is the reference's own: a reference made of two identical halves has none,
    # and one whose second half is the stretched copy has the stretched copy's divergence
    doubled = md.join([ref, ref])
    assert cga.validation_report(doubled, cg, masses, out_dir=tmp_path / "doubled",
                                 rdf_bins=30)["radius_of_gyration"]["jsd_reference_halves"] == 0.0
    drifting = md.join([ref, cg])
    floor = cga.validation_report(drifting, ref, masses, out_dir=tmp_path / "drifting", rdf_bins=30)
    assert floor["radius_of_gyration"]["jsd_reference_halves"] == pytest.approx(scaled["radius_of_gyration"]["jsd"])
    assert scaled["density"]["relative_difference_percent"] == pytest.approx(100 * (1 / 1.331 - 1), abs=1e-3)
    assert scaled["bonded"]["per_kind"]["bond"] > 0.5
    assert scaled["speedup"] is None

    # density from a separate (NPT) run: structure from the identical run, density from the scaled one
    split = cga.validation_report(ref, ref, masses, out_dir=tmp_path / "npt", rdf_bins=30, density_traj=cg)
    assert split["bonded"]["per_kind"]["bond"] == 0.0
    assert split["density"]["relative_difference_percent"] == pytest.approx(100 * (1 / 1.331 - 1), abs=1e-3)
    assert split["density"]["cg_source"] == "density_traj" and split["density"]["cg_frames"] == cg.n_frames
    assert "separate NPT run" in (tmp_path / "npt" / "report.md").read_text()
    with pytest.raises(ValueError, match="same bead topology"):
        cga.validation_report(ref, ref, masses, out_dir=tmp_path / "bad", density_traj=random_walk_melt(n_chains=2, n_beads=5))


def test_validation_report_refuses_different_topologies(tmp_path):
    ref = random_walk_melt(n_chains=2, n_beads=5, n_frames=2)
    other = random_walk_melt(n_chains=2, n_beads=4, n_frames=2)
    with pytest.raises(ValueError, match="same bead topology"):
        cga.validation_report(ref, other, np.ones(10), out_dir=tmp_path)
    with pytest.raises(ValueError, match="speedup"):
        cga.validation_report(ref, ref, np.ones(10), out_dir=tmp_path, speedup=-1)
    with pytest.raises(TypeError, match="JSON"):
        cga.validation_report(ref, ref, np.ones(10), out_dir=tmp_path, extra={"bad": object()})
