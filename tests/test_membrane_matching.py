"""The secant iteration that tunes a pair ramp against short runs (density matching, bilayer
area matching) finds the root of a synthetic nonlinear response, with clipped
steps; the membrane matching refuses targets in the wrong units."""

import numpy as np
import pytest

from multiscale.openmm.membrane_matching import control_thickness, match_area
from multiscale.openmm.ramp_iteration import iterate_ramp


def test_secant_finds_the_ramp_of_a_monotonic_response():
    def measure(A, trial):
        return 0.8 * (1.0 - 0.05 * (A + 2.0) - 0.002 * (A + 2.0) ** 2), 0.0  # root at A = -2

    result = iterate_ramp(measure, target=0.8, iterations=10, guess_slope=-0.04, tolerance=1e-4, max_step_kj_mol=2.0)
    assert result["A_kj_mol"] == pytest.approx(-2.0, abs=0.01)
    trials = [h["A_kj_mol"] for h in result["history"]]
    assert trials[0] == 0.0 and np.abs(np.diff(trials)).max() <= 2.0 + 1e-12 and len(trials) < 10
    with pytest.raises(ValueError, match="guess_slope"):
        iterate_ramp(measure, target=0.8, iterations=1, guess_slope=0.0)


def test_implausible_targets_are_refused():
    with pytest.raises(ValueError, match="bar"):
        match_area(None, None, None, [], target_bar=1e5, iterations=1, temperature_K=303.0, steps=10, timestep_ps=0.02)
    with pytest.raises(ValueError, match="thickness"):
        control_thickness(None, None, None, [], target_nm=35.0, temperature_K=303.0, steps=10, timestep_ps=0.02)  # Å


def test_lateral_pressure_of_a_stretched_pair_is_its_virial():
    """Two one-bead molecules 0.5 nm apart along x with U = ½k(r − r0)² between them: the lateral
    pressure is (2 kBT − ½ x ∂U/∂x)/V = (2 kBT − ½ k (d − r0) d)/V, in bar."""
    import openmm

    from multiscale.openmm.membrane_matching import lateral_pressure_bar
    from multiscale.units import KJ_PER_MOL_NM3_TO_BAR, kT

    k, r0, d, T = 500.0, 0.45, 0.5, 300.0
    system = openmm.System()
    for _ in range(2):
        system.addParticle(50.0)
    box = np.diag([3.0, 3.0, 4.0])
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    pair = openmm.CustomNonbondedForce(f"0.5*{k}*(r-{r0})^2")
    pair.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    pair.setCutoffDistance(1.2)
    pair.addParticle([])
    pair.addParticle([])
    system.addForce(pair)
    x = np.array([[1.0, 1.5, 2.0], [1.0 + d, 1.5, 2.0]])
    measured = lateral_pressure_bar(system, x[None], box[None], [[0], [1]], temperature_K=T, platform="Reference")
    expected = (2 * kT(T) - 0.5 * k * (d - r0) * d) / 36.0 * KJ_PER_MOL_NM3_TO_BAR
    assert measured[0] == pytest.approx(expected, rel=1e-5)
