"""Bilayer observables on synthetic bilayers whose answers are known by construction: area per
lipid from the cell, thickness of two planes (also split by the z face), density profiles that
integrate to the bead count, P₂ of aligned/in-plane/isotropic bonds, g(r) = 1 for uncorrelated
heads, flip-flops counted, and the lateral diffusion coefficient of a random walk."""

import mdtraj as md
import numpy as np
import pytest

from multiscale.cg.analysis import (TailPhaseComparison, area_per_lipid, bilayer_thickness, bond_order_parameter,
                                    density_profile, lateral_diffusion_coefficient, lateral_rdf, lipids_leaving_leaflet,
                                    membrane_observables, midplane, validation_report)
from multiscale.cg.analysis.observable import ReportContext

TYPES_PER_LIPID = ["PO", "C", "C"]


def _bilayer(n_per_leaflet=36, frames=20, side=4.0, height=8.0, thickness=4.0, z_mid=4.0, seed=0, tail_spread=0.05):
    """Lipids of 3 beads (head PO, two tail beads), heads at ±thickness/2, tails pointing inward;
    each bead off its lipid's axis in x and y by a normal deviate of ``tail_spread`` (nm)."""
    rng = np.random.default_rng(seed)
    top = md.Topology()
    n = 2 * n_per_leaflet
    for _ in range(n):
        chain = top.add_chain()
        residue = top.add_residue("LIP", chain)
        atoms = [top.add_atom(name, md.element.virtual, residue) for name in ("PO4", "C1", "C2")]
        top.add_bond(atoms[0], atoms[1])
        top.add_bond(atoms[1], atoms[2])
    xyz = np.zeros((frames, 3 * n, 3))
    for t in range(frames):
        for k in range(n):
            sign = 1 if k < n_per_leaflet else -1
            xy = rng.uniform(0, side, 2)
            for b, depth in enumerate((0.0, 0.5, 1.0)):
                xyz[t, 3 * k + b, :2] = xy + rng.normal(scale=tail_spread, size=2)
                xyz[t, 3 * k + b, 2] = z_mid + sign * (thickness / 2 - depth) + rng.normal(scale=0.02)
    xyz[..., 2] %= height
    cells = np.tile(np.diag([side, side, height]), (frames, 1, 1))
    traj = md.Trajectory(xyz, top)
    traj.unitcell_vectors = cells
    return traj, TYPES_PER_LIPID * n


def test_area_and_thickness_by_construction():
    traj, types = _bilayer()
    assert np.allclose(area_per_lipid(traj), 16.0 / 36)
    heads = np.arange(0, traj.n_atoms, 3)
    assert bilayer_thickness(traj, heads).mean() == pytest.approx(4.0, abs=0.01)
    # the same bilayer split by the box's z face (mid-plane at z = 0.3)
    split, _ = _bilayer(z_mid=0.3)
    assert bilayer_thickness(split, heads).mean() == pytest.approx(4.0, abs=0.01)
    assert np.allclose(np.mod(midplane(split), 8.0), 0.3, atol=0.02)


def test_density_profile_integrates_to_the_bead_count():
    traj, _ = _bilayer()
    heads = np.arange(0, traj.n_atoms, 3)
    z, rho = density_profile(traj, heads, half_width_nm=3.0, bins=60)
    assert rho.sum() * (z[1] - z[0]) * 16.0 == pytest.approx(len(heads), rel=1e-6)
    assert abs(z[np.argmax(rho)]) == pytest.approx(2.0, abs=0.1)


def test_order_parameter_limits():
    traj, _ = _bilayer()
    bonds = np.array([(3 * k + 1, 3 * k + 2) for k in range(traj.n_atoms // 3)])
    assert bond_order_parameter(traj, bonds).mean() > 0.9            # along the normal (tilted by the noise)
    flat = traj.slice(range(traj.n_frames))
    flat.xyz[:, bonds[:, 1]] = flat.xyz[:, bonds[:, 0]] + np.array([0.5, 0.0, 0.0])
    assert np.allclose(bond_order_parameter(flat, bonds), -0.5, atol=1e-5)  # in the plane
    rng = np.random.default_rng(1)
    iso = traj.slice(range(traj.n_frames))
    v = rng.normal(size=(traj.n_frames, len(bonds), 3))
    iso.xyz[:, bonds[:, 1]] = iso.xyz[:, bonds[:, 0]] + 0.3 * v / np.linalg.norm(v, axis=-1, keepdims=True)
    assert abs(bond_order_parameter(iso, bonds).mean()) < 0.05       # isotropic


def test_lateral_rdf_of_uncorrelated_heads_is_one():
    traj, _ = _bilayer(n_per_leaflet=80, frames=40)
    r, g = lateral_rdf(traj, np.arange(0, traj.n_atoms, 3), r_max_nm=1.8, bins=12)
    assert np.all(np.abs(g[2:] - 1.0) < 0.12)


def test_flip_flop_and_escape_are_counted():
    traj, _ = _bilayer(height=12.0, z_mid=6.0)
    heads = np.arange(0, traj.n_atoms, 3)
    lipids = [np.arange(3 * k, 3 * k + 3) for k in range(traj.n_atoms // 3)]
    assert lipids_leaving_leaflet(traj, heads, lipids) == {"flip_flop": 0, "escaped": 0, "lost": 0}
    moved = traj.slice(range(traj.n_frames))
    moved.xyz[10:, 0:3, 2] = 6.0 - (moved.xyz[10:, 0:3, 2] - 6.0)  # lipid 0 flips to the lower leaflet
    moved.xyz[15:, 3:6, 2] += 2.5                                  # lipid 1 leaves the bilayer
    assert lipids_leaving_leaflet(moved, heads, lipids) == {"flip_flop": 1, "escaped": 1, "lost": 2}


def test_lateral_diffusion_of_a_random_walk():
    rng = np.random.default_rng(3)
    traj, types = _bilayer(n_per_leaflet=50, frames=200)
    d_true, dt = 0.01, 1.0  # nm²/ps, ps per frame
    steps = rng.normal(scale=np.sqrt(2 * d_true * dt), size=(traj.n_frames, traj.n_atoms // 3, 2))
    steps[0] = 0
    walk = np.cumsum(steps, axis=0)
    xyz = traj.xyz.copy()
    xyz[..., :2] = (xyz[0:1, :, :2] + np.repeat(walk, 3, axis=1)) % 4.0  # whole lipids move, wrapped
    traj.xyz = xyz
    d = lateral_diffusion_coefficient(traj, {"PO": 1.0, "C": 1.0}, frame_interval_ps=dt, types=types)
    assert d == pytest.approx(d_true, rel=0.15)


def test_membrane_report(tmp_path):
    ref, types = _bilayer(seed=1)
    cg, _ = _bilayer(seed=2, thickness=3.6)
    npt, _ = _bilayer(seed=3, side=4.2)
    report = validation_report(ref, cg, {"PO": 100.0, "C": 56.0}, out_dir=tmp_path, types=types, speedup=50.0,
                               observables=membrane_observables(npt_traj=npt, reference_frame_ps=1.0, cg_frame_ps=2.0))
    assert report["area_per_lipid"]["reference"] == pytest.approx(16.0 / 36)
    assert report["area_per_lipid"]["cg"] == pytest.approx(4.2 ** 2 / 36)
    assert report["thickness"]["reference"] == pytest.approx(4.0, abs=0.01)
    assert report["thickness"]["cg_nvt"] == pytest.approx(3.6, abs=0.01)
    assert report["stability"]["cg"]["lost"] == 0
    assert report["tail_phase"]["ordered"] is False  # all three equally ordered
    for name in ("density_profiles.png", "tail_order.png", "lateral_rdf.png", "bonded_bond.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert "area per lipid" in (tmp_path / "report.md").read_text()


def test_a_bilayer_that_fell_apart_is_reported_not_refused(tmp_path):
    ref, types = _bilayer(seed=1)
    heads = np.arange(0, ref.n_atoms, 3)
    # every head on one side of the mid-plane in the second half of the CG NPT run: a micelle-like
    # blob, not a bilayer (the heads stay near z = 4.8, the tails spread below them)
    broken, _ = _bilayer(seed=3)
    xyz = broken.xyz.copy()
    xyz[10:, heads, 2] = 4.8 + np.random.default_rng(0).normal(scale=0.05, size=(10, heads.size))
    broken.xyz = xyz
    with pytest.raises(ValueError, match="frame 10 has all heads on one side"):
        bilayer_thickness(broken, heads)
    values = bilayer_thickness(broken, heads, not_a_bilayer="nan")
    assert np.all(np.isfinite(values[:10])) and np.all(np.isnan(values[10:]))
    cg, _ = _bilayer(seed=2, thickness=3.6)
    report = validation_report(ref, cg, {"PO": 100.0, "C": 56.0}, out_dir=tmp_path, types=types, speedup=50.0,
                               observables=membrane_observables(npt_traj=broken, reference_frame_ps=1.0, cg_frame_ps=2.0))
    block = report["thickness"]
    assert block["cg"] is None and block["relative_difference_percent"] is None
    assert block["not_a_bilayer_frames"] == {"cg": 10, "cg_nvt": 0}
    assert block["reference"] == pytest.approx(4.0, abs=0.01) and block["cg_nvt"] == pytest.approx(3.6, abs=0.01)
    assert report["stability"]["cg_npt"]["flip_flop"] > 0       # the run's lost lipids are counted
    assert "not a bilayer in 10 frames" in (tmp_path / "report.md").read_text()


def test_a_bilayer_that_freezes_at_zero_tension_is_reported_ordered():
    """The tail phase: a fluid-like reference (tails splayed, P₂ well below 1), an NPT run whose
    tails straighten in its second half (ordered), and one that stays as splayed (fluid)."""
    ref, types = _bilayer(seed=1, tail_spread=0.3)
    fluid, _ = _bilayer(seed=2, tail_spread=0.3)
    straight, _ = _bilayer(seed=3, tail_spread=0.02)
    freezing = md.Trajectory(np.concatenate([fluid.xyz, straight.xyz]), fluid.topology)
    freezing.unitcell_vectors = np.concatenate([fluid.unitcell_vectors, straight.unitcell_vectors])
    tail_bonds = np.array([(3 * k + 1, 3 * k + 2) for k in range(ref.n_atoms // 3)])
    expected = float(bond_order_parameter(ref, tail_bonds).mean())
    assert expected < 0.6  # the splay makes the reference's tails fluid-like
    context = ReportContext(masses={"PO": 100.0, "C": 56.0}, types=types)

    block = TailPhaseComparison(("C",), freezing).compare(ref, fluid, context).entries["tail_phase"]
    assert block["reference"] == pytest.approx(expected)  # the tail bonds only (C-C, not PO-C)
    assert block["n_bonds"] == len(tail_bonds)
    first, second = block["cg_npt_halves"]
    assert first == pytest.approx(float(bond_order_parameter(fluid, tail_bonds).mean()))
    assert second > 0.95 and second - block["reference"] > block["threshold"]
    assert block["ordered"] is True

    block = TailPhaseComparison(("C",), fluid).compare(ref, fluid, context).entries["tail_phase"]
    assert block["ordered"] is False
    assert TailPhaseComparison(("C",)).compare(ref, fluid, context).entries["tail_phase"]["ordered"] is None
    with pytest.raises(ValueError, match="pass tail_types"):
        TailPhaseComparison(("CT",), fluid).compare(ref, fluid, context)
