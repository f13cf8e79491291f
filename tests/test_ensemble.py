"""Ensembles: mean and spread against the members evaluated one by one (numpy), checkpoints,
the ensemble-mean Force inside OpenMM (both backends), and the uncertainty reporter in a short
OpenMM Simulation."""

from __future__ import annotations

import csv
import json

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from conftest import make_model, random_configuration
from multiscale.models import EnsemblePotential, load_ensemble, save_ensemble
from multiscale.openmm import ensemble_force
from multiscale.models.io import model_from_state, model_state, save_model
from multiscale.openmm import EnsembleUncertaintyReporter
from multiscale.openmm.reporters import COLUMNS

#: members small enough that the whole file runs in well under a minute on a busy 2-core machine
TINY = dict(channels=4, num_layers=1, lmax=1, radial_hidden=8, num_basis=4)
KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer
TYPES = ["O", "H", "H"] * 4
BOX = np.array([[1.2, 0.0, 0.0], [0.3, 1.1, 0.0], [-0.2, 0.3, 1.0]])


@pytest.fixture(scope="module")
def members():
    return [make_model(seed=k, **TINY) for k in range(3)]


@pytest.fixture(scope="module")
def ensemble(members):
    return EnsemblePotential(members)


@pytest.fixture(scope="module")
def wide_cutoff_model():
    return make_model(cutoff=0.6, **TINY)


@pytest.fixture(scope="module")
def pos():
    return random_configuration(len(TYPES), 0.7, seed=1)


def member_arrays(members, pos, types, box=None):
    outs = [m.compute(pos, types, box) for m in members]
    energies = np.array([float(o["energy"]) for o in outs])
    forces = np.stack([o["forces"].numpy() for o in outs])
    return energies, forces


# ------------------------------------------------------------------ mean and spread
def test_mean_and_spread_match_members_computed_individually(members, ensemble, pos):
    box = BOX  # open boundaries are covered by the OpenMM subset test below
    energies, forces = member_arrays(members, pos, TYPES, box)
    out = ensemble.compute(pos, TYPES, box)

    np.testing.assert_allclose(out["member_energies"].numpy(), energies, rtol=1e-12, atol=1e-12)
    assert float(out["energy"]) == pytest.approx(energies.mean(), rel=1e-12, abs=1e-12)
    assert float(out["energy_std"]) == pytest.approx(np.std(energies, ddof=0), rel=1e-10)
    np.testing.assert_allclose(out["forces"].numpy(), forces.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["forces_std"].numpy(), np.std(forces, axis=0, ddof=0), rtol=1e-10, atol=1e-12)
    deviation = forces - forces.mean(axis=0)  # (K, N, 3)
    expected_u = np.sqrt(np.mean(np.sum(deviation**2, axis=-1), axis=0))  # (N,)
    np.testing.assert_allclose(out["force_uncertainty"].numpy(), expected_u, rtol=1e-10, atol=1e-12)
    assert float(out["max_force_uncertainty"]) == pytest.approx(expected_u.max(), rel=1e-12)
    # differently seeded members really disagree, so the checks above are not 0 == 0
    assert np.std(energies) > 1e-3 and expected_u.min() > 1e-3
    # the per-particle uncertainty is the norm of the per-component spread
    np.testing.assert_allclose(
        out["force_uncertainty"].numpy(), np.linalg.norm(out["forces_std"].numpy(), axis=1), rtol=1e-10
    )
    # forward (what TorchScript/OpenMM differentiate) is the mean energy
    e = ensemble(torch.tensor(pos), ensemble.type_indices(TYPES), torch.tensor(BOX))
    assert float(e.detach()) == pytest.approx(energies.mean(), rel=1e-12)


def test_identical_members_have_zero_uncertainty(members, pos):
    clone = lambda model: model_from_state(model_state(model))  # noqa: E731  (copy.deepcopy fails on e3nn modules)
    twin = EnsemblePotential([members[0], clone(members[0])])
    out = twin.compute(pos, TYPES)
    ref = members[0].compute(pos, TYPES)
    # zero up to the rounding of the mean of K equal numbers (an ulp of the force scale)
    scale = np.abs(ref["forces"].numpy()).max()
    assert float(out["energy_std"]) <= 1e-14 * abs(float(ref["energy"]))
    assert float(out["max_force_uncertainty"]) <= 1e-14 * scale
    assert np.abs(out["forces_std"].numpy()).max() <= 1e-14 * scale
    assert float(out["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-14)
    np.testing.assert_allclose(out["forces"].numpy(), ref["forces"].numpy(), rtol=1e-14, atol=1e-14)


def test_members_and_type_indices(members, ensemble):
    assert ensemble.members[1] is members[1] and len(ensemble.members) == ensemble.num_members == 3
    assert ensemble.type_names == ["H", "O"] and ensemble.cutoff == 0.5
    assert ensemble.type_indices(["O", "H", "O"]).tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="unknown particle type"):
        ensemble.type_indices(["O", "Xe"])


# ------------------------------------------------------------------ validation
def test_mismatched_members_are_refused(members, wide_cutoff_model):
    with pytest.raises(ValueError, match="cutoff.*0.5 nm.*0.6 nm"):
        EnsemblePotential([members[0], wide_cutoff_model])
    with pytest.raises(ValueError, match="different types"):
        EnsemblePotential([members[0], make_model(types=("H", "C"), **TINY)])
    with pytest.raises(ValueError, match="different order"):
        EnsemblePotential([members[0], make_model(types=("O", "H"), **TINY)])
    with pytest.raises(ValueError, match="dtype"):
        EnsemblePotential([members[0], make_model(dtype="float32", **TINY)])
    with pytest.raises(ValueError, match="at least one member"):
        EnsemblePotential([])
    with pytest.raises(TypeError, match="list of member models"):
        EnsemblePotential(members[0])


# ------------------------------------------------------------------ checkpoints
def test_save_load_round_trip(members, ensemble, wide_cutoff_model, pos, tmp_path):
    root = tmp_path / "ens"
    paths = save_ensemble(ensemble, root)
    assert [p.relative_to(root).as_posix() for p in paths] == [f"member_{k}/model.ckpt" for k in range(3)]
    loaded = load_ensemble(root)
    ref, out = ensemble.compute(pos, TYPES, BOX), loaded.compute(pos, TYPES, BOX)
    for key in ("energy", "energy_std", "forces", "force_uncertainty"):
        np.testing.assert_array_equal(out[key].numpy(), ref[key].numpy())
    assert loaded.type_names == ensemble.type_names and loaded.cutoff == ensemble.cutoff

    def same_weights(loaded_members, expected):
        assert len(loaded_members) == len(expected)
        for a, b in zip(loaded_members, expected):
            torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)

    # a list of members: checkpoint files or directories holding model.ckpt, in the given order
    same_weights(load_ensemble([paths[2], paths[0].parent]).members, [members[2], members[0]])

    # the training layout without a manifest (OUT/ensemble/member_K/model.ckpt) loads in numeric order
    (root / "ensemble.json").unlink()
    same_weights(load_ensemble(root).members, members)

    # re-saving a smaller ensemble over it: the manifest, not the stale member_2 directory, decides
    save_ensemble(EnsemblePotential(members[:2]), root)
    assert json.loads((root / "ensemble.json").read_text())["members"] == ["member_0/model.ckpt", "member_1/model.ckpt"]
    assert (root / "member_2" / "model.ckpt").is_file()
    same_weights(load_ensemble(root).members, members[:2])

    with pytest.raises(FileNotFoundError, match="no ensemble"):
        load_ensemble(root / "member_0")  # holds model.ckpt itself, no member_K below: not an ensemble dir
    save_model(wide_cutoff_model, tmp_path / "wide.ckpt")
    with pytest.raises(ValueError, match="cutoff.*wide.ckpt"):
        load_ensemble([paths[0], tmp_path / "wide.ckpt"])


# ------------------------------------------------------------------ OpenMM force
def reference_context(force, n, box=None):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def energy_forces(context, positions):
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_ensemble_force_in_openmm_is_member_mean(members, ensemble, backend):
    """A periodic System of 18 particles, the ensemble acting on 7 of them."""
    n = 18
    all_types = ["O", "H", "H"] * 6
    positions = random_configuration(n, 1.0, seed=5)
    subset = [1, 3, 4, 8, 12, 15, 17]
    sub_types = [all_types[k] for k in subset]
    before = {name: type(module) for name, module in ensemble.named_modules()}
    force = ensemble_force(ensemble, sub_types, True, particles=subset, backend=backend)
    energy, forces = energy_forces(reference_context(force, n, BOX), positions)
    ref_e, ref_f = member_arrays(members, positions[subset], sub_types, BOX)
    assert energy == pytest.approx(ref_e.mean(), rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(forces[subset], ref_f.mean(axis=0), rtol=1e-8, atol=1e-8)
    assert np.all(forces[np.setdiff1d(np.arange(n), subset)] == 0.0)
    # building the Force leaves the caller's ensemble as it was (no submodule swapped for TorchScript)
    assert {name: type(module) for name, module in ensemble.named_modules()} == before
    assert all(m is mm for m, mm in zip(ensemble.members, members))


def test_pythonforce_survives_openmm_serialization(members, ensemble, pos):
    force = ensemble_force(ensemble, TYPES, False, backend="pythonforce")
    copy_force = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    energy, forces = energy_forces(reference_context(copy_force, len(TYPES)), pos)
    ref_e, ref_f = member_arrays(members, pos, TYPES)
    assert energy == pytest.approx(ref_e.mean(), rel=1e-12)
    np.testing.assert_allclose(forces, ref_f.mean(axis=0), rtol=1e-10, atol=1e-10)


def test_ensemble_force_refuses_bad_input(ensemble, members):
    with pytest.raises(TypeError, match="EnsemblePotential"):
        ensemble_force(members[0], TYPES, False)
    with pytest.raises(ValueError, match="unknown backend"):
        ensemble_force(ensemble, TYPES, False, backend="jax")
    with pytest.raises(ValueError, match="unknown particle type"):
        ensemble_force(ensemble, ["O", "Cl"], False)
    with pytest.raises(ValueError, match="particle-count mismatch"):
        ensemble_force(ensemble, ["O", "H"], False, particles=[0, 1, 2])


# ------------------------------------------------------------------ reporter in a Simulation
WATERS = 4
WATER_TYPES = ["O", "H", "H"] * WATERS
INTERVAL = 5


class PositionRecorder:
    """A second reporter storing the (unwrapped) positions and box at the same steps."""

    def __init__(self, interval):
        self.interval = interval
        self.frames = {}

    def describeNextReport(self, simulation):
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": False, "include": ["positions"]}

    def report(self, simulation, state):
        self.frames[simulation.currentStep] = (
            state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).copy(),
            state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer).copy(),
        )


def water_simulation(ensemble):
    """4 flexible 'waters' in a periodic 1.2 nm box: LJ on O (NonbondedForce) + the ensemble mean."""
    top = app.Topology()
    chain = top.addChain()
    for _ in range(WATERS):
        res = top.addResidue("HOH", chain)
        for name, el in (("O", "O"), ("H1", "H"), ("H2", "H")):
            top.addAtom(name, app.Element.getBySymbol(el), res)
    edge = 1.2
    top.setPeriodicBoxVectors([openmm.Vec3(edge, 0, 0), openmm.Vec3(0, edge, 0), openmm.Vec3(0, 0, edge)] * unit.nanometer)
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(0.5)
    for atom in top.atoms():
        system.addParticle(atom.element.mass)
        if atom.element.symbol == "O":
            nonbonded.addParticle(0.0, 0.315, 0.636)
        else:
            nonbonded.addParticle(0.0, 0.1, 0.0)
    system.addForce(nonbonded)
    system.addForce(ensemble_force(ensemble, WATER_TYPES, True, backend="pythonforce"))
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    rng = np.random.default_rng(3)
    sim.context.setPositions(random_configuration(len(WATER_TYPES), edge, seed=4, min_distance=0.12))
    sim.context.setVelocities(rng.normal(scale=0.5, size=(len(WATER_TYPES), 3)))
    return sim


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_reporter_rows_flags_and_resume(ensemble, tmp_path):
    log = tmp_path / "uncertainty.csv"

    # run 1: nothing flagged; rows equal a direct ensemble.compute on the positions at those steps
    sim = water_simulation(ensemble)
    reporter = EnsembleUncertaintyReporter(log, INTERVAL, ensemble, WATER_TYPES, threshold=1e9)
    recorder = PositionRecorder(INTERVAL)
    sim.reporters += [reporter, recorder]
    sim.step(20)
    rows = read_rows(log)  # the reporter is still open: rows are on disk because each is flushed
    assert rows[0] == list(COLUMNS)
    assert [int(r[0]) for r in rows[1:]] == [5, 10, 15, 20] == sorted(recorder.frames)
    values = []
    for row, record in zip(rows[1:], reporter.records):
        step = int(row[0])
        positions, box = recorder.frames[step]
        ref = ensemble.compute(positions, WATER_TYPES, box)
        u = ref["force_uncertainty"].numpy()
        expected = [step * 0.0005, float(ref["energy"]), float(ref["energy_std"]), u.max(), u.mean()]
        np.testing.assert_allclose([float(x) for x in row[1:6]], expected, rtol=1e-10, atol=1e-12)
        assert row[6] == "0" and record["flagged"] is False
        assert record["max_force_uncertainty_kj_mol_nm"] == float(row[4]) and record["step"] == step
        values.append(u.max())
    assert reporter.flagged_steps == [] and reporter.frames == []
    assert len(set(values)) == len(values)  # the configuration moved, so the threshold below splits them

    # run 2 from the same start, threshold between observed values: exactly the larger ones are flagged
    threshold = float(np.mean(sorted(values)[1:3]))
    sim2 = water_simulation(ensemble)
    flagger = EnsembleUncertaintyReporter(
        tmp_path / "flags.csv", INTERVAL, ensemble, WATER_TYPES, threshold=threshold, keep_flagged_positions=True
    )
    recorder2 = PositionRecorder(INTERVAL)
    sim2.reporters += [flagger, recorder2]
    sim2.step(20)
    observed = [r["max_force_uncertainty_kj_mol_nm"] for r in flagger.records]
    np.testing.assert_allclose(observed, values, rtol=1e-9)  # Reference platform is deterministic
    expected_flags = [v > threshold for v in observed]
    assert 0 < sum(expected_flags) < len(expected_flags)
    assert [r[6] for r in read_rows(tmp_path / "flags.csv")[1:]] == ["1" if f else "0" for f in expected_flags]
    assert flagger.flagged_steps == [r["step"] for r, f in zip(flagger.records, expected_flags) if f]
    assert len(flagger.frames) == len(flagger.flagged_steps)
    for step, frame in zip(flagger.flagged_steps, flagger.frames):
        np.testing.assert_array_equal(frame, recorder2.frames[step][0])

    # resume: appending to the run-1 file writes rows but no second header
    reporter.close()
    sim.reporters = [EnsembleUncertaintyReporter(log, INTERVAL, ensemble, WATER_TYPES, threshold=1e9, append=True)]
    sim.step(10)
    rows = read_rows(log)
    assert sum(r == list(COLUMNS) for r in rows) == 1 and rows[0] == list(COLUMNS)
    assert [int(r[0]) for r in rows[1:]] == [5, 10, 15, 20, 25, 30]
    # a fresh (non-append) reporter on the same path starts over with a header
    EnsembleUncertaintyReporter(log, INTERVAL, ensemble, WATER_TYPES, threshold=1.0).close()
    assert read_rows(log) == [list(COLUMNS)]


def test_reporter_refuses_bad_input(ensemble, tmp_path):
    with pytest.raises(ValueError, match="unknown particle type"):
        EnsembleUncertaintyReporter(tmp_path / "a.csv", 5, ensemble, ["O", "Ar"], threshold=1.0)
    with pytest.raises(ValueError, match="reportInterval"):
        EnsembleUncertaintyReporter(tmp_path / "a.csv", 0, ensemble, ["O"], threshold=1.0)
    other = tmp_path / "other.csv"
    other.write_text("step,temperature\n1,300\n")
    with pytest.raises(ValueError, match="cannot append"):
        EnsembleUncertaintyReporter(other, 5, ensemble, ["O"], threshold=1.0, append=True)
    assert other.read_text() == "step,temperature\n1,300\n"

    # one type too few for the System: refused at the first report, naming both counts
    sim = water_simulation(ensemble)
    sim.reporters.append(EnsembleUncertaintyReporter(tmp_path / "b.csv", 1, ensemble, WATER_TYPES[:-1], threshold=1.0))
    with pytest.raises(ValueError, match="System has 12 particles.*11 particle_types"):
        sim.step(1)
