"""The secant iteration that tunes a pair ramp against short runs (density matching, bilayer
thickness and area matching) finds the root of a synthetic nonlinear response, with clipped
steps; the membrane matching refuses targets in the wrong units."""

import numpy as np
import pytest

from multiscale.openmm.membrane_matching import match_area, match_thickness
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
    with pytest.raises(ValueError, match="nm²"):
        match_area(None, None, None, [], target_nm2=62.0, iterations=1)  # Å², not nm²
    with pytest.raises(ValueError, match="thickness"):
        match_thickness(None, None, None, [], target_nm=35.0, iterations=1)  # Å, not nm
