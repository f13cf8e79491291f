"""protocols/membrane_cg.py, the membrane main job: its file contract on a tiny patch (12 DMPC
lipids; --config overrides the preset), resumption of a finished job, refusal of a DIR written with
other settings, and bad input ending with an ``error:`` line and exit 2 before any work.

The scientific check (area per lipid, thickness, JSD, speed-up) is the --quick run itself (README);
this test runs every stage for seconds, so it asserts the contract, not the accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
from openmm import app

from multiscale.openmm.membrane_matching import AREA_TENSION_PARAMETER, control_settled
from multiscale.openmm.tabulated import INTERMOLECULAR_SCALE

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "protocols" / "membrane_cg.py"

TINY = """membrane_cg:
  lipids_per_leaflet: 6
  waters_per_lipid: 20
  fine_cutoff_nm: 0.9
  cg_cutoff_nm: 0.9
  equilibration_steps: 200
  sample_frames: 40
  sample_interval: 20
  reference_timing_steps: 60
  cg_steps: 400
  cg_npt_steps: 400
  cg_report_interval: 20
  control_steps: 600
  control_refinement_ps: 4
  refinement_steps: 200
  pair_refinements: 2
  pair_refinement_steps: 200
  final_refinements: 2
  cg_single_core: true  # off in the presets (the quick bilayer's step is faster with both cores); the path is tested
  local_density_kappa: 0.5  # the local-density spring on the tail beads (as in the presets), within the 0.9 nm cutoff
  local_density_inner_nm: 0.6
  local_density_outer_nm: 0.9
  pair_refinement_pressure_damping: 0.5  # off in the presets; the path is tested
"""


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("mcg")
    config = out / "tiny.yaml"
    config.write_text(TINY)
    result = run("--quick", "--lipid", "DMPC", "--config", config, "--out", out / "run", "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (out / "stdout.txt").write_text(result.stdout)
    return out, config


def test_outputs_follow_the_file_contract(job):
    out, _ = job
    run_dir = out / "run"
    for name in ("cg.pdb", "cg.dcd", "cg_npt.dcd", "reference_cg.pdb", "reference_cg.dcd", "report.json", "report.md",
                 "density_profiles.png", "bonded_bond.png", "tail_order.png", "lateral_rdf.png", "priors.png",
                 "mapping.json", "tabulated.json", "tabulated_refined.json", "tabulated_pairs_refined.json", "tabulated_final.json",
                 "membrane_control.json", "membrane_control.png"):
        assert (run_dir / name).is_file(), name
    pdb = app.PDBFile(str(run_dir / "cg.pdb"))
    residues = list(pdb.topology.residues())
    assert [r.name for r in residues] == ["DMP"] * 12           # one residue per lipid (the patch's name)
    assert pdb.topology.getNumAtoms() == 12 * 10
    assert pdb.topology.getNumBonds() == 12 * 9                  # bead bonds from CONECT records
    cg = mdtraj.load_dcd(str(run_dir / "cg.dcd"), top=str(run_dir / "cg.pdb"))
    ref = mdtraj.load_dcd(str(run_dir / "reference_cg.dcd"), top=str(run_dir / "reference_cg.pdb"))
    npt = mdtraj.load_dcd(str(run_dir / "cg_npt.dcd"), top=str(run_dir / "cg.pdb"))
    assert cg.n_frames == 400 // 20 and ref.n_frames == 40 and npt.n_frames == 400 // 20
    assert [a.name for a in cg.topology.atoms] == [a.name for a in ref.topology.atoms]  # same bead order
    assert ref.unitcell_vectors is not None and npt.unitcell_vectors is not None
    assert np.all(np.isfinite(cg.xyz)) and np.all(np.isfinite(npt.xyz))
    # NVT at the reference's area; the NPT run's box height stays fixed (no solvent), a reference
    # frame's padded with cg_box_padding_nm (-1: the cutoff, 0.9 nm here) of vacuum
    assert np.allclose(npt.unitcell_lengths[:, 2], npt.unitcell_lengths[0, 2])
    assert np.allclose(cg.unitcell_lengths[:, 2], npt.unitcell_lengths[0, 2])
    assert np.min(np.abs(ref.unitcell_lengths[:, 2] + 0.9 - npt.unitcell_lengths[0, 2])) < 1e-4
    report = json.loads((run_dir / "report.json").read_text())
    assert report["speedup"] > 0
    for key in ("area_per_lipid", "thickness"):
        assert set(report[key]) >= {"reference", "cg"}
        assert report[key]["reference"] > 0 and report[key]["cg"] > 0
    assert 0.4 < report["area_per_lipid"]["reference"] < 0.8      # nm² per lipid
    assert 2.5 < report["thickness"]["reference"] < 4.5           # nm, phosphate to phosphate
    sub_steps = report["extra"]["timesteps_ps"]["cg_bonded_sub_steps"]  # raised only when a run boiled
    assert sub_steps["adaptive"] and 1 <= sub_steps["inner_steps"] <= sub_steps["maximum"]
    assert report["extra"]["timesteps_ps"]["cg_inner_steps"] == sub_steps["inner_steps"]
    assert len(sub_steps["escalations"]) == sub_steps["inner_steps"] - 1
    packing = report["reference_packing"]                          # against the measured fluid DMPC
    assert packing["fluid_area_per_lipid_nm2"] == pytest.approx(0.606)
    assert packing["area_per_lipid_nm2"] == pytest.approx(report["area_per_lipid"]["reference"])
    assert packing["gel_like"] is False and "Reference packing" in (run_dir / "report.md").read_text()
    for key in ("density_profiles", "bonded", "tail_order", "lateral_rdf", "stability", "lateral_diffusion",
                "reference_speed", "restarts", "tail_phase"):
        assert report[key] is not None, key
    # the tail phase is judged on the NPT run (its two halves), over the tail bonds of both tails
    assert isinstance(report["tail_phase"]["ordered"], bool) and len(report["tail_phase"]["cg_npt_halves"]) == 2
    assert report["tail_phase"]["n_bonds"] > 0 and -0.5 <= report["tail_phase"]["reference"] <= 1.0
    control = json.loads((run_dir / "membrane_control.json").read_text())
    # the default: the area set by the model's area term (the barostat's tension parameter), the
    # thickness by an intermolecular head–tail repulsion, no all-pair ramp
    assert set(control["channels"]) == {AREA_TENSION_PARAMETER, INTERMOLECULAR_SCALE}
    assert control["area_parameter"] == AREA_TENSION_PARAMETER
    thickness = control["channels"][INTERMOLECULAR_SCALE]
    area = control["channels"][AREA_TENSION_PARAMETER]
    assert len(thickness["trace"]) == len(area["trace"]) == 10  # 600 steps, an update every 60
    assert control["A_all_kj_mol"] == 0.0
    gamma, head_tail = control["tension_bar_nm"], control["A_head_tail_kj_mol"]
    assert gamma == pytest.approx(np.mean([t["A"] for t in area["trace"][-2:]]))  # the last 15 %
    assert head_tail == pytest.approx(np.mean([t["A"] for t in thickness["trace"][-2:]]))
    assert 0.0 <= head_tail <= 8.0  # a repulsion, within its bound
    assert control["thickness_nm"] == pytest.approx(np.mean([t["value"] for t in thickness["trace"][-2:]]))
    assert thickness["target"] == pytest.approx(control["target_nm"])
    final = json.loads((run_dir / "tabulated_final.json").read_text())
    ramps = {tuple(r["types"]): r["A_kj_mol"] for r in final["intermolecular_ramps"]}
    head_tail_pairs = {("C", "NC"), ("C", "PO"), ("CT", "NC"), ("CT", "PO")}
    assert set(ramps) >= head_tail_pairs
    for pair, A in ramps.items():
        assert A == pytest.approx(head_tail if pair in head_tail_pairs else 0.0, abs=1e-12), pair
    # the NPT run has the area term in its barostat, and the report says so
    assert report["extra"]["membrane_control"]["tension_bar_nm"] == pytest.approx(gamma)
    assert f"γ_A = {gamma:.0f} bar·nm" in report["extra"]["ensembles"]["cg_npt"]
    said_md = (run_dir / "report.md").read_text()
    assert f"γ_A = {gamma:.0f} bar·nm" in said_md
    assert f"A_ht = {head_tail:.2f} kJ/mol" in said_md and "area and thickness are fitted" in said_md
    import openmm

    npt_system = openmm.XmlSerializer.deserialize((run_dir / "cg_npt_system.xml").read_text())
    barostat, = [f for f in npt_system.getForces() if isinstance(f, openmm.MonteCarloMembraneBarostat)]
    assert barostat.getDefaultSurfaceTension().value_in_unit(openmm.unit.bar * openmm.unit.nanometer) == pytest.approx(gamma)
    # 1 bonded refinement before the control run (the quick preset's), 2 with the pair tables'
    # inversion, 2 during the control run (600 steps of the quick preset's 30 fs = 18 ps: every
    # 4 ps in its first 60 %, at 4 and 8 ps)
    assert control["revisions"] == 2 and final["fit"]["bonded_refinements"]["count"] == 5
    assert final["fit"]["pair_refinements"]["count"] == 2
    # whether the inversion converged (its last round's pair counts, mean over type pairs), and a
    # warning when not
    off = np.mean(list(final["fit"]["pair_refinements"]["mean_relative_count_deviation"].values()))
    inversion = report["extra"]["pair_inversion"]
    assert inversion["mean_relative_count_deviation"] == pytest.approx(off) and inversion["threshold"] == 0.5
    assert inversion["converged"] == (off < 0.5)
    assert ("inversion did not converge" in (out / "stdout.txt").read_text()) == (not inversion["converged"])
    pairs_refined = json.loads((run_dir / "tabulated_pairs_refined.json").read_text())
    fitted = json.loads((run_dir / "tabulated.json").read_text())
    assert pairs_refined["pairs"] != fitted["pairs"]  # the inversion moved the pair tables
    # each inversion round's pressure correction, a plain ramp in the tables: half the ramp that
    # zeroes the lateral pressure on its frames, within the step bound
    corrections = pairs_refined["fit"]["pressure_corrections"]
    assert len(corrections) == 2
    for c in corrections:
        full = (1.0 - c["lateral_pressure_bar"]) / c["bar_per_kj_mol"]
        assert c["step_kj_mol"] == pytest.approx(float(np.clip(0.5 * full, -1.0, 1.0)))
    assert pairs_refined["fit"]["pair_ramp_kj_mol"] == pytest.approx(sum(c["step_kj_mol"] for c in corrections))
    # every round says how far it got, with its pressure correction
    said = (out / "stdout.txt").read_text()
    for k in (1, 2):
        assert f"structure refinement {k}/2" in said
    assert said.count("bar, all-pair ramp") == 2
    assert fitted["fit"]["pair_force_prior"]["width_kj_mol_nm"] == 30.0  # the preset's prior on the pair knots
    # then (final_refinements, off by default) 2 after it, on the final ramps (which the polished
    # model keeps), only if the control run met its targets within 3 %; the report says which
    settled, why = control_settled(control)
    assert report["extra"]["final_refinement"] == {"rounds": 2 if settled else 0, "why": why}
    used = report["extra"]["tabulated_fit"]["bonded_refinements"]["count"]
    if settled:
        polished = json.loads((run_dir / "tabulated_polished.json").read_text())
        assert polished["fit"]["bonded_refinements"]["count"] == used == 7
        assert polished["intermolecular_ramps"] == final["intermolecular_ramps"]
        assert polished["bonds"] != final["bonds"]
    else:
        assert not (run_dir / "tabulated_polished.json").exists() and used == 5
    assert control["target_area_per_lipid_nm2"] == pytest.approx(report["area_per_lipid"]["reference"])
    assert control["target_nm"] == pytest.approx(report["thickness"]["reference"])
    assert report["stability"]["reference"]["lost"] == 0
    assert report["reference_speed"]["timestep_ps"] == 0.004
    # cg_single_core: every CG run on one pinned core, and the all-atom reference timed both ways,
    # in three alternating blocks each, the faster one the speed-up's baseline
    assert report["extra"]["cg"]["threads"] == report["extra"]["cg_npt"]["threads"] == "one, pinned to one core"
    both = report["reference_speed"]["configurations"]
    assert set(both) == {"default", "single_core"} and both["single_core"]["threads"] == "one, pinned to one core"
    assert all(len(c["blocks"]) == 3 and min(c["blocks"]) > 0 for c in both.values())
    assert report["reference_speed"]["ps_per_wall_second"] == max(c["ps_per_wall_second"] for c in both.values())
    assert report["speedup"] == pytest.approx(report["extra"]["cg"]["simulated_ps_per_wall_second"]
                                              / report["reference_speed"]["ps_per_wall_second"])
    # the local-density spring: its targets are the reference's mean tail neighbours per tail type,
    # recomputed here from reference_cg.dcd with the same weight
    from multiscale.cg.analysis.local_density import local_densities, virial_neutral_shift

    spring = report["extra"]["local_density"]
    assert spring["kappa_kj_mol"] == 0.5 and (spring["inner_nm"], spring["outer_nm"]) == (0.6, 0.9)
    assert spring["in_control"] is True  # the default: the control run sets the ramp with the spring on
    types = np.array(json.loads((run_dir / "mapping.json").read_text())["bead_types"])
    members = np.flatnonzero(np.isin(types, ("C", "CT")))
    frames = ref[::max(1, ref.n_frames // 50)]
    rho = local_densities(frames, members, 0.6, 0.9)
    assert set(spring["rho0"]) == set(spring["rho_mean"]) == {"C", "CT"}
    for t in ("C", "CT"):
        assert spring["rho_mean"][t] == pytest.approx(rho[:, types[members] == t].mean(), rel=1e-4) and spring["rho_mean"][t] > 1
    # the targets: those means shifted by one δ so that the spring adds no lateral virial on the
    # same frames (local_density_normal_neutral off by default: no per-type normal condition)
    assert spring["normal_neutral"] is False
    shift = virial_neutral_shift(frames, members, [spring["rho_mean"][t] for t in types[members]], 0.6, 0.9, axes=(0, 1))
    shifts = dict.fromkeys(("C", "CT"), shift)
    assert set(spring["rho0_shift"]) == {"C", "CT"}
    for t in ("C", "CT"):
        assert spring["rho0_shift"][t] == pytest.approx(shifts[t], rel=1e-3, abs=1e-3)
        assert spring["rho0"][t] == pytest.approx(spring["rho_mean"][t] + spring["rho0_shift"][t], rel=1e-9)
    settings = json.loads((run_dir / "settings.json").read_text())
    assert settings["lipid"] == "DMPC"


def test_a_finished_job_resumes_without_redoing_work(job):
    out, config = job
    before = (out / "run" / "fine" / "recording" / "manifest.json").stat().st_mtime_ns
    result = run("--quick", "--lipid", "DMPC", "--config", config, "--out", out / "run", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "run" / "fine" / "recording" / "manifest.json").stat().st_mtime_ns == before
    from conftest import run_script_here  # a refusal before any work: no new interpreter needed

    other = run_script_here(SCRIPT, "--quick", "--lipid", "POPC", "--config", config, "--out", out / "run", "--no-progress")
    assert other.returncode == 2 and "error:" in other.stderr and "lipid" in other.stderr


def test_the_area_may_be_set_by_an_all_pair_ramp_instead(job, tmp_path):
    """control_area_by "ramp" (the version before the area term), resumed from a copy of the tiny
    job's folder after its pair inversion: the control run sets the all-pair ramp, which the final
    tables carry, and the NPT run is at zero tension."""
    import shutil

    import openmm

    out, config = job
    source, run_dir = out / "run", tmp_path / "ramp"
    (run_dir / ".stages").mkdir(parents=True)
    shutil.copytree(source / "fine", run_dir / "fine")
    for name in ("mapping.json", "priors.json", "tabulated.json", "tabulated_refined.json", "tabulated_pairs_refined.json"):
        shutil.copy(source / name, run_dir / name)
    for stage in ("build", "tabulated_fit", "bonded_refinement", "pair_refinement"):
        shutil.copy(source / ".stages" / f"{stage}.done", run_dir / ".stages" / f"{stage}.done")
    settings = json.loads((source / "settings.json").read_text())
    assert settings["control_area_by"] == "tension" and settings["control_thickness"] is True
    (run_dir / "settings.json").write_text(json.dumps({**settings, "control_area_by": "ramp", "control_thickness": False}))
    ramp_config = tmp_path / "ramp.yaml"
    ramp_config.write_text(config.read_text() + "  control_area_by: ramp\n  control_thickness: false\n")
    result = run("--quick", "--lipid", "DMPC", "--config", ramp_config, "--out", run_dir, "--no-progress")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "structure refinement" not in result.stdout  # the pair inversion was not redone
    control = json.loads((run_dir / "membrane_control.json").read_text())
    area = control["channels"]["cg_intermolecular_all_pair_ramp"]
    assert control["area_parameter"] == "cg_intermolecular_all_pair_ramp" and control["tension_bar_nm"] == 0.0
    assert control["A_all_kj_mol"] == pytest.approx(np.mean([t["A"] for t in area["trace"][-4:]]))
    final = json.loads((run_dir / "tabulated_final.json").read_text())
    ramps = {tuple(r["types"]): r["A_kj_mol"] for r in final["intermolecular_ramps"]}
    assert ramps[("C", "C")] == ramps[("C", "PO")] == pytest.approx(control["A_all_kj_mol"])  # no head–tail ramp
    npt_system = openmm.XmlSerializer.deserialize((run_dir / "cg_npt_system.xml").read_text())
    barostat, = [f for f in npt_system.getForces() if isinstance(f, openmm.MonteCarloMembraneBarostat)]
    assert barostat.getDefaultSurfaceTension().value_in_unit(openmm.unit.bar * openmm.unit.nanometer) == 0.0
    report = json.loads((run_dir / "report.json").read_text())
    assert report["extra"]["ensembles"]["cg_npt"] == "zero tension, box height fixed"
    assert "all-pair ramp" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--lipid", "XYZ"], "invalid choice"),
    (["--platform", "NoSuchPlatform"], "platform"),
])
def test_bad_arguments_end_with_an_error_line(tmp_path, args, message):
    from conftest import run_script_here

    result = run_script_here(SCRIPT, "--quick", "--out", tmp_path / "o", *args)
    assert result.returncode == 2
    assert "error:" in result.stderr.strip().splitlines()[-1] and message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_are_refused_before_any_work(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("membrane_cg:\n  fine_timestep_ps: 4.0\n")
    result = run("--quick", "--config", config, "--out", tmp_path / "o")
    assert result.returncode == 2 and "ps" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o" / "fine").exists()
    config.write_text("membrane_cg:\n  pair_refinement_smoothing_nm: 2.0\n")  # Å, not nm
    result = run("--quick", "--config", config, "--out", tmp_path / "p")
    assert result.returncode == 2 and "pair_refinement_smoothing_nm" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "p" / "fine").exists()
    config.write_text("membrane_cg:\n  local_density_kappa: 0.5\n  local_density_outer_nm: 11.0\n")  # Å, not nm
    result = run("--quick", "--config", config, "--out", tmp_path / "q")
    assert result.returncode == 2 and "local_density" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "q" / "fine").exists()
    config.write_text("membrane_cg:\n  cg_box_padding_nm: 12.0\n")  # Å, not nm
    result = run("--quick", "--config", config, "--out", tmp_path / "r")
    assert result.returncode == 2 and "cg_box_padding_nm" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "r" / "fine").exists()
