"""BehlerParrinelloPotential: descriptors against the textbook formulas evaluated by brute force,
symmetry, forces against finite differences, extensivity, checkpoints, TorchScript/OpenMM, and
training with the project's trainer on labels of an analytic (Morse) teacher."""

from __future__ import annotations

import itertools

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from conftest import random_configuration, random_rotation
from multiscale.data import Configuration
from multiscale.models import BehlerParrinelloPotential, BPConfig, load_model, save_model
from multiscale.openmm import torch_force
from multiscale.training import (
    EnergyForceLoss, LossConfig, Trainer, TrainerConfig, build_graphs, collate, initialise_readout, loss_scales,
    predict, reference_energies,
)

TYPES = ["O", "H", "H"] * 4
TRICLINIC = np.array([[0.9, 0.0, 0.0], [0.3, 0.85, 0.0], [-0.2, 0.25, 0.8]])  # OpenMM reduced form
SMALL = dict(radial_etas=[100.0, 20.0, 4.0], radial_shifts=[0.0, 0.15], angular_zetas=[1.0, 2.5],
             angular_etas=[10.0, 2.0], hidden=[16, 16])


def make_bp(dtype="float64", seed=0, cutoff=0.45, **options) -> BehlerParrinelloPotential:
    """A small random model with non-trivial readout scale/shift and descriptor normalisation."""
    torch.manual_seed(seed)
    opts = dict(SMALL)
    opts.update(options)
    model = BehlerParrinelloPotential(["H", "O"], cutoff, dtype=dtype, **opts)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        model.readout.scale.copy_(torch.tensor([4.0, 6.0]))
        model.readout.shift.copy_(torch.tensor([-1.5, 2.5]))
        model.descriptor.feature_mean.copy_(torch.tensor(rng.uniform(0.0, 0.5, model.descriptor.feature_mean.shape)))
        model.descriptor.feature_std.copy_(torch.tensor(rng.uniform(0.5, 2.0, model.descriptor.feature_std.shape)))
    return model


def energy_forces(model, pos, types, box=None):
    out = model.compute(pos, types, box)
    return float(out["energy"]), out["forces"].numpy()


# ---------------------------------------------------------------------------------- descriptors
def neighbours_brute_force(pos, box, i, cutoff):
    """(type index j, r_ij vector) of every neighbour image of particle i, by explicit enumeration."""
    out = []
    images = [(0, 0, 0)] if box is None else list(itertools.product(range(-3, 4), repeat=3))
    for j in range(len(pos)):
        for n in images:
            if j == i and n == (0, 0, 0):
                continue
            d = pos[j] - pos[i] + (0.0 if box is None else np.array(n) @ box)
            if np.linalg.norm(d) < cutoff:
                out.append((j, d))
    return out


def reference_descriptors(pos, type_idx, box, cfg: BPConfig):
    """G2/G5 exactly as written in Behler (2011), eqs. for G2 and G5, with loops (cosine cutoff)."""
    rc = cfg.cutoff
    fc = lambda r: 0.5 * (np.cos(np.pi * r / rc) + 1.0)  # noqa: E731
    n_types = len(cfg.types)
    pairs = [(b, c) for b in range(n_types) for c in range(b, n_types)]
    rows = []
    for i in range(len(pos)):
        nb = neighbours_brute_force(pos, box, i, rc)
        radial = np.zeros((n_types, cfg.num_radial))
        for j, d in nb:
            r = np.linalg.norm(d)
            radial[type_idx[j]] += [np.exp(-eta * (r - rs) ** 2) * fc(r)
                                    for eta, rs in itertools.product(cfg.radial_etas, cfg.radial_shifts)]
        angular = np.zeros((len(pairs), cfg.num_angular))
        for (j, dj), (k, dk) in itertools.permutations(nb, 2):  # ordered pairs of distinct neighbours
            rj, rk = np.linalg.norm(dj), np.linalg.norm(dk)
            cos = dj @ dk / (rj * rk)
            p = pairs.index(tuple(sorted((type_idx[j], type_idx[k]))))
            angular[p] += [2 ** (1 - zeta) * (1 + lam * cos) ** zeta * np.exp(-eta * (rj**2 + rk**2)) * fc(rj) * fc(rk)
                           for zeta, lam, eta in itertools.product(cfg.angular_zetas, cfg.angular_lambdas, cfg.angular_etas)]
        rows.append(np.concatenate([radial.ravel(), angular.ravel()]))
    return np.array(rows)


@pytest.mark.parametrize("box", [None, TRICLINIC, np.diag([0.4, 0.9, 0.85])])
def test_symmetry_functions_match_brute_force_formulas(box):
    """Includes a cell narrower than the cutoff, where a particle neighbours its own images."""
    model = make_bp()
    pos = random_configuration(7, 0.6, seed=5) - 0.1
    types = ["O", "H", "H", "O", "H", "H", "O"]
    got = model.symmetry_functions(pos, types, box).numpy()
    expected = reference_descriptors(pos, model.type_indices(types).tolist(), box, model.config)
    assert got.shape == (7, model.num_features) == (7, len(model.feature_names()))
    assert np.abs(expected).max() > 0.5 and np.abs(expected[:, 2 * model.config.num_radial:]).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------- symmetry and forces
def test_energy_invariant_and_forces_equivariant_under_rotation_translation_inversion_permutation():
    model = make_bp(angular_zetas=[1.0, 4.0])
    pos = random_configuration(12, 0.7, seed=1)
    e0, f0 = energy_forces(model, pos, TYPES)
    rot = random_rotation(3)
    shift = np.array([0.37, -1.2, 2.05])
    e1, f1 = energy_forces(model, pos @ rot.T + shift, TYPES)
    assert e1 == pytest.approx(e0, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(f1, f0 @ rot.T, atol=1e-10)
    e2, f2 = energy_forces(model, -pos, TYPES)
    assert e2 == pytest.approx(e0, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(f2, -f0, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(TYPES))
    e3, f3 = energy_forces(model, pos[perm], [TYPES[k] for k in perm])
    assert e3 == pytest.approx(e0, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(f3, f0[perm], atol=1e-10)
    # the energy does depend on which particle has which type
    assert energy_forces(model, pos, ["H", "O", "H"] * 4)[0] != pytest.approx(e0, rel=1e-6)
    assert np.abs(f0).max() > 0.1


def finite_difference_forces(model, pos, types, box, h=1e-4, entries=10, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for a, k in zip(rng.integers(0, len(pos), entries), rng.integers(0, 3, entries)):
        energies = []
        for d in (2 * h, h, -h, -2 * h):
            p = pos.copy()
            p[a, k] += d
            energies.append(energy_forces(model, p, types, box)[0])
        out.append((a, k, -(-energies[0] + 8 * energies[1] - 8 * energies[2] + energies[3]) / (12 * h)))
    return out


@pytest.mark.parametrize("cutoff_function", ["cosine", "polynomial"])
@pytest.mark.parametrize("box", [None, TRICLINIC])
def test_forces_match_fourth_order_finite_differences(box, cutoff_function):
    model = make_bp(cutoff_function=cutoff_function, activation="tanh" if box is None else "silu")
    pos = random_configuration(12, 0.8, seed=7)
    _, forces = energy_forces(model, pos, TYPES, box)
    scale = max(1.0, np.abs(forces).max())
    for a, k, fd in finite_difference_forces(model, pos, TYPES, box):
        assert forces[a, k] == pytest.approx(fd, abs=1e-7 * scale)


def test_supercell_and_separated_copies_are_extensive():
    model = make_bp()
    pos = random_configuration(12, 0.8, seed=2)
    e, f = energy_forces(model, pos, TYPES, TRICLINIC)
    double_box = TRICLINIC.copy()
    double_box[0] *= 2.0
    e2, f2 = energy_forces(model, np.vstack([pos, pos + TRICLINIC[0]]), TYPES * 2, double_box)
    assert e2 == pytest.approx(2.0 * e, rel=1e-11)
    np.testing.assert_allclose(f2, np.vstack([f, f]), atol=1e-9)

    eo, fo = energy_forces(model, pos, TYPES)
    far = pos + np.array([0.8 + model.cutoff + 0.01, 0.0, 0.0])  # the cluster spans < 0.8 nm along x
    e3, f3 = energy_forces(model, np.vstack([pos, far]), TYPES * 2)
    assert e3 == pytest.approx(2.0 * eo, rel=1e-11)
    np.testing.assert_allclose(f3, np.vstack([fo, fo]), atol=1e-9)
    # …while a copy within the cutoff does interact (each particle is 0.3 nm from its image)
    near = pos + np.array([0.0, 0.0, 0.3])
    assert energy_forces(model, np.vstack([pos, near]), TYPES * 2)[0] != pytest.approx(2.0 * eo, rel=1e-6)


def test_isolated_particles_and_radial_only_model():
    model = make_bp(angular_zetas=[])
    assert model.num_features == 2 * model.config.num_radial
    pos = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    e, f = energy_forces(model, pos, ["O", "H", "H"])
    # no neighbours: every particle has G = 0, and its energy is its type's network at x = -μ/σ
    single = [energy_forces(model, pos[:1], [t])[0] for t in ("O", "H")]
    assert e == pytest.approx(single[0] + 2 * single[1], rel=1e-12)
    assert np.abs(f).max() == 0.0


# ---------------------------------------------------------------------------------- config, checkpoints
def test_config_defaults_validation_and_yaml(tmp_path):
    cfg = BPConfig(types=["C", "H"], cutoff=0.5)
    assert cfg.radial_etas[0] == pytest.approx(1 / (2 * (0.5 / 8) ** 2)) and cfg.radial_etas[-1] == pytest.approx(2.0)
    cfg.to_yaml(tmp_path / "bp.yaml")
    assert BPConfig.from_yaml(tmp_path / "bp.yaml") == cfg
    assert BPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown Behler-Parrinello model option\(s\) \['channels'\].*radial_etas"):
        BPConfig.from_dict(dict(cfg.to_dict(), channels=8))
    with pytest.raises(ValueError, match="known options"):
        BehlerParrinelloPotential(["H"], 0.5, lmax=2)
    for bad, message in [
        (dict(angular_lambdas=[0.5]), "must be \\+1 or -1"),
        (dict(radial_shifts=[1.5]), "not Å"),
        (dict(radial_etas=[-1.0]), ">= 0"),
        (dict(angular_zetas=[0.5]), ">= 1"),
        (dict(hidden=[16, 0]), "integers >= 1"),
        (dict(cutoff=5.0 * 10), "not Å"),
        (dict(types=["H", "H"]), "more than once"),
        (dict(activation="relu"), "activation"),
        (dict(cutoff_function="gaussian"), "cutoff_function"),
        (dict(radial_etas=[2.0, 2.0]), "more than once"),
        (dict(dtype="float16"), "dtype"),
    ]:
        with pytest.raises(ValueError, match=message):
            BPConfig(**dict(dict(types=["H", "O"], cutoff=0.5), **bad))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_round_trip_gives_identical_energies(tmp_path, dtype):
    model = make_bp(dtype=dtype, seed=3)
    save_model(model, tmp_path / "bp.ckpt", metadata={"note": "baseline"})
    raw = torch.load(tmp_path / "bp.ckpt", weights_only=True)
    assert raw["format"] == "multiscale.BehlerParrinelloPotential"
    loaded = load_model(tmp_path / "bp.ckpt")
    assert type(loaded) is BehlerParrinelloPotential and loaded.config == model.config
    pos = random_configuration(9, 0.6, seed=2)
    types = ["O", "H", "H"] * 3
    for box in (None, TRICLINIC):
        a, b = model.compute(pos, types, box), loaded.compute(pos, types, box)
        assert float(a["energy"]) == float(b["energy"])
        assert torch.equal(a["forces"], b["forces"])
    assert loaded.readout.shift.dtype == getattr(torch, dtype)


# ---------------------------------------------------------------------------------- TorchScript / OpenMM
def openmm_energy_forces(force, pos, box):
    system = openmm.System()
    for _ in range(len(pos)):
        system.addParticle(1.0)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    state = context.getState(getEnergy=True, getForces=True)
    kj = unit.kilojoule_per_mole
    return state.getPotentialEnergy().value_in_unit(kj), state.getForces(asNumpy=True).value_in_unit(kj / unit.nanometer)


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_openmm_force_matches_eager_model_periodic_triclinic(backend):
    model = make_bp(seed=5)
    pos = random_configuration(len(TYPES), 0.9, seed=12) - 0.2  # some outside the cell: OpenMM does not wrap
    ref = model.compute(pos, TYPES, TRICLINIC)
    energy, forces = openmm_energy_forces(torch_force(model, TYPES, periodic=True, backend=backend), pos, TRICLINIC)
    assert energy == pytest.approx(float(ref["energy"]), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(forces, ref["forces"].numpy(), rtol=1e-6, atol=1e-6)
    assert np.abs(forces).max() > 0.1


def test_torchscript_model_matches_eager():
    from e3nn.util.jit import script

    model = make_bp(dtype="float32", seed=6)
    scripted = script(model)
    pos = torch.tensor(random_configuration(12, 0.7, seed=4))
    types = model.type_indices(TYPES)
    for box in (None, torch.tensor(TRICLINIC)):
        assert float(scripted(pos, types, box).detach()) == pytest.approx(float(model(pos, types, box).detach()), rel=1e-6)
        np.testing.assert_allclose(scripted.atomic_energies(pos, types, box).detach().numpy(),
                                   model.atomic_energies(pos, types, box).detach().numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- training
MORSE = {("H", "H"): 2.0, ("H", "O"): 6.0, ("O", "O"): 4.0}  # well depth, kJ/mol


def morse_teacher(pos, types, a=30.0, r0=0.15):
    """E = Σ_{i<j} D_ab[(1 − exp(−a (r − r0)))² − 1], open boundaries; a in nm⁻¹, r0 in nm.
    Returns (energy kJ/mol, forces kJ/mol/nm) with analytic forces."""
    energy, forces = 0.0, np.zeros_like(pos)
    for i, j in itertools.combinations(range(len(pos)), 2):
        depth = MORSE[tuple(sorted((types[i], types[j])))]
        d = pos[j] - pos[i]
        r = np.linalg.norm(d)
        x = np.exp(-a * (r - r0))
        energy += depth * ((1 - x) ** 2 - 1)
        dedr = 2 * depth * a * (1 - x) * x
        forces[i] += dedr * d / r
        forces[j] -= dedr * d / r
    return energy, forces


def teacher_set(n, seed):
    configs = []
    for k in range(n):
        pos = random_configuration(9, 0.5, seed=1000 * seed + k, min_distance=0.1)
        types = ["O", "H", "H"] * 3
        energy, forces = morse_teacher(pos, types)
        configs.append(Configuration(types, pos, energy=energy, forces=forces))
    return configs


def test_morse_teacher_forces_are_minus_its_gradient():
    pos = random_configuration(5, 0.4, seed=3, min_distance=0.1)
    types = ["O", "H", "H", "O", "H"]
    _, forces = morse_teacher(pos, types)
    h = 1e-5
    for a, k in [(0, 0), (2, 1), (4, 2)]:
        p, m = pos.copy(), pos.copy()
        p[a, k] += h
        m[a, k] -= h
        fd = -(morse_teacher(p, types)[0] - morse_teacher(m, types)[0]) / (2 * h)
        assert forces[a, k] == pytest.approx(fd, rel=1e-6)


def test_predict_on_batches_matches_compute():
    model = make_bp(seed=8)
    rng = np.random.default_rng(1)
    configs = []
    for k, box in enumerate([None, TRICLINIC, np.diag(rng.uniform(0.8, 0.9, 3))]):
        configs.append(Configuration(TYPES, random_configuration(12, 0.7, seed=20 + k), box=box))
    batch = collate(build_graphs(configs, model.type_names, model.cutoff), dtype=torch.float64)
    out = predict(model, batch, forces=True, virial=True)
    start = 0
    for k, config in enumerate(configs):
        ref = model.compute(config.positions, config.types, config.box, stress=config.periodic)
        n = config.num_particles
        assert float(out["energy"][k].detach()) == pytest.approx(float(ref["energy"]), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(out["forces"][start : start + n].detach().numpy(), ref["forces"].numpy(), atol=1e-10)
        if config.periodic:
            np.testing.assert_allclose(out["virial"][k].detach().numpy(), ref["virial"].numpy(), atol=1e-9)
        start += n


def test_trainer_reduces_validation_force_loss_on_morse_teacher(tmp_path):
    train, valid = teacher_set(24, seed=0), teacher_set(8, seed=1)
    types = ["H", "O"]
    torch.manual_seed(0)
    model = BehlerParrinelloPotential(types, 0.4, dtype="float32", hidden=[16, 16], angular_zetas=[1.0, 2.0])
    train_graphs = build_graphs(train, types, model.cutoff)
    valid_graphs = build_graphs(valid, types, model.cutoff)
    seen = model.standardise_descriptors(train_graphs)
    assert seen == {"H": 24 * 6, "O": 24 * 3}
    mean, std = model.descriptor.feature_mean, model.descriptor.feature_std
    assert bool((std > 0).all()) and float(mean.abs().max()) > 0.05
    e0 = reference_energies(train, types)
    scales = loss_scales(train, types, e0)
    initialise_readout(model, e0, scales)
    config = TrainerConfig(epochs=15, batch_size=4, learning_rate=1e-2, device="cpu", early_stopping_patience=0, seed=0)
    trainer = Trainer(model, EnergyForceLoss(LossConfig(), scales), config, tmp_path, progress=False)
    before = trainer.validation_loss(valid_graphs)["forces"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny graphs: one thread is fastest, and immune to a busy machine
    try:
        result = trainer.fit(train_graphs, valid_graphs)
    finally:
        torch.set_num_threads(threads)
    after = min(row["valid_forces"] for row in result.history)
    assert after < 0.25 * before, (before, after)
    best = load_model(tmp_path / "model.ckpt")
    assert type(best) is BehlerParrinelloPotential
    assert torch.equal(best.descriptor.feature_std, model.descriptor.feature_std)
