"""Active learning: frame selection, ML-ensemble exploration, and the resumable loop
(train → evaluate → explore → pick → label) with a fast flexible-TIP3P labeller."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conftest import make_model  # noqa: E402
from multiscale.data import load_dataset, sample_simulation  # noqa: E402
from multiscale.labels import LabelResult, OpenMMLabeller  # noqa: E402
from multiscale.models import EnsemblePotential  # noqa: E402
from multiscale.training.active import (  # noqa: E402
    ActiveLearningConfig,
    ActiveLearningLoop,
    explore,
    flat_bottom_restraint,
    job_from_dict,
    load_active_learning_yaml,
    load_frames,
    select_most_uncertain,
)
from systems.water import flexible_water_system, water_cluster  # noqa: E402

#: tiny members: the whole file runs in seconds
TINY = dict(channels=4, num_layers=1, lmax=1, radial_hidden=8, num_basis=4)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ selection
def frames_of(values, steps=None, trajectories=None):
    steps = steps if steps is not None else [5 * (k + 1) for k in range(len(values))]
    trajectories = trajectories or [0] * len(values)
    return [{"step": s, "max_force_uncertainty": v, "trajectory": t} for s, v, t in zip(steps, values, trajectories)]


def test_select_most_uncertain_order_and_separation():
    #            step: 5    10   15   20   25   30   35   40
    frames = frames_of([1.0, 9.0, 8.0, 2.0, 7.0, 7.0, 3.0, float("nan")])
    # no separation: plain descending order, ties keep the earlier frame first, NaN never taken
    assert select_most_uncertain(frames, 4) == [1, 2, 4, 5]
    assert select_most_uncertain(frames, 100) == [1, 2, 4, 5, 6, 3, 0]
    assert select_most_uncertain(frames, 0) == []
    # separation 10 steps: 9.0@10 taken; 8.0@15 is 5 away (skipped); 7.0@25 taken (15 away);
    # 7.0@30 is 5 from 25 (skipped); 3.0@35 is 10 from 25 (exactly the minimum: taken); 2.0@20 skipped;
    # 1.0@5 skipped (5 from 10)
    assert select_most_uncertain(frames, 10, min_separation_steps=10) == [1, 4, 6]
    assert select_most_uncertain(frames, 2, min_separation_steps=10) == [1, 4]
    # a separation larger than the run: only the single most uncertain frame
    assert select_most_uncertain(frames, 5, min_separation_steps=1000) == [1]
    # trust ceiling: frames above it are never picked
    assert select_most_uncertain(frames, 3, max_uncertainty=7.5) == [4, 5, 6]
    # separation applies within a trajectory only
    split = frames_of([9.0, 8.0, 7.0], steps=[10, 10, 15], trajectories=[0, 1, 1])
    assert select_most_uncertain(split, 3, min_separation_steps=10) == [0, 1]
    # mean score
    mean_frames = [{"step": 5, "mean_force_uncertainty": 1.0}, {"step": 50, "mean_force_uncertainty": 2.0}]
    assert select_most_uncertain(mean_frames, 1, key="mean_force_uncertainty") == [1]


def test_select_most_uncertain_rejects_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        select_most_uncertain(frames_of([1.0]), -1)
    with pytest.raises(ValueError, match="min_separation_steps"):
        select_most_uncertain(frames_of([1.0]), 1, min_separation_steps=-5)
    with pytest.raises(KeyError, match="explore"):
        select_most_uncertain([{"step": 1}], 1)


# ------------------------------------------------------------------ configuration
def test_config_yaml_and_errors(tmp_path):
    path = tmp_path / "al.yaml"
    path.write_text(
        "active_learning:\n  rounds: 2\n  md_steps: 100\n  picks_per_round: 4\n"
        "model:\n  cutoff: 0.45\n  channels: 4\ntrainer:\n  epochs: 3\n"
    )
    config, job = load_active_learning_yaml(path)
    assert (config.rounds, config.md_steps, config.picks_per_round, config.ensemble_size) == (2, 100, 4, 3)
    assert job.model["channels"] == 4 and job.trainer.epochs == 3
    assert ActiveLearningConfig.from_yaml(path).rounds == 2  # the section alone, like the other configs

    path.write_text("active_learning:\n  round: 2\n")
    with pytest.raises(ValueError, match=r"unknown active-learning option\(s\) \['round'\]"):
        load_active_learning_yaml(path)
    path.write_text("learning:\n  rounds: 2\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_active_learning_yaml(path)
    with pytest.raises(ValueError, match="ensemble_size"):
        ActiveLearningConfig(ensemble_size=1)
    with pytest.raises(ValueError, match="report_interval"):
        ActiveLearningConfig(md_steps=10, report_interval=20)
    with pytest.raises(ValueError, match="uncertainty"):
        ActiveLearningConfig(uncertainty="median")


# ------------------------------------------------------------------ exploration
@pytest.fixture(scope="module")
def two_waters():
    topology, positions = water_cluster(2)
    return topology, positions, ["O", "H", "H"] * 2


@pytest.fixture(scope="module")
def tiny_ensemble():
    return EnsemblePotential([make_model(seed=k, **TINY) for k in range(2)])


def test_explore_frames_match_ensemble_compute(two_waters, tiny_ensemble, tmp_path):
    topology, positions, types = two_waters
    frames = explore(
        tiny_ensemble, topology, positions, types, steps=40, report_interval=5, temperature=300.0, timestep_fs=0.5,
        seed=3, restraint_radius_nm=0.6, csv_file=tmp_path / "explore.csv",
    )
    assert not frames.blew_up and frames.error is None and not frames.stopped
    assert frames.steps_completed == 40
    assert [f["step"] for f in frames] == list(range(5, 41, 5))
    start = np.asarray(positions)
    for frame in frames:
        out = tiny_ensemble.compute(frame["positions"], types)
        assert frame["max_force_uncertainty"] == pytest.approx(float(out["max_force_uncertainty"]), rel=1e-9)
        assert frame["mean_force_uncertainty"] == pytest.approx(float(out["force_uncertainty"].mean()), rel=1e-9)
        assert frame["energy_std"] == pytest.approx(float(out["energy_std"]), rel=1e-9, abs=1e-12)
        assert frame["box"] is None and frame["positions"].shape == (6, 3)
    # the atoms really moved, and differently from frame to frame
    assert np.abs(frames[-1]["positions"] - start).max() > 1e-3
    assert len({round(f["max_force_uncertainty"], 9) for f in frames}) == len(frames)
    assert len((tmp_path / "explore.csv").read_text().splitlines()) == 1 + len(frames)


def test_explore_stops_above_the_uncertainty_limit(two_waters, tiny_ensemble):
    topology, positions, types = two_waters
    first = float(tiny_ensemble.compute(positions, types)["max_force_uncertainty"])
    frames = explore(
        tiny_ensemble, topology, positions, types, steps=40, report_interval=5, temperature=300.0, timestep_fs=0.5,
        seed=3, stop_uncertainty=first * 1e-3, backend="pythonforce", platform="Reference",
    )
    assert frames.stopped and not frames.blew_up
    assert len(frames) == 1 and frames.steps_completed == 5  # the frame that passed the limit is kept


def test_explore_stops_when_a_bond_breaks(two_waters, tiny_ensemble):
    topology, positions, types = two_waters
    # untrained members hold nothing together: O-H bonds stretch at once; 1.0001x counts as broken
    frames = explore(
        tiny_ensemble, topology, positions, types, steps=40, report_interval=5, temperature=300.0, timestep_fs=0.5,
        seed=3, max_bond_stretch=1.0001, backend="pythonforce", platform="Reference",
    )
    assert frames.broken_bond and not frames.stopped and not frames.blew_up
    assert frames.steps_completed == 5 and len(frames) == 0  # the frame with the broken bond is dropped
    assert "bond" in frames.stop_reason and "step 5" in frames.stop_reason
    # a generous limit is not reached in 40 steps
    frames = explore(
        tiny_ensemble, topology, positions, types, steps=40, report_interval=5, temperature=300.0, timestep_fs=0.5,
        seed=3, max_bond_stretch=3.0, backend="pythonforce", platform="Reference",
    )
    assert not frames.broken_bond and len(frames) == 8 and frames.stop_reason is None
    bondless = app.Topology()
    residue = bondless.addResidue("HOH", bondless.addChain())
    for atom in topology.atoms():
        bondless.addAtom(atom.name, atom.element, residue)
    with pytest.raises(ValueError, match="bonds"):
        explore(
            tiny_ensemble, bondless, positions, types, steps=10, report_interval=5, temperature=300.0,
            timestep_fs=0.5, seed=3, max_bond_stretch=1.5, backend="pythonforce", platform="Reference",
        )


def test_explore_blow_up_keeps_earlier_frames(two_waters):
    topology, positions, types = two_waters
    ensemble = EnsemblePotential([make_model(seed=k, **TINY) for k in range(2)])
    # the model breaks down mid-run: from the 25th evaluation on (force and reporter calls) member 0
    # returns NaN, as a diverging potential would; pythonforce evaluates this very ensemble
    calls = {"n": 0}
    original = ensemble.compute

    def failing_compute(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 25:
            with torch.no_grad():
                ensemble.members[0].readout.scale.fill_(float("nan"))
        return original(*args, **kwargs)

    ensemble.compute = failing_compute
    messages = []
    frames = explore(
        ensemble, topology, positions, types, steps=100, report_interval=5, temperature=300.0,
        timestep_fs=0.5, seed=1, backend="pythonforce", platform="Reference", log=messages.append,
    )
    assert frames.blew_up and frames.error
    assert 0 < frames.steps_completed < 100
    assert messages and "blew up" in messages[0] and "keeps the" in messages[0]
    # the frames before the breakdown are kept, all finite, in order, ending where the run ended
    assert len(frames) >= 2
    assert [f["step"] for f in frames] == list(range(5, 5 * len(frames) + 1, 5))
    assert frames[-1]["step"] == frames.steps_completed
    assert all(np.all(np.isfinite(f["positions"])) and np.isfinite(f["max_force_uncertainty"]) for f in frames)
    # without a log callback the blow-up is a warning
    calls["n"] = 0
    with torch.no_grad():
        ensemble.members[0].readout.scale.fill_(5.0)
    with pytest.warns(RuntimeWarning, match="blew up"):
        explore(
            ensemble, topology, positions, types, steps=100, report_interval=5, temperature=300.0,
            timestep_fs=0.5, seed=1, backend="pythonforce", platform="Reference",
        )


def restraint_energy(force, masses, pos):
    system = openmm.System()
    for m in masses:
        system.addParticle(m)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_flat_bottom_restraint_energy():
    masses = np.array([16.0, 1.0, 1.0] * 2)
    pos = np.zeros((6, 3))
    pos[0] = [1.5, 0.0, 0.0]
    pos[3] = [0.0, 0.3, 0.0]
    k, radius = 1000.0, 0.5

    def expected(center):
        distance = np.linalg.norm(pos - center, axis=1)
        return float(np.sum(0.5 * k * np.clip(distance - radius, 0.0, None) ** 2))

    com = (masses[:, None] * pos).sum(axis=0) / masses.sum()
    assert expected(com) > 0 and expected(np.zeros(3)) > 0
    assert restraint_energy(flat_bottom_restraint(6, radius, k, "origin"), masses, pos) == pytest.approx(expected(np.zeros(3)), rel=1e-6)
    point = [0.2, -0.1, 0.4]
    assert restraint_energy(flat_bottom_restraint(6, radius, k, point), masses, pos) == pytest.approx(expected(np.array(point)), rel=1e-6)
    assert restraint_energy(flat_bottom_restraint(6, radius, k, "com", masses), masses, pos) == pytest.approx(expected(com), rel=1e-6)
    # inside the sphere there is no force at all
    assert restraint_energy(flat_bottom_restraint(6, 5.0, k, "com", masses), masses, pos) == 0.0
    with pytest.raises(ValueError, match="masses"):
        flat_bottom_restraint(6, radius, k, "com")
    with pytest.raises(ValueError, match="center"):
        flat_bottom_restraint(6, radius, k, "middle")
    # a subset (the oxygens): only they are restrained, to their own centre of mass
    oxygens = [0, 3]
    sub_com = (masses[oxygens, None] * pos[oxygens]).sum(axis=0) / masses[oxygens].sum()
    distance = np.linalg.norm(pos[oxygens] - sub_com, axis=1)
    sub_expected = float(np.sum(0.5 * k * np.clip(distance - radius, 0.0, None) ** 2))
    assert sub_expected > 0
    subset = flat_bottom_restraint(6, radius, k, "com", masses, particles=oxygens)
    assert restraint_energy(subset, masses, pos) == pytest.approx(sub_expected, rel=1e-6)
    with pytest.raises(ValueError, match="distinct indices"):
        flat_bottom_restraint(6, radius, k, "com", masses, particles=[0, 0])
    with pytest.raises(ValueError, match="distinct indices"):
        flat_bottom_restraint(6, radius, k, "origin", particles=[6])


# ------------------------------------------------------------------ the loop
@pytest.fixture(scope="module")
def water_data(two_waters):
    """Initial training set (8) and held-out set (4) of a 2-water cluster, flexible-TIP3P labels."""
    topology, positions, _ = two_waters
    system = flexible_water_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.5 * unit.femtosecond)
    integrator.setRandomNumberSeed(11)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions)
    simulation.minimizeEnergy(maxIterations=100)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 11)
    configs = sample_simulation(simulation, 12, 50, progress=False)
    return configs[:8], configs[8:]


class FlakyLabeller:
    """Labels like ``inner`` but reports input index ``fail`` as a failure; ``crash`` raises instead."""

    def __init__(self, inner, fail=None, crash=False):
        self.inner, self.fail, self.crash, self.calls = inner, fail, crash, 0

    def label(self, configs):
        self.calls += 1
        if self.crash:
            raise RuntimeError("labeller crashed (simulated kill during labelling)")
        result = self.inner.label(configs)
        keep = [(i, c) for i, c in zip(result.indices, result.configurations) if i != self.fail]
        failures = list(result.failures) + ([(self.fail, "simulated SCF failure")] if self.fail is not None else [])
        return LabelResult([c for _, c in keep], [i for i, _ in keep], failures)


def loop_settings(rounds):
    config = ActiveLearningConfig(
        rounds=rounds, ensemble_size=2, valid_fraction=0.0, md_steps=40, report_interval=5, timestep_fs=0.5,
        temperature_K=300.0, picks_per_round=3, min_pick_separation_steps=10, seed=1, restraint_radius_nm=0.6,
        platform="Reference", backend="pythonforce",
    )
    job = job_from_dict(
        {
            "model": dict(cutoff=0.45, **TINY),
            "trainer": {"epochs": 2, "batch_size": 4, "device": "cpu", "early_stopping_patience": 0, "learning_rate": 0.005},
        }
    )
    return config, job


def test_loop_round_grows_training_set_and_resumes(tmp_path, two_waters, water_data):
    topology, _, _ = two_waters
    train, held_out = water_data
    labeller = OpenMMLabeller(flexible_water_system(topology))
    out = tmp_path / "al"
    config, job = loop_settings(rounds=1)
    logs = []
    loop = ActiveLearningLoop(out, config, job, labeller, topology, train, held_out, progress=False, log=logs.append)
    records = loop.run()

    assert len(records) == 1 and loop.next_round == 1
    rec = records[0]
    assert rec["n_picked"] == 3 and rec["n_labelled"] == 3 and rec["label_failures"] == []
    assert rec["n_train"] == 8 and rec["n_train_after"] == 8 + 3
    picked = rec["picked_steps"]
    assert all(abs(a - b) >= 10 for i, a in enumerate(picked) for b in picked[i + 1 :])
    stored = load_dataset(out / "train_1.npz")
    assert len(stored) == 11 and len(load_dataset(out / "train_0.npz")) == 8
    for config_ in stored[8:]:  # the picks carry the labeller's labels and where they came from
        assert config_.info["source"] == "active_learning" and config_.info["round"] == 0
        np.testing.assert_allclose(config_.forces, labeller.label([config_]).configurations[0].forces, rtol=1e-9)
    # the picks are the most uncertain explored frames
    frames = load_frames(out / "round_0" / "explore.npz")
    assert len(frames) == 8
    assert rec["picked_uncertainty_kj_mol_nm"] == sorted(rec["picked_uncertainty_kj_mol_nm"], reverse=True)
    assert rec["picked_uncertainty_kj_mol_nm"][0] == pytest.approx(max(f["max_force_uncertainty"] for f in frames))
    for key in ("force_mae_kj_mol_nm", "force_mae_mev_per_angstrom", "energy_mae_mev_per_atom", "explore_mean_uncertainty_kj_mol_nm"):
        assert np.isfinite(rec[key])
    assert json.loads((out / "rounds.json").read_text()) == records
    assert (out / "round_0" / "member_1" / "model.ckpt").is_file()

    # an existing run is never overwritten silently
    with pytest.raises(FileExistsError, match="resume"):
        ActiveLearningLoop(out, config, job, labeller, topology, train, held_out, progress=False, log=logs.append)
    # resuming with other settings is refused, naming them
    other, _ = loop_settings(rounds=2)
    other.picks_per_round = 5
    with pytest.raises(ValueError, match="picks_per_round"):
        ActiveLearningLoop(out, other, job, labeller, topology, resume=True, progress=False, log=logs.append)

    # a new loop object continues at round 1, with the grown training set; round 1 is interrupted
    # while labelling (after training, evaluating and exploring)
    config2, job2 = loop_settings(rounds=2)
    crashing = FlakyLabeller(labeller, crash=True)
    resumed = ActiveLearningLoop(out, config2, job2, crashing, topology, resume=True, progress=False, log=logs.append)
    assert resumed.next_round == 1 and len(resumed.train) == 11 and len(resumed.records) == 1
    with pytest.raises(RuntimeError, match="simulated kill"):
        resumed.run()
    state = json.loads((out / "state.json").read_text())
    assert state["round"] == 1 and state["stage"] == "explored"
    member = out / "round_1" / "member_0" / "model.ckpt"
    explored = out / "round_1" / "explore.npz"
    stamps = (member.stat().st_mtime_ns, explored.stat().st_mtime_ns)

    # resume again: only the label stage runs (no retraining, no new exploration); one pick fails
    # to label and is reported and skipped
    flaky = FlakyLabeller(labeller, fail=1)
    final = ActiveLearningLoop(out, config2, job2, flaky, topology, resume=True, progress=False, log=logs.append)
    records = final.run()
    assert (member.stat().st_mtime_ns, explored.stat().st_mtime_ns) == stamps
    assert flaky.calls == 1 and final.next_round == 2
    rec = records[1]
    assert rec["n_train"] == 11 and rec["n_picked"] == 3 and rec["n_labelled"] == 2
    assert rec["label_failures"] == [[1, "simulated SCF failure"]]
    assert rec["n_train_after"] == 13 and len(load_dataset(out / "train_2.npz")) == 13
    assert any("failed and is skipped" in line and "simulated SCF failure" in line for line in logs)
    assert any("resuming" in line for line in logs)
