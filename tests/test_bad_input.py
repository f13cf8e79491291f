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
