"""multiscale.validate against references it did not write: analytic harmonic frequencies,
OpenMM's own forces (dense finite-difference Hessians of the same Systems), analytic LJ cutoff
jumps, and deliberately broken Systems that must fail the right check."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import app, unit

from multiscale.validate import QUICK, ValidationSettings, validate
from multiscale.validate.stiffness import lanczos_largest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conftest import random_configuration  # noqa: E402
from systems.water import flexible_water_system, water_cluster  # noqa: E402


def _diatomic(k=4.6e5, r0=0.1):
    system = openmm.System()
    system.addParticle(16.0)
    system.addParticle(1.008)
    bond = openmm.HarmonicBondForce()
    bond.addBond(0, 1, r0, k)
    system.addForce(bond)
    return system


def _dense_mass_weighted_hessian(system, positions, box=None, h=1e-5, project_constraints=False):
    """The mass-weighted Hessian by central differences of OpenMM's own forces (Reference, double)."""
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    n = len(positions)
    masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)])
    hessian = np.zeros((3 * n, 3 * n))
    for k in range(3 * n):
        columns = []
        for sign in (1, -1):
            x = positions.copy()
            x[k // 3, k % 3] += sign * h
            context.setPositions(x)
            columns.append(context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer).ravel())
        hessian[:, k] = -(columns[0] - columns[1]) / (2 * h)
    hessian = 0.5 * (hessian + hessian.T)
    w = 1 / np.sqrt(np.repeat(masses, 3))
    hmw = w[:, None] * hessian * w[None, :]
    if project_constraints and system.getNumConstraints():
        cols = []
        for c in range(system.getNumConstraints()):
            i, j, _ = system.getConstraintParameters(c)
            e = positions[i] - positions[j]
            e /= np.linalg.norm(e)
            v = np.zeros(3 * n)
            v[3 * i:3 * i + 3] = e / np.sqrt(masses[i])
            v[3 * j:3 * j + 3] = -e / np.sqrt(masses[j])
            cols.append(v)
        q, _ = np.linalg.qr(np.array(cols).T)
        p = np.eye(3 * n) - q @ q.T
        hmw = p @ hmw @ p
    return hmw


def test_lanczos_finds_the_largest_eigenvalue_of_a_known_matrix():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    values = np.concatenate([rng.uniform(0, 10, 59), [25.0]])
    matrix = q @ np.diag(values) @ q.T
    result = lanczos_largest(lambda v: matrix @ v, 60, 40, 1e-10, rng)
    assert result.converged
    assert result.value == pytest.approx(25.0, rel=1e-8)
    assert abs(result.vector @ q[:, -1]) == pytest.approx(1.0, abs=1e-5)


def test_harmonic_diatomic_matches_the_analytic_frequency():
    k, r0 = 4.6e5, 0.1
    system = _diatomic(k, r0)
    report = validate(system, np.array([[0.0, 0.0, 0.0], [r0, 0.0, 0.0]]), platform="Reference", quick=True)
    mu = 16.0 * 1.008 / (16.0 + 1.008)
    omega = math.sqrt(k / mu)  # ps^-1
    s = report.stiffness
    assert s["lambda_max"] == pytest.approx(k / mu, rel=1e-6)
    assert s["omega_max"] == pytest.approx(omega, rel=1e-6)
    assert s["period_fs"] == pytest.approx(2 * math.pi / omega * 1000, rel=1e-6)
    assert s["stability_limit_fs"] == pytest.approx(2 / omega * 1000, rel=1e-6)
    assert s["recommended_timestep_fs"] == pytest.approx(QUICK.safety_fraction * 2 / omega * 1000, rel=1e-6)
    assert s["stretch_fraction"] > 0.999
    assert report.passed, report.table()
    assert report.check("nve_drift").passed


def test_stability_limit_is_where_verlet_goes_unstable():
    """The limit 2/ω is not a convention: just below it the diatomic's NVE stays bounded, just above it blows up."""
    k, r0 = 4.6e5, 0.1
    mu = 16.0 * 1.008 / (16.0 + 1.008)
    limit_ps = 2 / math.sqrt(k / mu)
    from multiscale.openmm.evaluation import run_nve

    start = np.array([[0.0, 0.0, 0.0], [r0 + 0.002, 0.0, 0.0]])
    below = run_nve(_diatomic(k, r0), start, None, timestep_ps=0.97 * limit_ps, steps=2000, temperature_K=0.001,
                    report_every=50, platform="Reference")
    above = run_nve(_diatomic(k, r0), start, None, timestep_ps=1.03 * limit_ps, steps=2000, temperature_K=0.001,
                    report_every=50, platform="Reference")
    assert not below.blew_up and np.max(np.abs(below.potential)) < 10.0
    assert above.blew_up or np.max(np.abs(above.potential)) > 1e3


def test_flexible_tip3p_stiffest_mode_is_an_OH_stretch_matching_openmm_hessian():
    topology, positions = water_cluster(6, seed=1)
    system = flexible_water_system(topology)
    report = validate(system, positions, platform="Reference", settings=ValidationSettings(
        thermal_configurations=1, thermal_steps=50, nve_steps=200, symmetry_trials=1, gradient_particles=3))
    structure = report.stiffness["configurations"][0]
    dense = np.linalg.eigvalsh(_dense_mass_weighted_hessian(system, positions))
    period_dense = 2 * math.pi / math.sqrt(dense[-1]) * 1000
    assert structure["period_fs"] == pytest.approx(period_dense, rel=0.01)
    assert structure["lambda_max"] == pytest.approx(dense[-1], rel=1e-4)  # the same λ, not only within 1 %
    elements = [a.element.symbol for a in topology.atoms()]
    i, j = report.stiffness["mode_pair"]
    assert sorted([elements[i], elements[j]]) == ["H", "O"]
    assert report.stiffness["stretch_fraction"] > 0.8
    assert 7.5 < report.stiffness["period_fs"] < 10.5  # an O–H stretch (~3,300–4,400 cm⁻¹)
    assert report.passed, report.table()


def test_with_constraints_the_stiffest_unconstrained_mode_is_reported():
    topology, _ = water_cluster(1, seed=0)
    forcefield = app.ForceField("amber14/tip3p.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, rigidWater=False)
    assert system.getNumConstraints() == 2
    # the force field's own minimum: O–H at the constraint length, H–O–H at θ0
    angles = next(f for f in system.getForces() if isinstance(f, openmm.HarmonicAngleForce))
    *_, theta0, k_theta = angles.getAngleParameters(0)
    theta0, k_theta = theta0.value_in_unit(unit.radian), k_theta.value_in_unit(unit.kilojoule_per_mole / unit.radian ** 2)
    r = system.getConstraintParameters(0)[2].value_in_unit(unit.nanometer)
    positions = np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0], [r * math.cos(theta0), r * math.sin(theta0), 0.0]])
    report = validate(system, positions, platform="Reference", settings=ValidationSettings(
        thermal_configurations=1, thermal_steps=50, nve_steps=200, symmetry_trials=1, gradient_particles=3))
    # OpenMM applies the constraints to the structure first in MD; compare at the structure itself
    projected = np.linalg.eigvalsh(_dense_mass_weighted_hessian(system, positions, project_constraints=True))
    free = np.linalg.eigvalsh(_dense_mass_weighted_hessian(flexible_water_system(topology), positions))
    structure = report.stiffness["configurations"][0]
    assert structure["lambda_max"] == pytest.approx(projected[-1], rel=1e-3)
    assert structure["lambda_max"] < 0.5 * free[-1]  # the O–H stretches are gone; the bend is left
    assert report.stiffness["constrained"] == 2
    # the H–O–H bend with rigid bonds, analytically (Wilson's G matrix, inverse masses μ): ω² = k_θ G_eff,
    # G_eff = G_θθ − g_rθᵀ G_rr⁻¹ g_rθ (the bend's kinetic coupling to the two fixed bonds removed), with
    # G_θθ = 2μ_H/r² + μ_O(2 − 2 cos θ)/r², G_rr = [[μ_H+μ_O, μ_O cos θ], [μ_O cos θ, μ_H+μ_O]],
    # g_rθ = −μ_O sin θ / r (both bonds)
    mu_o, mu_h = (1 / system.getParticleMass(i).value_in_unit(unit.dalton) for i in (0, 1))
    g_tt = 2 * mu_h / r ** 2 + mu_o * (2 - 2 * math.cos(theta0)) / r ** 2
    g_rr = np.array([[mu_h + mu_o, mu_o * math.cos(theta0)], [mu_o * math.cos(theta0), mu_h + mu_o]])
    g_rt = np.full(2, -mu_o * math.sin(theta0) / r)
    g = g_tt - g_rt @ np.linalg.solve(g_rr, g_rt)
    assert structure["lambda_max"] == pytest.approx(k_theta * g, rel=1e-5)


class _NotTheGradient:
    """A PythonForce callable whose forces are 1.3 × −∇E of a harmonic bond (deliberately broken)."""

    def __init__(self, k=1000.0, r0=0.15, scale=1.3):
        self.k, self.r0, self.scale = k, r0, scale

    def __call__(self, state):
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        d = x[1] - x[0]
        r = np.linalg.norm(d)
        energy = 0.5 * self.k * (r - self.r0) ** 2
        f1 = -self.k * (r - self.r0) * d / r * self.scale
        forces = np.zeros_like(x)
        forces[1], forces[0] = f1, -f1
        return energy, forces


def test_forces_that_are_not_the_gradient_fail_the_gradient_check():
    system = openmm.System()
    for _ in range(2):
        system.addParticle(12.0)
    system.addForce(openmm.PythonForce(_NotTheGradient(), {}))
    report = validate(system, np.array([[0.0, 0.0, 0.0], [0.17, 0.01, 0.0]]), platform="Reference", quick=True)
    check = report.check("gradient")
    assert check.passed is False
    assert check.value == pytest.approx(0.3 / 1.3, rel=1e-3)  # |F − F_fd| / |F| of a 1.3× force
    assert "not the gradient" in check.detail
    assert not report.passed and "gradient" in report.to_dict()["summary"]["failed"]


def _lj_box(n=48, edge=2.0, seed=0):
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        p = rng.uniform(0, edge, 3)
        if all(np.linalg.norm((p - q) - edge * np.round((p - q) / edge)) > 0.33 for q in points):
            points.append(p)
    return np.array(points)


def _lj_system(edge, cutoff, sigma=0.3, epsilon=1.0, shift=False, switch=None, n=48):
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(edge, 0, 0), openmm.Vec3(0, edge, 0), openmm.Vec3(0, 0, edge))
    expression = "4*eps*((s/r)^12-(s/r)^6)"
    if shift:
        expression += f" - 4*eps*((s/{cutoff})^12-(s/{cutoff})^6)"  # energy continuous, force not
    force = openmm.CustomNonbondedForce(expression)
    force.addGlobalParameter("eps", epsilon)
    force.addGlobalParameter("s", sigma)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(cutoff)
    if switch is not None:
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance(switch)
    for _ in range(n):
        system.addParticle(39.9)
        force.addParticle([])
    system.addForce(force)
    return system


SMOOTH_ONLY = ValidationSettings(symmetry_trials=1, gradient_particles=2, thermal_configurations=1, thermal_steps=20,
                                 nve_steps=100, lanczos_iterations=15)


def test_truncated_lj_fails_energy_continuity_by_the_analytic_jump():
    edge, cutoff, sigma, epsilon = 2.0, 0.6, 0.3, 1.0
    positions = _lj_box(edge=edge)
    report = validate(_lj_system(edge, cutoff), positions, platform="Reference", settings=SMOOTH_ONLY)
    check = report.check("energy_continuity")
    jump = abs(4 * epsilon * ((sigma / cutoff) ** 12 - (sigma / cutoff) ** 6))
    assert check.passed is False
    assert check.value == pytest.approx(jump, rel=0.01)
    assert "0.6 nm cutoff" in check.detail and "switching" in check.detail
    assert not report.passed


def test_shifted_lj_fails_force_continuity_and_switched_lj_passes():
    edge, cutoff, sigma, epsilon = 2.0, 0.6, 0.3, 3.0
    positions = _lj_box(edge=edge)
    shifted = validate(_lj_system(edge, cutoff, epsilon=epsilon, shift=True), positions, platform="Reference", settings=SMOOTH_ONLY)
    x = sigma / cutoff
    force_at_cutoff = abs(24 * epsilon / cutoff * (2 * x ** 12 - x ** 6))
    assert shifted.check("energy_continuity").passed
    check = shifted.check("force_continuity")
    assert check.passed is False
    assert check.value == pytest.approx(force_at_cutoff, rel=0.02)
    # a force jump this small is legal physics but visible; with a switch both pass
    switched = validate(_lj_system(edge, cutoff, epsilon=epsilon, switch=0.5), positions, platform="Reference", settings=SMOOTH_ONLY)
    assert switched.check("energy_continuity").passed and switched.check("force_continuity").passed


def test_symmetry_checks_pass_for_a_model_and_catch_a_broken_invariance(model64):
    """The project's own equivariant model passes every symmetry check in a periodic triclinic
    cell; an external field (not translation invariant) fails translation."""
    from multiscale.openmm.assembly import MLTerm, assemble_system

    rng = np.random.default_rng(0)
    box = np.array([[1.3, 0.0, 0.0], [0.3, 1.2, 0.0], [-0.2, 0.25, 1.25]])
    positions = random_configuration(24, 1.2, seed=2)
    types = ["O" if k % 3 == 0 else "H" for k in range(24)]
    masses = [16.0 if t == "O" else 1.008 for t in types]
    system = assemble_system(masses, box_nm=box, terms=[MLTerm(model64, types, True, backend="pythonforce")])
    report = validate(system, positions, box, model=model64, types=types, platform="Reference", backend="pythonforce",
                      settings=ValidationSettings(symmetry_trials=2, gradient_particles=3, thermal_configurations=1,
                                                  thermal_steps=10, nve_steps=50, lanczos_iterations=10, temperature_K=50.0))
    for name in ("translation", "rotation", "lattice_shift", "permutation", "inversion", "force_rotation", "gradient"):
        assert report.check(name).passed, report.check(name).detail
    field = openmm.CustomExternalForce("3*x")
    for i in range(24):
        field.addParticle(i, [])
    system.addForce(field)
    broken = validate(system, positions, box, model=model64, types=types, platform="Reference", backend="pythonforce",
                      settings=ValidationSettings(symmetry_trials=2, gradient_particles=3, thermal_configurations=1,
                                                  thermal_steps=10, nve_steps=50, lanczos_iterations=10, temperature_K=50.0))
    assert broken.check("translation").passed is False
    del rng


def test_bad_input_is_refused_before_any_work():
    system = _diatomic()
    with pytest.raises(ValueError, match="shape"):
        validate(system, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="closer than"):
        validate(system, np.array([[0.0, 0.0, 0.0], [0.001, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="in K"):
        ValidationSettings(temperature_K=30000.0)
    with pytest.raises(ValueError, match="Å"):
        ValidationSettings(hessian_step_nm=0.5)


def _run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "multiscale.validate", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_cli_writes_the_report_and_gates_on_failures(tmp_path):
    system = _diatomic()
    (tmp_path / "diatomic.xml").write_text(openmm.XmlSerializer.serialize(system))
    topology = app.Topology()
    residue = topology.addResidue("OH", topology.addChain())
    topology.addAtom("O", app.element.oxygen, residue)
    topology.addAtom("H", app.element.hydrogen, residue)
    with open(tmp_path / "diatomic.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, [openmm.Vec3(0, 0, 0), openmm.Vec3(0.1, 0, 0)] * unit.nanometer, handle)
    done = _run_cli("--system", tmp_path / "diatomic.xml", "--structure", tmp_path / "diatomic.pdb", "--quick",
                    "--platform", "Reference", "--out", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "out" / "validation.json").read_text())
    for key in ("lambda_max", "omega_max", "period_fs", "stability_limit_fs", "recommended_timestep_fs"):
        assert math.isfinite(data["stiffness"][key])
    assert {"value", "threshold", "passed"} <= set(data["gradient"])
    assert data["summary"]["passed"] is True
    assert (tmp_path / "out" / "validation.md").read_text().startswith("# Validation report")
    assert (tmp_path / "out" / "validation.png").stat().st_size > 10_000
    assert "recommended step" in done.stdout

    edge = 2.0
    positions = _lj_box(edge=edge)
    (tmp_path / "lj.xml").write_text(openmm.XmlSerializer.serialize(_lj_system(edge, 0.6)))  # truncated: not smooth
    argon = app.Topology()
    chain = argon.addChain()
    for _ in range(len(positions)):
        argon.addAtom("AR", app.element.argon, argon.addResidue("AR", chain))
    argon.setPeriodicBoxVectors(np.eye(3) * edge * unit.nanometer)
    with open(tmp_path / "lj.pdb", "w") as handle:
        app.PDBFile.writeFile(argon, positions * unit.nanometer, handle)
    failed = _run_cli("--system", tmp_path / "lj.xml", "--structure", tmp_path / "lj.pdb", "--quick",
                      "--platform", "Reference", cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "FAILED: energy_continuity" in failed.stdout

    # refusals before any work: the command's main through run_main in this process (the two runs
    # above went through the real command line)
    from conftest import run_main_here
    from multiscale.validate.__main__ import PROG, main

    missing = run_main_here(lambda argv: main(argv, prog=PROG), "--structure", tmp_path / "diatomic.pdb", prog=PROG)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("python -m multiscale.validate: error:")
    assert "Traceback" not in missing.stderr
    wrong = run_main_here(lambda argv: main(argv, prog=PROG), "--system", tmp_path / "diatomic.xml", "--structure",
                          tmp_path / "nothing.pdb", prog=PROG)
    assert wrong.returncode == 2 and "error:" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_trained_project_model_passes_and_its_recommended_step_runs_stably(tmp_path):
    """A model trained here on flexible-TIP3P labels of a water molecule (OpenMM as the teacher)
    passes every check through the command; its stiffest mode is the teacher's O–H stretch, and
    NVE at the recommended step stays bounded."""
    from multiscale.data import sample_simulation, write_extxyz
    from multiscale.models import save_model
    from multiscale.training.config import TrainerConfig
    from multiscale.training.loss import LossConfig
    from multiscale.training.workflow import JobConfig, fit_potential

    topology, positions = water_cluster(1, seed=2)
    teacher = flexible_water_system(topology)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 0.0005 * unit.picosecond)
    integrator.setRandomNumberSeed(4)
    simulation = app.Simulation(topology, teacher, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 4)
    simulation.step(200)
    configs = sample_simulation(simulation, num_samples=100, interval=20, system=teacher, progress=False)
    job = JobConfig(model={"cutoff": 0.5, "channels": 8, "num_layers": 2, "lmax": 1, "radial_hidden": 16, "num_basis": 6},
                    trainer=TrainerConfig(epochs=60, batch_size=8, learning_rate=1e-2, device="cpu",
                                          early_stopping_patience=0, seed=0),
                    loss=LossConfig())
    model, _, _ = fit_potential(configs[:85], configs[85:], tmp_path / "train", job, progress=False)
    save_model(model, tmp_path / "water.ckpt")
    write_extxyz(tmp_path / "water.xyz", configs[-1:])
    done = _run_cli("--model", tmp_path / "water.ckpt", "--structure", tmp_path / "water.xyz", "--quick",
                    "--out", tmp_path / "out", cwd=tmp_path)
    data = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert data["summary"]["passed"] is True
    for name in ("translation", "rotation", "permutation", "inversion", "force_rotation", "gradient", "gradient_float64",
                 "energy_continuity", "force_continuity", "timestep", "nve_drift"):
        assert data[name]["passed"] is True, (name, data[name]["detail"])
    step = data["stiffness"]["recommended_timestep_fs"]
    teacher_report = validate(teacher, configs[-1].positions, platform="Reference", quick=True)
    # the stiffest mode is the O–H stretch: λ within 35 % of the teacher's (a 60-epoch model's
    # curvature varies by ~±25 % with the float rounding of its training, e.g. the thread count
    # and JIT state left by earlier tests), far from the H–O–H bend's (~5 times softer)
    assert data["stiffness"]["lambda_max"] == pytest.approx(teacher_report.stiffness["lambda_max"], rel=0.35)
    assert step == pytest.approx(teacher_report.recommended_timestep_fs, rel=0.2)
    # the recommended step in a longer NVE run than the check's: the total energy stays bounded
    from multiscale.models import load_model
    from multiscale.openmm import create_system
    from multiscale.openmm.evaluation import run_nve

    trained = load_model(tmp_path / "water.ckpt")
    system = create_system(topology, trained, periodic=False)
    trace = run_nve(system, configs[-1].positions, None, timestep_ps=step / 1000, steps=2000, temperature_K=300.0,
                    report_every=20, platform="CPU")
    assert not trace.blew_up
    assert np.ptp(trace.total) < 0.1 * np.ptp(trace.potential) + 1.0


def test_cli_refuses_bad_input_with_one_error_line(tmp_path, capsys):
    from multiscale.cli import run_main
    from multiscale.validate.__main__ import main

    system = _diatomic()
    (tmp_path / "diatomic.xml").write_text(openmm.XmlSerializer.serialize(system))
    (tmp_path / "not_a_system.xml").write_text("<System>broken")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    topology = app.Topology()
    residue = topology.addResidue("W", topology.addChain())
    for name, element in (("O", app.element.oxygen), ("H1", app.element.hydrogen), ("H2", app.element.hydrogen)):
        topology.addAtom(name, element, residue)
    with open(tmp_path / "water.pdb", "w") as handle:
        app.PDBFile.writeFile(topology, [openmm.Vec3(0, 0, 0), openmm.Vec3(0.096, 0, 0), openmm.Vec3(-0.024, 0.093, 0)]
                              * unit.nanometer, handle)
    cases = [
        (["--system", tmp_path / "diatomic.xml", "--structure", tmp_path / "water.pdb"], "2 particles but the structure has 3"),
        (["--system", tmp_path / "not_a_system.xml", "--structure", tmp_path / "water.pdb"], "not an OpenMM System XML"),
        (["--model", tmp_path / "empty.ckpt", "--structure", tmp_path / "water.pdb"], "empty"),
        (["--system", tmp_path / "diatomic.xml", "--structure", tmp_path / "notes.txt"], "unknown structure format"),
        (["--system", tmp_path / "diatomic.xml", "--structure", tmp_path / "water.pdb", "--platform", "Nope"],
         "not available"),
        (["--system", tmp_path / "diatomic.xml", "--structure", tmp_path / "water.pdb", "--temperature", "-3"], "> 0"),
    ]
    for argv, expected in cases:
        try:
            code = run_main(lambda a: main(a, prog="multiscale validate"), [str(a) for a in argv], prog="multiscale validate")
        except SystemExit as stop:  # argparse's own refusals
            code = stop.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (argv, err)
        assert err[-1].startswith("multiscale validate: error:") and expected in err[-1], (expected, err[-1])


def test_constraint_projection_by_clusters_equals_the_dense_projector():
    """Clusters of constraints projected out one by one (no dense 3N × N_c matrix) give the
    orthogonal projector onto the complement of all constraint gradients."""
    from multiscale.validate.stiffness import MassWeightedHessian

    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 1.5, size=(9, 3))
    masses = np.array([12.0, 1.0, 1.0, 1.0, 16.0, 1.0, 1.0, 14.0, 0.0])  # a CH3, a water, a lone N, a virtual site
    constraints = [(0, 1, 0.1), (0, 2, 0.1), (0, 3, 0.1), (4, 5, 0.1), (4, 6, 0.1), (5, 6, 0.15)]
    hessian = MassWeightedHessian(None, positions, None, masses, 1e-4, constraints)
    columns = []
    for i, j, _ in constraints:
        e = (positions[i] - positions[j]) / np.linalg.norm(positions[i] - positions[j])
        c = np.zeros((9, 3))
        c[i], c[j] = e / np.sqrt(masses[i]), -e / np.sqrt(masses[j])
        columns.append(c[masses > 0].ravel())
    q, _ = np.linalg.qr(np.array(columns).T)
    dense = np.eye(q.shape[0]) - q @ q.T
    for _ in range(3):
        y = rng.normal(size=q.shape[0])
        assert np.allclose(hessian.project(y), dense @ y, atol=1e-12)


def test_the_figure_is_written_when_the_nve_run_blew_up_at_once(tmp_path):
    from multiscale.validate.plots import plot_validation

    empty = {"time_ps": [], "potential": [], "kinetic": [], "total": [], "timestep_fs": 1.0, "degrees_of_freedom": 3}
    path = plot_validation([], empty, tmp_path / "v.png")
    assert path.stat().st_size > 1000
