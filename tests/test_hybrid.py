"""HybridPotential: exact forces with predicted charges (finite differences), the exact total
charge, symmetry, the dipole as a vector, Coulomb's law beyond the short-range cutoff, checkpoints,
and OpenMM on both backends."""

import numpy as np
import openmm as mm
import pytest
import torch
from openmm import unit
from scipy.spatial.transform import Rotation

from multiscale.electrostatics import Coulomb
from multiscale.models import EquivariantPotential, HybridPotential, load_model, save_model
from multiscale.units import ONE_4PI_EPS0

BOX = np.array([[1.8, 0, 0], [0.3, 1.7, 0], [-0.2, 0.4, 1.9]])
TYPES = ["O", "H", "H"] * 4


def hybrid(method="pme", charges="predicted", total=-1.0, seed=0, **fixed):
    torch.manual_seed(seed)
    short = EquivariantPotential(["O", "H"], 0.5, dtype="float64", channels=4, num_layers=2, lmax=1)
    cutoff = 0.8 if method != "direct" else 1.0
    model = HybridPotential(short, Coulomb(cutoff, method, 1e-6, dtype="float64"), total_charge=total, charges=charges, **fixed)
    with torch.no_grad():  # a charge head that is far from its zero initialisation
        for p in model.charge_head.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


def water_like(seed=0, box=BOX, count=4):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (count, 3)) @ box if box is not None else rng.uniform(0, 1.2, (count, 3))
    out = []
    for c in centres:
        out += [c, c + [0.096, 0, 0], c + [-0.024, 0.093, 0]]
    return np.array(out)


def test_forces_match_fourth_order_finite_differences_with_the_charge_derivative():
    model = hybrid("ewald")  # PME's Lagrange mesh interpolation is not smooth at the 1e-6 level
    pos = water_like()
    out = model.compute(pos, TYPES, BOX)
    assert abs(float(out["charges"].sum()) + 1.0) < 1e-10
    h = 1e-5  # the untrained network is stiff near the O-H distance: h = 1e-4 leaves a 4e-6 truncation error
    for k, axis in [(0, 0), (4, 1), (10, 2)]:
        def energy(s):
            p = pos.copy()
            p[k, axis] += s * h
            return float(model.compute(p, TYPES, BOX, forces=False)["energy"])
        fd = -(energy(-2) - 8 * energy(-1) + 8 * energy(1) - energy(2)) / (12 * h)
        assert float(out["forces"][k, axis]) == pytest.approx(fd, rel=1e-6, abs=1e-6)
    # leaving dq/dr out would be wrong: the charges do depend on the positions
    moved = pos.copy()
    moved[4] += 0.01
    assert not torch.allclose(model.compute(moved, TYPES, BOX)["charges"], out["charges"])


def test_total_charge_is_exact_and_energy_is_invariant():
    model = hybrid(total=2.0)
    pos = water_like(seed=3)
    ref = model.compute(pos, TYPES, BOX)
    for seed in range(3):
        q = model.compute(water_like(seed=seed + 10), TYPES, BOX)["charges"]
        assert abs(float(q.sum()) - 2.0) < 1e-6
    shifted = pos + np.array([2, -1, 3]) @ BOX  # whole lattice vectors
    assert float(model.compute(shifted, TYPES, BOX)["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-9)
    translated = pos + np.array([0.37, -0.11, 0.05])
    assert float(model.compute(translated, TYPES, BOX)["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-7)
    order = np.array([3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8])  # swap whole molecules
    swapped = model.compute(pos[order], [TYPES[k] for k in order], BOX)
    assert float(swapped["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-9)
    np.testing.assert_allclose(swapped["charges"].numpy(), ref["charges"].numpy()[order], atol=1e-12)


def test_cluster_energy_is_rotation_invariant_and_the_dipole_rotates_as_a_vector():
    model = hybrid("direct", total=0.0)
    pos = water_like(seed=5, box=None)
    ref = model.compute(pos, TYPES)
    rot = Rotation.random(random_state=4).as_matrix()
    turned = model.compute(pos @ rot.T + [1.0, 2.0, -0.5], TYPES)
    assert float(turned["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-9)
    np.testing.assert_allclose(turned["charges"].numpy(), ref["charges"].numpy(), atol=1e-10)
    np.testing.assert_allclose(turned["dipole"].numpy(), rot @ ref["dipole"].numpy(), atol=1e-10)
    np.testing.assert_allclose(turned["forces"].numpy(), ref["forces"].numpy() @ rot.T, atol=1e-8)
    assert float(np.linalg.norm(ref["dipole"].numpy())) > 1e-3


def test_long_range_matters_beyond_the_short_range_cutoff():
    model = hybrid("direct", charges="fixed", total=0.0, fixed_charges={"O": -0.8, "H": 0.4})
    a = water_like(seed=6, box=None, count=2)
    b = a + [2.5, 0.3, -0.2]  # every pair farther apart than the 0.5 nm short-range cutoff
    both = model.compute(np.vstack([a, b]), TYPES[:6] * 2)
    alone = [model.compute(x, TYPES[:6]) for x in (a, b)]
    q = np.array([-0.8, 0.4, 0.4] * 2)
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    analytic = ONE_4PI_EPS0 * np.sum(q[:, None] * q[None] / d)
    interaction = float(both["energy"]) - float(alone[0]["energy"]) - float(alone[1]["energy"])
    assert interaction == pytest.approx(analytic, rel=1e-9)
    short = model.short_range
    parts = [float(short.compute(x, t)["energy"]) for x, t in ((np.vstack([a, b]), TYPES[:6] * 2), (a, TYPES[:6]), (b, TYPES[:6]))]
    assert parts[0] - parts[1] - parts[2] == pytest.approx(0.0, abs=1e-9)
    assert abs(analytic) > 1e-2


def test_checkpoint_round_trip_and_openmm_on_both_backends(tmp_path):
    model = hybrid()
    save_model(model, tmp_path / "hybrid.ckpt")
    loaded = load_model(tmp_path / "hybrid.ckpt")
    pos = water_like(seed=8)
    ref = model.compute(pos, TYPES, BOX)
    assert float(loaded.compute(pos, TYPES, BOX)["energy"]) == pytest.approx(float(ref["energy"]), rel=1e-12)
    from multiscale.openmm.bridge import torch_force

    for backend in ("torchforce", "pythonforce"):
        system = mm.System()
        system.setDefaultPeriodicBoxVectors(*[mm.Vec3(*row) for row in BOX])
        for t in TYPES:
            system.addParticle(16.0 if t == "O" else 1.0)
        system.addForce(torch_force(loaded, TYPES, True, backend=backend, system=system))
        context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        context.setPositions(pos)
        state = context.getState(getEnergy=True, getForces=True)
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(float(ref["energy"]), rel=1e-9)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        np.testing.assert_allclose(forces, ref["forces"].numpy(), rtol=1e-6, atol=1e-6)


def test_bad_hybrid_options_are_refused():
    short = EquivariantPotential(["O", "H"], 0.5, channels=4)
    with pytest.raises(ValueError, match="fixed_charges for every type"):
        HybridPotential(short, Coulomb(1.0), charges="fixed", fixed_charges={"O": -0.8})
    with pytest.raises(ValueError, match="charges must be one of"):
        HybridPotential(short, Coulomb(1.0), charges="learned")
    with pytest.raises(TypeError, match="Coulomb"):
        HybridPotential(short, 1.0)


def labelled_clusters(count, seed, total=0.0):
    """Small open water-like clusters labelled by a fixed-charge hybrid (a teacher with known charges)."""
    from multiscale.data.configuration import Configuration

    teacher = hybrid("direct", charges="fixed", total=0.0, seed=seed + 100, fixed_charges={"O": -0.8, "H": 0.4})
    out = []
    for k in range(count):
        pos = water_like(seed + k, box=None, count=3)
        labels = teacher.compute(pos, TYPES[:9])
        charges = labels["charges"].numpy().copy()
        charges[0] += total  # a net charge on the first oxygen, for the per-configuration totals
        out.append(Configuration(TYPES[:9], pos, energy=float(labels["energy"]), forces=labels["forces"].numpy(),
                                 charges=charges, dipole=(charges[:, None] * pos).sum(0), total_charge=total))
    return out


def test_batched_training_outputs_equal_compute_per_configuration():
    from multiscale.training.batch import build_graphs, collate, predict

    model = hybrid("direct", total=0.0)
    configs = labelled_clusters(2, 0, total=0.0) + labelled_clusters(1, 5, total=1.0)
    graphs = build_graphs(configs, model.type_names, model.cutoff)
    out = {k: v.detach() for k, v in predict(model, collate(graphs, dtype=torch.float64), forces=True).items()}
    start = 0
    for b, config in enumerate(configs):
        model.set_total_charge(config.total_charge)  # compute uses the model's own total
        ref = model.compute(config.positions, config.types)
        n = config.num_particles
        assert float(out["energy"][b]) == pytest.approx(float(ref["energy"]), rel=1e-10, abs=1e-9)
        assert torch.allclose(out["forces"][start:start + n], ref["forces"], rtol=1e-9, atol=1e-8)
        assert torch.allclose(out["charges"][start:start + n], ref["charges"], rtol=1e-9, atol=1e-12)
        assert torch.allclose(out["dipole"][b], ref["dipole"], rtol=1e-9, atol=1e-12)
        assert float(out["charges"][start:start + n].sum()) == pytest.approx(config.total_charge, abs=1e-9)
        start += n


def test_hybrid_family_trains_charges_and_dipoles_and_reloads(tmp_path):
    from multiscale.training.config import TrainerConfig
    from multiscale.training.loss import LossConfig
    from multiscale.training.workflow import JobConfig, fit_potential

    train, valid = labelled_clusters(12, 0), labelled_clusters(4, 50)
    job = JobConfig(
        family="hybrid",
        model={"cutoff": 0.5, "channels": 4, "num_layers": 1, "lmax": 1, "dtype": "float64",
               "coulomb": {"cutoff": 1.0, "method": "direct"}},
        trainer=TrainerConfig(epochs=25, batch_size=4, learning_rate=1e-2, seed=0, device="cpu"),
        loss=LossConfig(energy_weight=1.0, force_weight=1.0, charge_weight=10.0, dipole_weight=1.0),
    )
    model, result, trainer = fit_potential(train, valid, tmp_path / "m", job, progress=False)
    assert isinstance(model, HybridPotential)
    assert {"train_charges", "train_dipole", "valid_charges", "valid_dipole"} <= set(result.history[-1])
    assert result.history[-1]["valid_charges"] < 0.1 * result.history[0]["valid_charges"]
    # the charge head learned the teacher's charges (far from an untrained head's)
    out = model.compute(valid[0].positions, valid[0].types)
    err = float(torch.sqrt(torch.mean((out["charges"] - torch.tensor(valid[0].charges)) ** 2)))
    assert err < 0.1
    assert abs(float(out["charges"].sum())) < 1e-9
    again = load_model(tmp_path / "m" / "model.ckpt")
    assert torch.allclose(again.compute(valid[0].positions, valid[0].types)["energy"], out["energy"])


def test_training_config_checks_hybrid_options_and_charge_terms():
    from multiscale.training.workflow import JobConfig

    with pytest.raises(ValueError, match="needs a coulomb: section"):
        JobConfig.from_dict({"family": "hybrid"})
    with pytest.raises(ValueError, match="unknown coulomb option"):
        JobConfig.from_dict({"family": "hybrid", "model": {"coulomb": {"cutoff": 1.0, "alpha": 3.0}}})
    with pytest.raises(ValueError, match="needs a model that predicts charges"):
        JobConfig.from_dict({"loss": {"charge_weight": 1.0}})
    job = JobConfig.from_dict({"family": "hybrid", "model": {"coulomb": {"cutoff": 1.0, "method": "direct"}},
                               "loss": {"charge_weight": 1.0}})
    assert job.model["coulomb"]["method"] == "direct"


def test_coulomb_method_that_does_not_suit_the_data_is_refused_before_training(tmp_path):
    from multiscale.training.workflow import JobConfig, fit_potential

    clusters = labelled_clusters(4, 0)
    job = JobConfig.from_dict({"family": "hybrid", "model": {"cutoff": 0.5, "channels": 4, "num_layers": 1,
                                                               "coulomb": {"cutoff": 1.0, "method": "pme"}},
                               "trainer": {"epochs": 1, "device": "cpu"}})
    with pytest.raises(ValueError, match="needs periodic configurations.*method: direct"):
        fit_potential(clusters[:3], clusters[3:], tmp_path / "m", job, progress=False)
    assert not (tmp_path / "m" / "checkpoint.pt").exists()
