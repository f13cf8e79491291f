"""Bad input gets an error that names the problem (and how to fix it)."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app

from conftest import make_model, random_configuration
from multiscale.models import EquivariantPotential, ModelConfig
from multiscale.openmm import create_system, torch_force


@pytest.fixture(scope="module")
def model():
    return make_model()


def test_unknown_type_is_named(model):
    pos = random_configuration(3, 0.5)
    with pytest.raises(ValueError, match=r"unknown particle type\(s\) \['Cl'\]"):
        model.compute(pos, ["O", "Cl", "H"])
    with pytest.raises(ValueError, match=r"\['Na'\]"):
        torch_force(model, ["O", "H", "Na"], periodic=False)


def test_nan_positions(model):
    pos = random_configuration(3, 0.5)
    pos[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.compute(pos, ["O", "H", "H"])


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_nan_positions_inside_openmm(model, backend):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    system.addForce(torch_force(model, ["O", "H", "H"], periodic=False, backend=backend))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    pos = random_configuration(3, 0.5)
    pos[0, 0] = np.nan
    ctx.setPositions(pos)
    with pytest.raises(Exception, match="NaN"):
        ctx.getState(getEnergy=True, getForces=True)


def test_periodic_without_box():
    top = app.Topology()
    res = top.addResidue("HOH", top.addChain())
    for name in ("O", "H1", "H2"):
        top.addAtom(name, app.Element.getBySymbol(name[0]), res)
    with pytest.raises(ValueError, match="no periodic box"):
        create_system(top, make_model(), periodic=True)
    with pytest.raises(ValueError, match="stress needs a periodic box"):
        make_model().compute(random_configuration(3, 0.5), ["O", "H", "H"], stress=True)


def test_particle_count_mismatch(model):
    pos = random_configuration(4, 0.5)
    with pytest.raises(ValueError, match="particle-count mismatch"):
        model(
            __import__("torch").tensor(pos),
            __import__("torch").tensor([0, 1, 1]),
        )
    with pytest.raises(ValueError, match="particle-count mismatch"):
        torch_force(model, ["O", "H"], periodic=False, particles=[0, 1, 2])


@pytest.mark.parametrize("backend", ["torchforce"])
def test_particle_count_mismatch_inside_openmm(model, backend):
    system = openmm.System()
    for _ in range(4):
        system.addParticle(1.0)
    system.addForce(torch_force(model, ["O", "H", "H"], periodic=False, backend=backend))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(random_configuration(4, 0.5))
    with pytest.raises(Exception, match="particle-count mismatch"):
        ctx.getState(getEnergy=True)


def test_degenerate_box(model):
    with pytest.raises(ValueError, match="volume"):
        model.compute(random_configuration(3, 0.5), ["O", "H", "H"], box=np.diag([1.0, 1.0, 0.0]))


def test_bad_model_options():
    with pytest.raises(ValueError, match="not Å"):
        EquivariantPotential(["H"], cutoff=5.5)
    with pytest.raises(ValueError, match="dtype"):
        EquivariantPotential(["H"], cutoff=0.5, dtype="float16")
    with pytest.raises(ValueError, match="more than once"):
        EquivariantPotential(["H", "H"], cutoff=0.5)
    with pytest.raises(ValueError, match="unknown model option"):
        ModelConfig.from_dict({"types": ["H"], "cutoff": 0.5, "chanels": 8})
    with pytest.raises(ValueError, match="unknown backend"):
        torch_force(make_model(), ["H"], periodic=False, backend="jax")


# ------------------------------------------------------------------------------------------------
# Issue 8: each malformed input that used to pass silently or fail obscurely now gets an error that
# names the problem (or is handled correctly); one test per case.
# ------------------------------------------------------------------------------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from openmm import unit  # noqa: E402

from multiscale.config import ConfigTypeError  # noqa: E402
from multiscale.data.configuration import Configuration  # noqa: E402
from multiscale.models import BehlerParrinelloPotential, load_model, save_model  # noqa: E402
from multiscale.models.io import CheckpointError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _context(system, platform="Reference"):
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))


def _system(n, box=None):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    return system


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_particle_index_beyond_the_system_is_named(model, backend):
    system = _system(3)
    system.addForce(torch_force(model, ["O", "H", "H"], periodic=False, particles=[0, 1, 999], backend=backend))
    ctx = _context(system)
    ctx.setPositions(random_configuration(3, 0.5))
    with pytest.raises(Exception, match="index 999 but the System has only 3 particles"):
        ctx.getState(getEnergy=True)
    with pytest.raises(ValueError, match="index 999 but the System has 3 particles"):
        torch_force(model, ["O", "H", "H"], periodic=False, particles=[0, 1, 999], backend=backend, system=_system(3))


@pytest.mark.parametrize("particles, error, message", [
    ([0, 1, 1], ValueError, r"more than once"),
    ([0, -1, 2], ValueError, r"negative index"),
    ([0, 1.5, 2], TypeError, r"must be integers"),
    ([0, "1", 2], TypeError, r"must be integers"),
    ([0, True, 2], TypeError, r"must be integers"),
])
def test_malformed_particle_indices(model, particles, error, message):
    for backend in ("torchforce", "pythonforce"):
        with pytest.raises(error, match=message):
            torch_force(model, ["O", "H", "H"], periodic=False, particles=particles, backend=backend)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_periodic_force_in_a_system_whose_box_was_never_set(model, backend):
    system = _system(3)  # no setDefaultPeriodicBoxVectors: OpenMM's 2 nm default cube
    system.addForce(torch_force(model, ["O", "H", "H"], periodic=True, backend=backend))
    ctx = _context(system)
    ctx.setPositions(random_configuration(3, 0.5))
    with pytest.raises(Exception, match="default 2 nm cube, which means it was never set"):
        ctx.getState(getEnergy=True)
    with pytest.raises(ValueError, match="never set"):
        torch_force(model, ["O", "H", "H"], periodic=True, backend=backend, system=_system(3))
    # a cell that really is an exact 2 nm cube is allowed when said so, and gives the model's energy
    allowed = _system(3)
    allowed.addForce(torch_force(model, ["O", "H", "H"], periodic=True, backend=backend, allow_default_box=True))
    ctx = _context(allowed)
    pos = random_configuration(3, 0.5)
    ctx.setPositions(pos)
    energy = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(model.compute(pos, ["O", "H", "H"], np.eye(3) * 2.0)["energy"]), rel=1e-9)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_overlapping_particles_are_named_not_nan(model, backend):
    pos = random_configuration(4, 0.5)
    pos[3] = pos[1]
    with pytest.raises(ValueError, match=r"particles 1 and 3 overlap"):
        model.compute(pos, ["O", "H", "H", "O"])
    system = _system(4)
    system.addForce(torch_force(model, ["O", "H", "H", "O"], periodic=False, backend=backend))
    ctx = _context(system)
    ctx.setPositions(pos)
    with pytest.raises(Exception, match=r"particles 1 and 3 overlap"):
        ctx.getState(getEnergy=True, getForces=True)


def test_overlapping_particles_in_training_data_name_the_configuration(tmp_path):
    from multiscale.training.batch import build_graphs

    good = random_configuration(3, 0.5)
    bad = good.copy()
    bad[2] = bad[0]
    configs = [Configuration(["O", "H", "H"], p, energy=0.0, forces=np.zeros((3, 3))) for p in (good, good, bad)]
    with pytest.raises(ValueError, match=r"configuration 2: particles 0 and 2 overlap"):
        build_graphs(configs, ["H", "O"], 0.5)


def test_cutoff_given_in_angstrom_is_refused():
    for cutoff in (3, 5, 6.0):
        with pytest.raises(ValueError, match="not Å"):
            EquivariantPotential(["H"], cutoff=cutoff)
        with pytest.raises(ValueError, match="not Å"):
            BehlerParrinelloPotential(["H"], cutoff=cutoff)
    with pytest.raises(ValueError, match="converted twice"):
        EquivariantPotential(["H"], cutoff=0.05)


def test_extxyz_written_in_nm_is_refused(tmp_path):
    from multiscale.data import read_extxyz

    path = tmp_path / "water_nm.xyz"
    # an O-H bond of 0.096 nm written where Å belong: 0.096 "Å"
    path.write_text('3\nProperties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"\n'
                    "O 0.0 0.0 0.0\nH 0.096 0.0 0.0\nH -0.024 0.093 0.0\n")
    with pytest.raises(ValueError, match=r"frame 0.*atoms 0 and [12] are 0.096 Å apart.*must be in Å.*multiply positions"):
        read_extxyz(path)


@pytest.mark.parametrize("options, field", [
    (dict(types="NaCl"), "types"),
    (dict(types=["H"], parity="False"), "parity"),
    (dict(types=["H"], channels=2.7), "channels"),
    (dict(types=["H"], num_layers="2"), "num_layers"),
    (dict(types=["H"], cutoff=None), "cutoff"),
    (dict(types=["H"], cutoff="0.5nm"), "cutoff"),
    (dict(types=["H"], lmax=True), "lmax"),
])
def test_model_options_are_type_checked(options, field):
    options = dict(options)
    types = options.pop("types")
    cutoff = options.pop("cutoff", 0.5)
    with pytest.raises(ConfigTypeError, match=rf"model option {field} must be"):
        EquivariantPotential(types, cutoff, **options)
    with pytest.raises(ConfigTypeError, match=rf"option {field} must be"):
        ModelConfig.from_dict({"types": types, "cutoff": cutoff, **options})
    # an integral float is a whole number, stored as an int
    assert EquivariantPotential(["H"], 0.5, channels=4.0, num_layers=1).config.channels == 4


def test_configuration_types_as_a_string():
    with pytest.raises(ValueError, match="not the string 'NaCl'"):
        Configuration("NaCl", np.zeros((4, 3)))


@pytest.mark.parametrize("shift", [1e5, 1e7])
def test_unwrapped_far_positions_give_the_same_energy(shift):
    """OpenMM hands over unwrapped float64 positions; a float32 model must wrap them before its cast."""
    model32 = make_model(dtype="float32")
    pos = random_configuration(6, 0.6)
    box = np.diag([1.0, 1.1, 1.2])
    types = ["O", "H", "H"] * 2
    near = model32.compute(pos, types, box)
    far = model32.compute(pos + shift, types, box)
    assert float(far["energy"]) == pytest.approx(float(near["energy"]), abs=1e-4)
    np.testing.assert_allclose(far["forces"].numpy(), near["forces"].numpy(), atol=1e-3)
    system = _system(6, box)
    system.addForce(torch_force(model32, types, periodic=True))
    ctx = _context(system, "CPU")
    ctx.setPositions(pos + shift)
    energy = ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(float(near["energy"]), abs=1e-4)


def test_load_model_refuses_nan_weights(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.readout.linear2.weight.fill_(float("nan"))
    save_model(model, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan.ckpt.*'readout.linear2.weight' contains NaN"):
        load_model(tmp_path / "nan.ckpt")


def test_load_model_refuses_an_edited_cutoff(tmp_path):
    save_model(make_model(cutoff=0.5), tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)
    state["config"]["cutoff"] = 0.3
    torch.save(state, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match=r"edited.ckpt.*cutoff=0.3 nm but the weights were trained with a radial basis ending at 0.5 nm"):
        load_model(tmp_path / "edited.ckpt")


def test_load_model_names_the_configuration_field_that_does_not_hold_the_weights(tmp_path):
    save_model(make_model(channels=8), tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=True)
    state["config"]["channels"] = 16
    torch.save(state, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match=r"edited.ckpt: the stored configuration does not match the stored weights "
                                              r"\(channels \(scalar\): 16 in the configuration but 8 in the weights"):
        load_model(tmp_path / "edited.ckpt")


@pytest.mark.parametrize("damage", ["empty", "truncated", "bitflip", "random", "text"])
def test_load_model_of_a_damaged_file(tmp_path, damage):
    save_model(make_model(), tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    rng = np.random.default_rng(0)
    if damage == "empty":
        data = b""
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data = bytearray(data)
        for k in rng.integers(0, len(data), 40):
            data[k] ^= 0xFF
        data = bytes(data)
    elif damage == "random":
        data = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    else:
        data = b"model: not a checkpoint\n"
    path = tmp_path / f"{damage}.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a valid or complete multiscale model checkpoint" in message or "is empty" in message or "damaged" in message
    assert "weights_only" not in message


def test_map_positions_refuses_nan():
    from multiscale.cg.mapping import MappingDefinition, MoleculeRule, build_mapping

    top = app.Topology()
    chain = top.addChain()
    for _ in range(2):
        res = top.addResidue("HOH", chain)
        for name in ("O", "H1", "H2"):
            top.addAtom(name, app.Element.getBySymbol(name[0]), res)
    mapping = build_mapping(top, MappingDefinition(molecules=[MoleculeRule(residues=["HOH"], bead_type="W")]))
    positions = np.random.default_rng(0).random((6, 3))
    positions[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*atom 4"):
        mapping.map_positions(positions)
    with pytest.raises(ValueError, match="NaN or Inf.*frame 1, atom 4"):
        mapping.map_positions(np.stack([np.nan_to_num(positions), positions]), box=np.eye(3) * 3.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mapping.map_forces(positions)


def test_type_index_out_of_range_and_zero_particles(model):
    pos = torch.tensor(random_configuration(3, 0.5))
    with pytest.raises(ValueError, match=r"type index out of range: got indices from 0 to 7 but the model has 2 types"):
        model(pos, torch.tensor([0, 1, 7]))
    with pytest.raises(ValueError, match="no particles"):
        model(torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="no particles"):
        model.compute(np.zeros((0, 3)), [])


def test_openmm_imported_before_multiscale_still_runs_a_torchforce():
    """openmm loads openmm-torch's plugins at import; before torch is loaded they fail. The bridge
    reloads them, so a TorchForce Context works whatever the import order."""
    script = (
        "import openmm\n"
        "import sys; sys.path.insert(0, %r)\n"
        "from conftest import make_model, random_configuration\n"
        "from multiscale.openmm import torch_force\n"
        "s = openmm.System()\n"
        "[s.addParticle(1.0) for _ in range(3)]\n"
        "s.addForce(torch_force(make_model(), ['O', 'H', 'H'], periodic=False))\n"
        "for name in ('Reference', 'CPU'):\n"
        "    c = openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))\n"
        "    c.setPositions(random_configuration(3, 0.5))\n"
        "    print(name, c.getState(getEnergy=True).getPotentialEnergy()._value)\n"
    ) % str(REPO / "tests")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    energies = [float(line.split()[1]) for line in result.stdout.splitlines()]
    expected = float(make_model().compute(random_configuration(3, 0.5), ["O", "H", "H"])["energy"])
    assert energies == pytest.approx([expected, expected], rel=1e-9)


def test_resume_with_changed_settings_is_refused(tmp_path):
    from multiscale.training.config import TrainerConfig
    from multiscale.training.workflow import JobConfig, fit_potential

    rng = np.random.default_rng(0)
    configs = [Configuration(["O", "H", "H"], random_configuration(3, 0.4, seed=k), energy=float(rng.normal()),
                             forces=rng.normal(size=(3, 3))) for k in range(6)]
    job = JobConfig(model={"cutoff": 0.5, "channels": 4, "num_layers": 1, "lmax": 1},
                    trainer=TrainerConfig(epochs=1, batch_size=2, learning_rate=5e-3, seed=0))
    fit_potential(configs[:4], configs[4:], tmp_path, job, progress=False)
    other = JobConfig(model={"cutoff": 0.3, "channels": 4, "num_layers": 1, "lmax": 1},
                      trainer=TrainerConfig(epochs=2, batch_size=2, learning_rate=1e-3, seed=0))
    with pytest.raises(ValueError, match=r"other settings \(.*model.cutoff: 0.5 -> 0.3; trainer.learning_rate: 0.005 -> 0.001\)"):
        fit_potential(configs[:4], configs[4:], tmp_path, other, resume=True, progress=False)
    # a longer run with the same settings resumes
    longer = JobConfig(model=dict(job.model), trainer=TrainerConfig(epochs=2, batch_size=2, learning_rate=5e-3, seed=0))
    _, result, _ = fit_potential(configs[:4], configs[4:], tmp_path, longer, resume=True, progress=False)
    assert result.resumed_from_epoch == 0


def test_training_that_diverges_stops_with_a_reason(tmp_path):
    from multiscale.training.config import TrainerConfig
    from multiscale.training.workflow import JobConfig, fit_potential

    configs = [Configuration(["O", "H", "H"], random_configuration(3, 0.4, seed=k), energy=0.0,
                             forces=np.full((3, 3), 1e30)) for k in range(4)]
    job = JobConfig(model={"cutoff": 0.5, "channels": 4, "num_layers": 1, "lmax": 1},
                    trainer=TrainerConfig(epochs=3, batch_size=2, learning_rate=1e3, grad_clip=0.0))
    with pytest.raises(FloatingPointError, match=r"(training|validation) loss (became|is) (nan|inf)"):
        fit_potential(configs[:2], configs[2:], tmp_path, job, progress=False)


@pytest.mark.parametrize("field, value, message", [
    ("weight_decay", -1.0, "weight_decay must be >= 0"), ("grad_clip", -1.0, "grad_clip must be >= 0"),
    ("early_stopping_patience", -3, "early_stopping_patience must be >= 0"), ("seed", -1, "seed must be >= 0"),
    ("plateau_factor", 2.0, "plateau_factor must lie in"), ("batch_size", 2.5, "batch_size must be a whole number"),
    ("learning_rate", "fast", "learning_rate must be a number"),
])
def test_trainer_settings_out_of_range(field, value, message):
    from multiscale.training.config import TrainerConfig

    with pytest.raises(ValueError, match=message):
        TrainerConfig(**{field: value})
    assert TrainerConfig(learning_rate="1e-3").learning_rate == 1e-3  # YAML reads 1e-3 as a string
