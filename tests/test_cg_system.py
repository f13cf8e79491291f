"""CG System builder, force-matching targets and resumable CG MD on a small polyethylene melt."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
from openmm import app, unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import make_model  # noqa: E402
from multiscale.cg.mapping import MappingDefinition, PolymerRule, build_mapping  # noqa: E402
from multiscale.cg.priors import PriorConfig, fit_priors  # noqa: E402
from multiscale.openmm.cg_simulation import ERROR_SUMMARY_CHARS, CGSimulation, error_summary  # noqa: E402
from multiscale.openmm.cg_system import build_cg_system, force_matching_set, prior_only_system  # noqa: E402
from multiscale.openmm.recording import ForceRecorder, load_recording  # noqa: E402
from systems.polyethylene import build_melt  # noqa: E402


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cg")
    topology, positions, box, system = build_melt(6, 12, temperature_K=450.0, cutoff_nm=0.55, seed=1)
    integrator = openmm.LangevinMiddleIntegrator(450 * unit.kelvin, 1 / unit.picosecond, 0.001 * unit.picosecond)
    integrator.setRandomNumberSeed(7)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(450 * unit.kelvin, 1)
    sim.step(2000)
    recorder = ForceRecorder(tmp / "rec", 20, chunk_size=100)
    sim.reporters.append(recorder)
    sim.step(20 * 400)
    recorder.close()
    rec = load_recording(tmp / "rec")
    mapping = build_mapping(topology, MappingDefinition(polymers=[PolymerRule(residues=["CH3", "CH2"], monomers_per_bead=3,
                                                                              bead_type="M", end_bead_type="E")]),
                            constraints=system, masses=system)
    boxes = rec["boxes"].astype(float)
    cg_pos = mapping.map_positions(rec["positions"].astype(float))
    cg_f = mapping.map_forces(rec["forces"].astype(float))
    # bonds + repulsion only: the soft end-bead angle prior needs longer sampling than a unit test
    # affords (the priors module refuses it then, by design; its own tests cover angle fits).
    # Bonds by moments: 8 ps of six chains leave the broad, skewed 3-monomer bond histogram too noisy
    # for the well fit, which then passes or is refused depending on the host's CPU trajectory.
    priors = fit_priors(cg_pos, mapping.bead_types, mapping.bead_bonds, [], [], temperature_K=450.0,
                        boxes=boxes, config=PriorConfig(nonbonded_cutoff_nm=0.55, min_samples=200, min_contacts=20,
                                                        bond_fit="moments"))
    return dict(tmp=tmp, mapping=mapping, priors=priors, cg_pos=cg_pos, cg_f=cg_f, boxes=boxes, system=system)


def test_cg_system_masses_priors_and_network(pipeline):
    mapping, priors, boxes = pipeline["mapping"], pipeline["priors"], pipeline["boxes"]
    model = make_model(types=sorted(set(mapping.bead_types)), cutoff=0.5, dtype="float32")
    system, top = build_cg_system(mapping, priors, model=model, box=boxes[0], nonbonded_cutoff_nm=0.55)
    assert system.getNumParticles() == mapping.n_beads == top.getNumAtoms()
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    np.testing.assert_allclose(masses, mapping.bead_masses)
    # bead masses are the sums of the united-atom masses (CH3 15.035, CH2 14.027 amu, TraPPE-UA)
    assert sum(masses) == pytest.approx(6 * (2 * 15.035 + 10 * 14.027), rel=1e-9)
    assert len(list(top.chains())) == 6 and top.getNumBonds() == len(mapping.bead_bonds)
    names = {type(f).__name__ for f in system.getForces()}
    assert {"HarmonicBondForce", "CustomNonbondedForce"} <= names
    # the ML force sits in group 1; removing it leaves exactly the priors
    priors_only = prior_only_system(system)
    assert priors_only.getNumForces() == system.getNumForces() - 1
    with pytest.raises(ValueError, match="does not know bead type"):
        build_cg_system(mapping, priors, model=make_model(types=["X"], cutoff=0.5), box=boxes[0], nonbonded_cutoff_nm=0.55)


def test_force_matching_targets_are_mapped_minus_prior_forces(pipeline):
    mapping, priors, boxes = pipeline["mapping"], pipeline["priors"], pipeline["boxes"]
    prior_system, _ = build_cg_system(mapping, priors, box=boxes[0], nonbonded_cutoff_nm=0.55)
    frames = slice(0, 4)
    configs = force_matching_set(pipeline["cg_pos"][frames], pipeline["cg_f"][frames], mapping.bead_types, prior_system,
                                 boxes=boxes[frames])
    ctx = openmm.Context(prior_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for k, config in enumerate(configs):
        ctx.setPositions(pipeline["cg_pos"][k])
        f_prior = ctx.getState(getForces=True).getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(config.forces + f_prior, pipeline["cg_f"][k], rtol=1e-6, atol=1e-4)
        assert config.energy is None and config.types == mapping.bead_types


def test_cg_md_resumes_after_crash_without_duplicate_frames(pipeline, tmp_path):
    mapping, priors, boxes = pipeline["mapping"], pipeline["priors"], pipeline["boxes"]
    system, top = build_cg_system(mapping, priors, box=boxes[0], nonbonded_cutoff_nm=0.55)

    def runner():
        return CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path, temperature_K=450.0, timestep_ps=0.005,
                            report_interval=20, checkpoint_interval=100, platform="Reference")

    runner().run(100, progress=False)
    saved = {name: (tmp_path / name).read_bytes() for name in ("cg.chk", "cg_state.json")}
    runner().run(160, progress=False)  # goes on to step 160: the DCD now holds 8 frames
    assert mdtraj.load_dcd(str(tmp_path / "cg.dcd"), top=str(tmp_path / "cg.pdb")).n_frames == 8
    for name, data in saved.items():  # "crash": only the step-100 checkpoint survived
        (tmp_path / name).write_bytes(data)
    result = runner().run(200, progress=False)
    assert result["resumed"]
    traj = mdtraj.load_dcd(str(tmp_path / "cg.dcd"), top=str(tmp_path / "cg.pdb"))
    assert traj.n_frames == 10  # 5 before the checkpoint + 5 after it, none duplicated
    assert np.isfinite(traj.xyz).all()
    pdb = (tmp_path / "cg.pdb").read_text()
    assert pdb.count("CONECT") >= len(mapping.bead_bonds) // 4  # bead bonds written as CONECT records
    bonds = app.PDBFile(str(tmp_path / "cg.pdb")).topology.getNumBonds()
    assert bonds == len(mapping.bead_bonds)
    # a finished run "resumed" with nothing left to do keeps its measured speed (steps × dt / wall)
    state = json.loads((tmp_path / "cg_state.json").read_text())
    again = runner().run(200, progress=False)
    assert again["steps"] == 200 and again["total_wall_seconds"] == pytest.approx(state["wall_seconds"])
    assert again["simulated_ps_per_wall_second"] == pytest.approx(200 * 0.005 / state["wall_seconds"])
    assert mdtraj.load_dcd(str(tmp_path / "cg.dcd"), top=str(tmp_path / "cg.pdb")).n_frames == 10


def test_cg_md_blow_up_names_the_step_and_keeps_the_checkpoint(pipeline, tmp_path):
    mapping, priors, boxes = pipeline["mapping"], pipeline["priors"], pipeline["boxes"]
    system, top = build_cg_system(mapping, priors, box=boxes[0], nonbonded_cutoff_nm=0.55)
    stable = CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path, temperature_K=450.0, timestep_ps=0.005,
                          report_interval=10, checkpoint_interval=20, platform="Reference")
    stable.run(20, progress=False)
    # the same run resumed with a 0.5 ps step (bond periods here are ~0.5 ps): it must blow up
    wild = CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path, temperature_K=450.0, timestep_ps=0.5,
                        report_interval=10, checkpoint_interval=20, platform="Reference")
    with pytest.raises(RuntimeError, match=r"became unstable between steps \d+ and \d+.*smaller time step") as info:
        wild.run(20000, progress=False)
    kept = int(re.search(r"checkpoint \(cg.chk, step (\d+)\)", str(info.value)).group(1))
    assert json.loads((tmp_path / "cg_state.json").read_text())["steps"] == kept >= 20
    # the checkpoint holds finite positions, and the trajectory up to it is intact
    resumed = CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path, temperature_K=450.0, timestep_ps=0.005,
                           report_interval=10, checkpoint_interval=20, platform="Reference")
    resumed.simulation.context.loadCheckpoint((tmp_path / "cg.chk").read_bytes())
    assert np.all(np.isfinite(resumed.simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value))
    # Resuming cuts the DCD back to the frames written at that checkpoint. (The run is resumed to
    # the checkpoint's own step: continuing the state of a run that was already diverging at a
    # 0.5 ps step may blow up again at any step, which is not what this test is about.)
    result = resumed.run(kept, progress=False)
    assert result["resumed"] and result["steps"] == kept
    traj = mdtraj.load_dcd(str(tmp_path / "cg.dcd"), top=str(tmp_path / "cg.pdb"))
    assert traj.n_frames == kept // 10 and np.all(np.isfinite(traj.xyz))


def test_instability_message_quotes_a_traceback_as_one_line():
    """A TorchScript model's error reaches OpenMM as the interpreter's whole traceback; the
    instability message quotes its first line and the line that names the error, not all of it."""
    traceback = ("The following operation failed in the TorchScript interpreter.\n"
                 "Traceback of TorchScript, serialized code (most recent call last):\n"
                 + "".join(f'  File "code/__torch__/model.py", line {k}, in forward\n    x = torch.mm(a, b)\n'
                           for k in range(40))
                 + "RuntimeError: expected scalar type Double but found Float\n")
    summary = error_summary(openmm.OpenMMException(traceback))
    assert "\n" not in summary and len(summary) <= ERROR_SUMMARY_CHARS
    assert summary.startswith("The following operation failed")
    assert summary.endswith("RuntimeError: expected scalar type Double but found Float")
    assert error_summary(ValueError("Particle coordinate is NaN")) == "Particle coordinate is NaN"
    long = error_summary(ValueError("x" * 1000))
    assert len(long) == ERROR_SUMMARY_CHARS and long.endswith("...")


def test_cg_md_restarts_from_the_checkpoint_after_a_blow_up(pipeline, tmp_path):
    """max_restarts: an instability sends the run back to its last checkpoint with fresh velocities;
    the trajectory ends with exactly one frame per report interval, none duplicated."""
    mapping, priors, boxes = pipeline["mapping"], pipeline["priors"], pipeline["boxes"]
    system, top = build_cg_system(mapping, priors, box=boxes[0], nonbonded_cutoff_nm=0.55)
    sim = CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path, temperature_K=450.0, timestep_ps=0.005,
                       report_interval=10, checkpoint_interval=40, platform="Reference")
    real_step = sim.simulation.step
    calls = {"n": 0}

    def flaky_step(n):
        calls["n"] += 1
        real_step(n)
        if calls["n"] == 3:  # the third chunk (steps 80-120) "blows up" after writing its frames
            raise openmm.OpenMMException("Particle coordinate is NaN.")

    sim.simulation.step = flaky_step
    with pytest.warns(UserWarning, match="restart 1 of 2"):
        result = sim.run(200, progress=False, max_restarts=2)
    assert result["restarts"] == 1 and result["steps"] == 200
    traj = mdtraj.load_dcd(str(tmp_path / "cg.dcd"), top=str(tmp_path / "cg.pdb"))
    assert traj.n_frames == 20 and np.all(np.isfinite(traj.xyz))
    # without restarts the same failure is an error
    sim2 = CGSimulation(top, system, pipeline["cg_pos"][-1], tmp_path / "b", temperature_K=450.0, timestep_ps=0.005,
                        report_interval=10, checkpoint_interval=40, platform="Reference")
    sim2.simulation.step = lambda n: (_ for _ in ()).throw(openmm.OpenMMException("Particle coordinate is NaN."))
    with pytest.raises(RuntimeError, match="no checkpoint was written yet"):
        sim2.run(100, progress=False, max_restarts=3)
