"""Iterative Boltzmann inversion of the pair tables: the pair counts it compares (against mdtraj's
own distances), the step it takes (against the analytic ΔU), and rounds in OpenMM that bring a
perturbed model's packing back to the reference's."""

import mdtraj
import numpy as np
import openmm
import pytest

import multiscale  # noqa: F401
from multiscale.cg.analysis import PairCounts, bonded_values, pair_counts
from multiscale.cg.priors.contacts import excluded_pairs
from multiscale.cg.tabulated import Table, TabulatedModel, refine_pairs
from multiscale.cg.tabulated.pair_refinement import gaussian_smooth
from multiscale.units import kT

T = 300.0


def _chains(n_chains=6, length=5, box=2.6, frames=4, seed=0):
    rng = np.random.default_rng(seed)
    n = n_chains * length
    types = (["A", "B", "B", "B", "A"] * n_chains)[:n]
    bonds = np.array([(c * length + k, c * length + k + 1) for c in range(n_chains) for k in range(length - 1)])
    top = mdtraj.Topology()
    for c in range(n_chains):
        residue = top.add_residue("CHN", top.add_chain())
        for k in range(length):
            top.add_atom(types[c * length + k], mdtraj.element.virtual, residue)
    for i, j in bonds:
        top.add_bond(top.atom(int(i)), top.atom(int(j)))
    xyz = rng.uniform(0, box, size=(frames, n, 3)).astype(np.float32)
    traj = mdtraj.Trajectory(xyz, top)
    traj.unitcell_vectors = np.repeat(np.diag([box, box * 1.1, box * 0.95])[None], frames, axis=0).astype(np.float32)
    return traj, types, bonds


def test_pair_counts_are_the_histogram_of_mdtrajs_minimum_image_distances():
    traj, types, bonds = _chains()
    cutoff, spacing = 1.0, 0.05
    counts = pair_counts(traj, bonds, cutoff_nm=cutoff, spacing_nm=spacing, exclusion="1-3", types=types)
    np.testing.assert_allclose(counts.r[-1], cutoff)
    np.testing.assert_allclose(np.diff(counts.r), spacing)
    n = traj.n_atoms
    excluded = {tuple(p) for p in excluded_pairs(n, bonds, "1-3").tolist()}
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in excluded])
    d = mdtraj.compute_distances(traj, pairs, periodic=True)
    edges = np.concatenate([counts.r - spacing / 2, [cutoff + spacing / 2]])
    total = 0
    for key in (("A", "A"), ("A", "B"), ("B", "B")):
        mine = np.array([tuple(sorted((types[i], types[j]))) == key for i, j in pairs])
        values = d[:, mine].ravel()
        expected = np.histogram(values[values < cutoff], edges)[0]
        np.testing.assert_array_equal(counts.counts[key], expected)
        total += expected.sum()
    assert total > 100  # the check compared real pairs
    assert counts.frames == traj.n_frames
    np.testing.assert_allclose(counts.per_frame(("A", "B")), counts.counts[("A", "B")] / traj.n_frames)
    with pytest.raises(ValueError, match="spacing"):
        pair_counts(traj, bonds, cutoff_nm=cutoff, spacing_nm=0.5, types=types)


def _model(knots, force):
    return TabulatedModel({("A", "A"): Table("pair", knots, force, 500.0, samples=1000)}, {}, {}, {}, "1-3",
                          float(knots[-1]), T, {})


def test_the_step_is_minus_the_gradient_of_kT_log_of_the_count_ratio():
    """cg counts = ref counts × exp(ΔU/kT) for a known bump ΔU(r): the table's force moves by
    −damping × dΔU/dr where both runs count enough pairs, not at all where they do not, and not
    at the cutoff; equal counts leave the table alone."""
    spacing, cutoff = 0.02, 1.2
    r = cutoff - spacing * np.arange(int(round(cutoff / spacing)))[::-1]
    a, centre, width = 1.5, 0.6, 0.08
    delta_u = a * np.exp(-0.5 * ((r - centre) / width) ** 2)
    n_ref = np.where(r > 0.35, 2e5 * r ** 2, 0.0)
    n_ref[(r > 0.35) & (r < 0.42)] = 10.0  # too few to trust
    ref = PairCounts(r, spacing, {("A", "A"): n_ref}, frames=100)
    cg = PairCounts(r, spacing, {("A", "A"): n_ref * np.exp(delta_u / kT(T))}, frames=100)
    knots = r[r >= 0.36]
    force = 24.0 * (knots ** -13 * 0.35 ** 12 - 0.5 * knots ** -7 * 0.35 ** 6)
    force[-1] = 0.0
    model = _model(knots, force)

    refined = refine_pairs(model, ref, cg, temperature_K=T, damping=0.5)
    step = refined.pairs[("A", "A")].force - force
    analytic = -0.5 * np.interp(knots, r, -(r - centre) / width ** 2 * delta_u)
    inside = (knots > 0.45) & (knots < cutoff - spacing)
    np.testing.assert_allclose(step[inside], analytic[inside], atol=0.03 * np.abs(analytic).max())
    assert np.all(step[knots < 0.42] == 0.0)
    assert step[-1] == 0.0
    record = refined.fit["pair_refinements"]
    assert record["count"] == 1
    assert record["max_abs_delta_u_kj_mol"]["A-A"] == pytest.approx(a, rel=0.02)

    # smoothed steps: the step above averaged with Gaussian weights over the knots (untrusted knots
    # and the cutoff still untouched), which for a Gaussian bump of width w is the derivative of the
    # bump widened to sqrt(w² + s²) with its area kept (the convolution, in closed form)
    s = 0.05
    smooth = refine_pairs(model, ref, cg, temperature_K=T, damping=0.5, smoothing_nm=s)
    step_s = smooth.pairs[("A", "A")].force - force
    expected = gaussian_smooth(knots, np.where(knots < 0.42, 0.0, step), s)
    expected[knots < 0.42] = 0.0
    expected[-1] = 0.0
    np.testing.assert_allclose(step_s, expected, atol=1e-9)
    wide = np.hypot(width, s)
    widened = a * width / wide * np.exp(-0.5 * ((r - centre) / wide) ** 2)
    analytic_s = -0.5 * np.interp(knots, r, -(r - centre) / wide ** 2 * widened)
    middle = (knots > 0.48) & (knots < 1.0)
    np.testing.assert_allclose(step_s[middle], analytic_s[middle], atol=0.03 * np.abs(analytic_s).max())
    assert np.abs(step_s).max() < 0.9 * np.abs(step).max()  # the bump's slopes are flattened
    with pytest.raises(ValueError, match="smoothing_nm"):
        refine_pairs(model, ref, cg, temperature_K=T, smoothing_nm=2.0)

    same = refine_pairs(model, ref, ref, temperature_K=T)
    np.testing.assert_array_equal(same.pairs[("A", "A")].force, force)
    assert same.fit["pair_refinements"]["mean_relative_count_deviation"]["A-A"] == 0.0
    with pytest.raises(ValueError, match="damping"):
        refine_pairs(model, ref, cg, temperature_K=T, damping=0.0)


def test_rounds_in_openmm_bring_a_perturbed_models_packing_back(tmp_path):
    """A bead-spring melt run with known tables is the reference; a copy whose A–A and B–B pairs
    repel less (a 4 kJ/mol attractive ramp) packs differently. Four rounds of the inversion, each
    run continuing the last, bring its pair counts back to about their own noise."""
    from multiscale.openmm.bonded_iteration import refine_bonded_in_runs
    from multiscale.openmm.short_runs import sample_run
    from multiscale.openmm.tabulated import tabulated_forces

    n_chains, length, box = 24, 5, 2.8
    types = ["A", "B", "B", "B", "A"] * n_chains
    bonds = [(c * length + k, c * length + k + 1) for c in range(n_chains) for k in range(length - 1)]
    angles = [(c * length + k, c * length + k + 1, c * length + k + 2) for c in range(n_chains) for k in range(length - 2)]
    cutoff, spacing = 1.0, 0.02
    knots = np.round(np.arange(0.26, cutoff + 1e-9, spacing), 10)

    def lj(sigma, eps):
        f = 24 * eps * (2 * sigma ** 12 / knots ** 13 - sigma ** 6 / knots ** 7)
        return Table("pair", knots, f - f[-1] * (knots / cutoff) ** 8, 1000.0)

    bond_q = np.arange(0.30, 0.5001, 0.005)
    angle_q = np.arange(1.2, np.pi + 1e-9, 0.05)
    angle_q[-1] = np.pi
    true = TabulatedModel({("A", "A"): lj(0.42, 1.5), ("A", "B"): lj(0.44, 1.8), ("B", "B"): lj(0.46, 2.0)},
                          {("A", "B"): Table("bond", bond_q, -3000.0 * (bond_q - 0.4), 1000.0),
                           ("B", "B"): Table("bond", bond_q, -3000.0 * (bond_q - 0.4), 1000.0)},
                          {key: Table("angle", angle_q, -40.0 * (angle_q - 2.2) * (angle_q < np.pi), 1000.0)
                           for key in (("A", "B", "B"), ("B", "B", "B"))}, {}, "1-3", cutoff, T, {})

    def system_for(model):
        system = openmm.System()
        for _ in types:
            system.addParticle(56.0)
        system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
        for force in tabulated_forces(model, types, bonds, angles, (), periodic=True):
            system.addForce(force)
        return system

    rng = np.random.default_rng(1)
    x = []
    for _ in range(n_chains):
        start, d = rng.uniform(0, box, 3), rng.normal(size=3)
        x.extend(start + 0.38 * k * d / np.linalg.norm(d) for k in range(length))
    cell = np.diag([box] * 3)
    top = mdtraj.Topology()
    for c in range(n_chains):
        residue = top.add_residue("CHN", top.add_chain())
        atoms = [top.add_atom(types[c * length + k], mdtraj.element.virtual, residue) for k in range(length)]
        for k in range(length - 1):
            top.add_bond(atoms[k], atoms[k + 1])

    def as_traj(xyz, cells):
        traj = mdtraj.Trajectory(xyz, top)
        traj.unitcell_vectors = cells
        return traj

    def count(traj):
        return pair_counts(traj, bonds, cutoff_nm=cutoff, spacing_nm=spacing, types=types)

    xyz, cells = sample_run(system_for(true), np.array(x), cell, temperature_K=T, steps=8000, timestep_ps=0.004,
                            frames=80, seed=3)
    reference = as_traj(xyz[10:], cells[10:])
    ref_counts = count(reference)
    perturbed = true.with_pair_ramp(-4.0, [("A", "A"), ("B", "B")])

    def deviation(model, seed):
        xyz, cells = sample_run(system_for(model), reference.xyz[-1], cell, temperature_K=T, steps=4000, timestep_ps=0.004,
                                frames=40, seed=seed)
        cg = count(as_traj(xyz[10:], cells[10:]))
        keys = [("A", "A"), ("B", "B")]
        return np.mean([np.abs(cg.per_frame(k) - ref_counts.per_frame(k))[ref_counts.counts[k] > 30].sum()
                        / ref_counts.per_frame(k).sum() for k in keys])

    before = deviation(perturbed, 11)
    refined = refine_bonded_in_runs(perturbed, system_for, top, types, reference.xyz[-1], cell,
                                    bonded_values(reference, types=types), rounds=4, temperature_K=T, steps=3000,
                                    timestep_ps=0.004, seed=20, frames=40, discard=10, pair_reference=ref_counts,
                                    count_pairs=count, pair_damping=0.7, continue_runs=True)
    after = deviation(refined, 11)
    floor = deviation(true, 11)
    assert refined.fit["pair_refinements"]["count"] == 4
    # the perturbation is visible above the counts' noise (measured 0.24-0.32 against a floor of
    # 0.06-0.09: 3x failed once, at 0.236 against 0.089, in a run after other tests)
    assert before > 2 * floor
    assert after < 0.5 * before and after < 3 * floor  # measured: 0.25-0.32 -> 0.07-0.09, floor 0.06-0.09
    with pytest.raises(ValueError, match="both pair_reference and count_pairs"):
        refine_bonded_in_runs(perturbed, system_for, top, types, reference.xyz[-1], cell, {}, rounds=1, temperature_K=T,
                              steps=100, timestep_ps=0.004, pair_reference=ref_counts)


def test_trust_either_pushes_apart_contacts_the_reference_never_makes():
    """The CG run counts 1000 pairs per bin at 0.36–0.44 nm, where the reference counts none (a
    contact the reference never makes), and the same as the reference beyond. ``trust="both"``
    leaves those knots alone; ``"either"`` steps there too, ΔU = kBT ln(n_cg / floor) clipped to
    3 kBT (the reference's floor is half a pair), so the table's energy at 0.40 nm rises by
    damping × 3 kBT against 0.6 nm, where the counts agree."""
    spacing, cutoff = 0.02, 1.2
    r = cutoff - spacing * np.arange(int(round(cutoff / spacing)))[::-1]
    n_ref = np.where(r > 0.45, 2e5 * r ** 2, 0.0)
    n_cg = np.where(r > 0.45, n_ref, np.where(r > 0.35, 1000.0, 0.0))
    ref = PairCounts(r, spacing, {("A", "A"): n_ref}, frames=100)
    cg = PairCounts(r, spacing, {("A", "A"): n_cg}, frames=100)
    knots = r[r >= 0.36]
    force = np.zeros_like(knots)
    model = _model(knots, force)
    both = refine_pairs(model, ref, cg, temperature_K=T, damping=0.5)
    np.testing.assert_array_equal(both.pairs[("A", "A")].force, force)  # nothing both runs counted differs
    either = refine_pairs(model, ref, cg, temperature_K=T, damping=0.5, trust="either")
    table = either.pairs[("A", "A")]
    rise = float(table.energy_at(np.array([0.40]))[0] - table.energy_at(np.array([0.60]))[0])
    assert rise == pytest.approx(0.5 * 3.0 * kT(T), rel=0.05)
    assert either.fit["pair_refinements"]["max_abs_delta_u_kj_mol"]["A-A"] == pytest.approx(3.0 * kT(T), rel=1e-6)
    with pytest.raises(ValueError, match="trust"):
        refine_pairs(model, ref, cg, temperature_K=T, trust="any")
