"""The model inside OpenMM: both backends, platforms, subsets, dtypes, against the eager model
and against finite differences of OpenMM's own energies."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import app, unit

from conftest import make_model, random_configuration
from multiscale.openmm import create_system, torch_force

KJ = unit.kilojoule_per_mole
KJ_NM = unit.kilojoule_per_mole / unit.nanometer
BOX = np.array([[1.2, 0.0, 0.0], [0.3, 1.1, 0.0], [-0.2, 0.3, 1.0]])
TYPES = ["O", "H", "H"] * 8


def context_for(force, n, box=None, platform="Reference"):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(1.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))


def energy_forces(context, pos):
    context.setPositions(pos)
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM)


@pytest.fixture(scope="module")
def setup():
    model = make_model()
    pos = random_configuration(len(TYPES), 1.0, seed=12)
    return model, pos


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
@pytest.mark.parametrize("periodic", [True, False])
def test_backends_match_eager_model_on_reference_and_cpu(setup, backend, periodic):
    model, pos = setup
    box = BOX if periodic else None
    ref = model.compute(pos, TYPES, box)
    results = {}
    for platform in ("Reference", "CPU"):
        ctx = context_for(torch_force(model, TYPES, periodic, backend=backend), len(TYPES), box, platform)
        results[platform] = energy_forces(ctx, pos)
        e, f = results[platform]
        assert e == pytest.approx(float(ref["energy"]), rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(f, ref["forces"].numpy(), rtol=1e-6, atol=1e-6)
    # Reference and CPU platforms agree with each other
    assert results["CPU"][0] == pytest.approx(results["Reference"][0], rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(results["CPU"][1], results["Reference"][1], rtol=1e-6, atol=1e-6)


def test_openmm_forces_match_finite_differences_of_openmm_energy(setup):
    model, pos = setup
    ctx = context_for(torch_force(model, TYPES, True), len(TYPES), BOX)
    _, forces = energy_forces(ctx, pos)
    h = 1e-4
    rng = np.random.default_rng(0)
    for a, k in zip(rng.integers(0, len(TYPES), 8), rng.integers(0, 3, 8)):
        energies = []
        for d in (2 * h, h, -h, -2 * h):
            p = pos.copy()
            p[a, k] += d
            energies.append(energy_forces(ctx, p)[0])
        fd = -(-energies[0] + 8 * energies[1] - 8 * energies[2] + energies[3]) / (12 * h)
        assert forces[a, k] == pytest.approx(fd, abs=1e-5 * max(1.0, np.abs(forces).max()))


def test_float32_model_in_openmm_matches_float64(setup):
    model64, pos = setup
    model32 = make_model(dtype="float32")
    model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
    e64, f64 = energy_forces(context_for(torch_force(model64, TYPES, True), len(TYPES), BOX, "CPU"), pos)
    e32, f32 = energy_forces(context_for(torch_force(model32, TYPES, True), len(TYPES), BOX, "CPU"), pos)
    assert e32 == pytest.approx(e64, rel=1e-5, abs=1e-4)
    np.testing.assert_allclose(f32, f64, atol=1e-3 * np.abs(f64).max())


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_subset_of_particles(setup, backend):
    """ML acts on `particles` only: others feel no force, energy is that of the subset alone."""
    model, pos = setup
    subset = [2, 5, 6, 11, 17, 20]
    types = [TYPES[k] for k in subset]
    ctx = context_for(torch_force(model, types, False, particles=subset, backend=backend), len(TYPES))
    e, f = energy_forces(ctx, pos)
    ref = model.compute(pos[subset], types)
    assert e == pytest.approx(float(ref["energy"]), rel=1e-9)
    np.testing.assert_allclose(f[subset], ref["forces"].numpy(), atol=1e-7)
    others = np.setdiff1d(np.arange(len(TYPES)), subset)
    assert np.all(f[others] == 0.0)


def test_create_system_from_topology_runs_md(setup):
    model, pos = setup
    top = app.Topology()
    chain = top.addChain()
    for k in range(0, len(TYPES), 3):
        res = top.addResidue("HOH", chain)
        for name, el in (("O", "O"), ("H1", "H"), ("H2", "H")):
            top.addAtom(name, app.Element.getBySymbol(el), res)
    top.setPeriodicBoxVectors([openmm.Vec3(*row) for row in BOX] * unit.nanometer)
    system = create_system(top, model)
    assert system.usesPeriodicBoundaryConditions()
    assert system.getParticleMass(0).value_in_unit(unit.dalton) == pytest.approx(15.999, abs=1e-2)
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.0002), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    e0 = sim.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(KJ)
    assert e0 == pytest.approx(float(model.compute(pos, TYPES, BOX)["energy"]), rel=1e-9)
    sim.step(5)
    moved = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.isfinite(moved).all() and np.abs(moved - pos).max() > 0


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_force_is_independent_of_the_callers_model(setup, backend):
    """Building a force leaves the caller's model untouched, and later edits of the model do not
    leak into the force."""
    import torch

    model, pos = setup
    kinds = [type(m).__name__ for m in model.modules()]
    force = torch_force(model, TYPES, True, backend=backend)
    assert [type(m).__name__ for m in model.modules()] == kinds  # no TorchScript swapped in
    ctx = context_for(force, len(TYPES), BOX)
    e_before, _ = energy_forces(ctx, pos)
    with torch.no_grad():
        model.readout.scale.mul_(2.0)
    try:
        e_after, _ = energy_forces(ctx, pos)
    finally:
        with torch.no_grad():
            model.readout.scale.div_(2.0)
    assert e_after == pytest.approx(e_before, rel=1e-12)


def test_clone_system_refuses_a_torchforce_read_back_from_a_system():
    """System.getForce returns a TorchForce as a plain openmm.Force (renamed, too): clone_system
    must still recognise it and refuse, instead of letting OpenMM's serializer crash the process."""
    import openmm

    from multiscale.openmm.system import clone_system

    system = openmm.System()
    system.addParticle(1.0)
    force = torch_force(make_model(types=("H",)), ["H"], periodic=False)
    force.setName("renamed")
    system.addForce(force)
    system.addForce(openmm.HarmonicBondForce())
    assert type(system.getForce(0)).__name__ == "Force"
    with pytest.raises(ValueError, match="cannot copy the ML force 'renamed'"):
        clone_system(system)
    assert clone_system(system, keep=lambda f: f.getName() != "renamed").getNumForces() == 1
