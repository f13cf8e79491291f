"""The secant iteration that tunes a pair ramp against short runs (density matching) finds the
root of a synthetic nonlinear response, with clipped steps; the membrane control refuses targets
in the wrong units and a System it cannot control; a bilayer is moved to another area molecule by
molecule."""

import numpy as np
import pytest

from multiscale.openmm.membrane_matching import control_membrane, control_settled
from multiscale.openmm.tabulated import INTERMOLECULAR_ALL_PAIRS, INTERMOLECULAR_SCALE
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


def test_a_trial_within_tolerance_stops_the_iteration_only_when_its_noise_is_too():
    """The first trial lands within 1 % of the target; with a standard error of 2.4 % that is not
    shown, so the iteration goes on (and ends at the root of the line through its trials); with
    0.2 % it stops there."""
    def response(A):
        return 0.7 * (1.0 + 0.1 * (A + 0.05))  # within 0.5 % of 0.7 at A = 0; root at A = -0.05

    for sem, trials in ((0.017, 3), (0.0014, 1)):
        result = iterate_ramp(lambda A, trial: (response(A), sem), target=0.7, iterations=3, guess_slope=0.1, tolerance=0.01)
        assert len(result["history"]) == trials
    assert result["A_kj_mol"] == 0.0  # the trial that met the tolerance
    noisy = iterate_ramp(lambda A, trial: (response(A), 0.017), target=0.7, iterations=3, guess_slope=0.1, tolerance=0.01)
    assert noisy["chosen"] == "root of the line through all trials" and noisy["A_kj_mol"] == pytest.approx(-0.05, abs=1e-9)


def test_implausible_targets_are_refused():
    import openmm

    system = openmm.System()
    system.addParticle(1.0)
    with pytest.raises(ValueError, match="thickness"):
        control_membrane(system, None, None, [], target_nm=35.0, target_area_nm2=10.0, temperature_K=303.0, steps=10,
                         timestep_ps=0.02)  # Å
    with pytest.raises(ValueError, match="area"):
        control_membrane(system, None, None, [], target_nm=3.5, target_area_nm2=1e5, temperature_K=303.0, steps=10,
                         timestep_ps=0.02)  # Å²
    with pytest.raises(ValueError, match="MonteCarloMembraneBarostat"):
        control_membrane(system, None, None, [], target_nm=3.5, target_area_nm2=10.0, temperature_K=303.0, steps=10,
                         timestep_ps=0.02)


def test_rescale_area_moves_whole_molecules():
    from multiscale.openmm.membrane_matching import rescale_area

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3.0, size=(12, 3))
    molecules = [list(range(k, k + 3)) for k in range(0, 12, 3)]
    box, target = np.diag([3.0, 3.0, 6.0]), np.diag([3.3, 3.3, 6.0])
    y = rescale_area(x, box, target, molecules)
    for m in molecules:
        np.testing.assert_allclose(y[m] - y[m].mean(0), x[m] - x[m].mean(0))             # shapes kept
        np.testing.assert_allclose(y[m].mean(0)[:2], 1.1 * x[m].mean(0)[:2])             # centres scaled in xy
        np.testing.assert_allclose(y[m][:, 2], x[m][:, 2])
    with pytest.raises(ValueError, match="factor"):
        rescale_area(x, box, np.diag([6.0, 6.0, 6.0]), molecules)


def test_control_settled_asks_both_targets_within_the_tolerance():
    def found(thickness, area):
        return {"channels": {INTERMOLECULAR_SCALE: {"value": thickness, "target": 3.5},
                             INTERMOLECULAR_ALL_PAIRS: {"value": area, "target": 10.0}}}

    ok, why = control_settled(found(3.5 * 1.02, 10.0 * 0.975))
    assert ok and "within 3 %" in why
    ok, why = control_settled(found(3.5 * 0.933, 10.1))       # the thickness at −6.7 %
    assert not ok and "thickness -6.7 %" in why and "box area" not in why
    ok, why = control_settled(found(3.5, 10.0 * 1.05))
    assert not ok and "box area +5.0 %" in why
    assert control_settled(found(3.5 * 1.04, 10.0), tolerance=0.05)[0]
    with pytest.raises(ValueError, match="fraction"):
        control_settled(found(3.5, 10.0), tolerance=3.0)  # a percentage, not a fraction
    # the thickness observed, not controlled (control_membrane(thickness=False))
    observed = {"channels": {INTERMOLECULAR_ALL_PAIRS: {"value": 10.1, "target": 10.0}},
                "observed": {"thickness": {"value": 3.5 * 1.05, "target": 3.5}}}
    ok, why = control_settled(observed)
    assert not ok and "thickness +5.0 %" in why


def _ideal_gas_leaflets(n: int, side_nm: float, height_nm: float, pressure_bar: float, seed: int = 0):
    """``n`` non-interacting particles held (in z only) in two layers 3 nm apart, in a membrane
    barostat at ``pressure_bar`` with the box height fixed: (system, positions, box, heads)."""
    import openmm

    from multiscale.openmm.assembly import MembraneBarostat

    system = openmm.System()
    box = np.diag([side_nm, side_nm, height_nm])
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    layer = openmm.CustomExternalForce("50*periodicdistance(0, 0, z, 0, 0, z0)^2")  # no x or y: no area work
    layer.addPerParticleParameter("z0")
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, side_nm, size=(n, 3))
    for i in range(n):
        system.addParticle(50.0)
        z0 = 0.5 * height_nm + (1.5 if i % 2 else -1.5)
        layer.addParticle(i, [z0])
        x[i, 2] = z0
    system.addForce(layer)
    MembraneBarostat(pressure_bar, 300.0, z_mode="fixed", seed=seed + 1).add_to(system)
    return system, x, box, np.arange(0, 40)


@pytest.mark.parametrize("target_area", [4.0, 4.25])
def test_the_area_term_found_for_an_ideal_gas_is_the_closed_form(target_area):
    """The model's area term −γ_A·A (the barostat's tension parameter) set by the controller to
    hold an ideal gas at a target area, with the box height L_z fixed: the area of N molecules
    at pressure P and tension γ_A is distributed as A^N exp(−(P L_z − γ_A) A / kT), whose mean is
    (N + 1) kT / (P L_z − γ_A). With 1250 molecules and P = 2000 bar, γ_A ≈ −950 bar·nm at 4 nm²
    and ≈ −190 at 4.25 (a relative sensitivity close to the bilayer's, so the controller's gains
    suit it). Checks the sign and units of the knob and the controller that sets it."""
    from multiscale.openmm.membrane_matching import AREA_TENSION_PARAMETER

    n, height, pressure = 1250, 6.0, 2000.0
    system, x, box, heads = _ideal_gas_leaflets(n, 2.06, height, pressure)
    found = control_membrane(system, x, box, heads, target_nm=3.0, target_area_nm2=target_area, temperature_K=300.0,
                             steps=30000, timestep_ps=0.02, seed=3, thickness=False, area_by="tension")
    assert found["area_parameter"] == AREA_TENSION_PARAMETER and found["A_all_kj_mol"] == 0.0
    channel = found["channels"][AREA_TENSION_PARAMETER]
    assert found["tension_bar_nm"] == pytest.approx(np.mean([t["A"] for t in channel["trace"][-200:]]))
    assert found["area_nm2"] == pytest.approx(target_area, rel=0.01)
    kT_bar_nm3 = 0.0083144626 * 300.0 * 16.6054  # kJ/mol -> bar·nm³
    expected = pressure * height - (n + 1) * kT_bar_nm3 / found["area_nm2"]
    assert found["tension_bar_nm"] == pytest.approx(expected, abs=150.0)
    assert found["thickness_nm"] == pytest.approx(3.0, abs=0.05)  # observed only


def test_the_area_knob_is_checked():
    system, x, box, heads = _ideal_gas_leaflets(20, 2.0, 6.0, 1.0)
    with pytest.raises(ValueError, match="area_by"):
        control_membrane(system, x, box, heads, target_nm=3.0, target_area_nm2=4.0, temperature_K=300.0, steps=600,
                         timestep_ps=0.02, area_by="pressure")
