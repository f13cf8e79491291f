"""multiscale.openmm.assembly: the one System assembly (particles, box, terms), checked against
OpenMM's own objects."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from openmm import unit

from multiscale.openmm.assembly import Barostat, CenterOfMassMotionRemover, ForceTerm, assemble_system


def test_particles_box_and_terms_in_order():
    box = np.array([[3.0, 0.0, 0.0], [0.5, 3.0, 0.0], [0.2, 0.3, 3.0]])
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, 0.15, 1000.0)
    system = assemble_system([12.0, 1.008], box_nm=box,
                             terms=[ForceTerm(bond), Barostat(1.0, 300.0, seed=7), CenterOfMassMotionRemover(10)])
    assert [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(2)] == [12.0, 1.008]
    vectors = np.array([v.value_in_unit(unit.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    np.testing.assert_allclose(vectors, box)
    kinds = [type(f).__name__ for f in system.getForces()]
    assert kinds == ["HarmonicBondForce", "MonteCarloBarostat", "CMMotionRemover"]
    barostat = system.getForce(1)
    assert barostat.getDefaultPressure().value_in_unit(unit.bar) == pytest.approx(1.0)
    assert barostat.getDefaultTemperature().value_in_unit(unit.kelvin) == pytest.approx(300.0)
    assert barostat.getRandomNumberSeed() == 7 and system.getForce(2).getFrequency() == 10


def test_base_system_is_copied_and_extended():
    base = openmm.System()
    for mass in (16.0, 1.0, 1.0):
        base.addParticle(mass)
    base.addConstraint(0, 1, 0.1)
    extra = openmm.HarmonicAngleForce()
    extended = assemble_system(base=base, terms=[ForceTerm(extra)])
    assert extended.getNumParticles() == 3 and extended.getNumConstraints() == 1
    assert extended.getNumForces() == 1 and base.getNumForces() == 0


def test_bad_input_is_refused_naming_it():
    with pytest.raises(ValueError, match="either masses_amu"):
        assemble_system()
    with pytest.raises(ValueError, match="either masses_amu"):
        assemble_system([1.0], base=openmm.System())
    with pytest.raises(ValueError, match="a bead has mass 0.0 amu"):
        assemble_system([1.0, 0.0], what="a bead")
    assert assemble_system([1.0, 0.0], allow_zero_mass=True).getNumParticles() == 2
    with pytest.raises(ValueError, match=r"box must be a finite \(3, 3\)"):
        assemble_system([1.0], box_nm=[3.0, 3.0, 3.0])
    with pytest.raises(TypeError, match="add_to"):
        assemble_system([1.0], terms=[openmm.HarmonicBondForce()])
