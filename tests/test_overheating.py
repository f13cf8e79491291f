"""A thermostatted run that boils with every coordinate finite is stopped (multiscale.openmm.overheating).

The system: independent diatomics whose stiff bond (k = 2×10⁴ kJ/mol/nm², 12 amu atoms: ω = 58
/ps, a 0.11 ps period) is capped at 100 kJ/mol (½ k min((r − r₀)², 0.01 nm²)), so a bond that is
driven out of its well breaks instead of the coordinates diverging. At 2 fs the Langevin run holds
equipartition (the mean kinetic temperature is the thermostat's); at 50 fs (ω Δt = 2.9, beyond the
integrator's stability limit of 2) the bonds are shaken apart within a few steps and the beads fly
off at thousands of K with every coordinate finite, as the DPPC model's stiff bonded tables did at
the membrane job's 30 fs step (measured: 2,100 K after 0.15 ps, 4×10⁷ K after 2.3 ps).
"""

from __future__ import annotations

import json

import numpy as np
import openmm
import pytest
from openmm import app, unit

import multiscale  # noqa: F401
from multiscale.openmm.cg_simulation import CGInstabilityError, CGSimulation
from multiscale.openmm.evaluation import degrees_of_freedom
from multiscale.openmm.overheating import OverheatingError, check_temperature, temperature_limit
from multiscale.openmm.short_runs import sample_run

TARGET_K = 300.0
BOND_NM = 0.15
CAP_NM2 = 0.01
BOILING_STEP_PS = 0.05


def diatomics(n: int = 150, k: float = 2e4):
    system = openmm.System()
    bond = openmm.CustomBondForce("0.5 * k * min((r - r0)^2, cap)")
    for name, value in (("k", k), ("r0", BOND_NM), ("cap", CAP_NM2)):
        bond.addGlobalParameter(name, value)
    rng = np.random.default_rng(0)
    x = []
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(n):
        a, b = system.addParticle(12.0), system.addParticle(12.0)
        bond.addBond(a, b)
        p = rng.uniform(0.0, 10.0, 3)
        x += [p, p + [BOND_NM, 0.0, 0.0]]
        residue = topology.addResidue("DIA", chain)
        first = topology.addAtom("C1", app.element.carbon, residue)
        topology.addBond(first, topology.addAtom("C2", app.element.carbon, residue))
    system.addForce(bond)
    return system, np.array(x), topology


def checked_context(timestep_ps: float):
    system, x, _ = diatomics()
    integrator = openmm.LangevinMiddleIntegrator(TARGET_K, 1.0, timestep_ps)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    context.setVelocitiesToTemperature(TARGET_K, 1)
    return context, integrator


def run_checked(context, integrator, timestep_ps: float, checks: int = 40):
    temperatures = []
    for _ in range(checks):
        integrator.step(max(int(round(0.05 / timestep_ps)), 1))
        temperatures.append(check_temperature(context, TARGET_K, what="the diatomics", timestep_ps=timestep_ps))
    return np.array(temperatures)


def test_a_stable_run_holds_equipartition_and_never_trips():
    temperatures = run_checked(*checked_context(0.002), 0.002)
    # equipartition: <K> = N_dof kT / 2, within the mean's noise (40 checks of 900 dof: ~1 %)
    assert temperatures[5:].mean() == pytest.approx(TARGET_K, rel=0.04)
    assert temperatures.max() < temperature_limit(TARGET_K, 900)


def test_a_run_that_boils_with_finite_coordinates_is_stopped():
    with pytest.raises(OverheatingError, match=r"the diatomics is boiling: kinetic temperature .* K against the "
                                               r"thermostat's 300 K.*time step 0.05 ps is too long"):
        run_checked(*checked_context(BOILING_STEP_PS), BOILING_STEP_PS)
    # the check, not a NaN, stopped it: the coordinates are finite
    context, integrator = checked_context(BOILING_STEP_PS)
    with pytest.raises(OverheatingError):
        run_checked(context, integrator, BOILING_STEP_PS)
    assert np.all(np.isfinite(context.getState(getPositions=True).getPositions(asNumpy=True)._value))


def test_the_limit_allows_the_kinetic_temperatures_own_spread():
    assert temperature_limit(300.0, 30_000) == pytest.approx(450.0)            # 1.5 x for a big system
    assert temperature_limit(300.0, 18) == pytest.approx(300.0 * (1 + 8 / 3))  # 8 sigma, sqrt(2/18) = 1/3
    system, _, _ = diatomics(4)
    assert degrees_of_freedom(system) == 24
    system.addConstraint(0, 1, BOND_NM)
    system.addForce(openmm.CMMotionRemover())
    system.addParticle(0.0)                                                     # a virtual site's slot: no dof
    assert degrees_of_freedom(system) == 24 - 1 - 3


def test_short_runs_stop_a_boiling_run():
    system, x, _ = diatomics()
    box = np.eye(3) * 12.0
    with pytest.raises(OverheatingError, match="a short run .* is boiling"):
        sample_run(system, x, box, temperature_K=TARGET_K, steps=400, timestep_ps=BOILING_STEP_PS, frames=20, minimize=False,
                   platform="Reference")


def test_cg_simulation_stops_a_boiling_run_and_checkpoints_nothing_hot(tmp_path):
    system, x, topology = diatomics()
    sim = CGSimulation(topology, system, x, tmp_path, temperature_K=TARGET_K, timestep_ps=BOILING_STEP_PS, report_interval=2,
                       checkpoint_interval=4, platform="Reference")
    with pytest.raises(CGInstabilityError, match=r"became unstable between steps \d+ and \d+ .*boiling") as info:
        sim.run(400, progress=False, minimize=False)
    failed = int(str(info.value).split("between steps ")[1].split(" and")[0])
    state = tmp_path / "cg_state.json"
    # the checkpoint, if any, is of the last check that passed, before the failing chunk
    assert not state.exists() or json.loads(state.read_text())["steps"] == failed
    if state.exists():
        context = sim.simulation.context
        context.loadCheckpoint((tmp_path / "cg.chk").read_bytes())
        v = context.getState(getVelocities=True).getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        kinetic = 0.5 * 12.0 * float(np.sum(np.asarray(v) ** 2))
        assert 2 * kinetic / (900 * 0.0083144626) < temperature_limit(TARGET_K, 900)


def test_a_command_whose_run_boils_ends_with_an_error_line(capsys):
    from multiscale.cli import run_main

    def job(argv):
        run_checked(*checked_context(BOILING_STEP_PS), BOILING_STEP_PS)
        return 0

    assert run_main(job, [], prog="job") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("job: error: the diatomics is boiling") and "a changed setting needs a new --out" in err[-1]
