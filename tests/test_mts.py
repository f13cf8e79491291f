"""Multiple time stepping (RespaLangevinIntegrator through CGSimulation): bonded forces on the
inner step, pair forces on the outer one, sample the same ensemble as plain Langevin at the inner
step: temperature, bond lengths and pair energy of an OpenMM bead-spring melt; without friction
the integrator follows OpenMM's own MTSLangevinIntegrator, with and without constraints."""

import numpy as np
import openmm
import pytest
from openmm import app, unit

import multiscale  # noqa: F401
from multiscale.openmm.cg_simulation import CGSimulation
from multiscale.openmm.mts import FAST_GROUP, SLOW_GROUP, RespaLangevinIntegrator, mts_langevin, split_fast_slow
from test_tabulated import T, _bead_spring


def _topology(n):
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n):
        top.addAtom("B", app.Element.getBySymbol("C"), top.addResidue("B", chain))
    return top


def _run(data, tmp, inner_steps, timestep_ps, steps, seed):
    system = openmm.XmlSerializer.clone(data["system"])
    sim = CGSimulation(_topology(system.getNumParticles()), system, data["X"][-1], tmp, name=f"mts{inner_steps}",
                       temperature_K=T, timestep_ps=timestep_ps, report_interval=50, checkpoint_interval=steps,
                       platform="CPU", seed=seed, log_energies=True, inner_steps=inner_steps)
    sim.run(steps, progress=False)
    log = np.genfromtxt(tmp / f"mts{inner_steps}_energies.csv", delimiter=",", names=True)
    import mdtraj

    traj = mdtraj.load_dcd(str(tmp / f"mts{inner_steps}.dcd"), top=str(tmp / f"mts{inner_steps}.pdb"))
    bonds = mdtraj.compute_distances(traj, np.array(data["bonds"]), periodic=True)
    return log["temperature_K"][10:], bonds[10:], log["potential_kj_mol"][10:]


def test_mts_samples_the_plain_langevin_ensemble(tmp_path):
    data = _bead_spring(frames=1)
    plain_T, plain_b, plain_u = _run(data, tmp_path, 1, 0.005, 16_000, seed=1)
    mts_T, mts_b, mts_u = _run(data, tmp_path, 4, 0.02, 4_000, seed=2)
    assert np.mean(plain_T) == pytest.approx(T, rel=0.03)
    assert np.mean(mts_T) == pytest.approx(T, rel=0.03)
    assert np.mean(mts_b) == pytest.approx(np.mean(plain_b), rel=0.01)
    assert np.std(mts_b) == pytest.approx(np.std(plain_b), rel=0.1)
    # potential energy: both runs sample one ensemble. The bound is the difference's own standard
    # error, from block means of both correlated series (not the plain run's alone: the short MTS
    # run carries most of it), plus 0.02 kJ/mol per bead of allowed splitting bias.
    n = len(data["types"])
    sem = np.hypot(_block_sem(mts_u), _block_sem(plain_u))
    assert abs(np.mean(mts_u) - np.mean(plain_u)) < 4.0 * sem + 0.02 * n


def _block_sem(series, blocks=8):
    """Standard error of a correlated series' mean from the scatter of its block means."""
    means = [np.mean(b) for b in np.array_split(np.asarray(series), blocks)]
    return np.std(means, ddof=1) / np.sqrt(blocks)


def test_force_groups_and_refusals():
    data = _bead_spring(frames=1)
    system = openmm.XmlSerializer.clone(data["system"])
    assert split_fast_slow(system) == (2, 1)
    groups = [f.getForceGroup() for f in system.getForces()]
    assert groups == [FAST_GROUP, FAST_GROUP, SLOW_GROUP]
    with pytest.raises(ValueError, match="whole number"):
        mts_langevin(system, T, 1.0, 0.02, 2.5)
    bonded_only = openmm.System()
    bonded_only.addParticle(1.0)
    bonded_only.addForce(openmm.HarmonicBondForce())
    with pytest.raises(ValueError, match="inner_steps=1"):
        mts_langevin(bonded_only, T, 1.0, 0.02, 4)


def _pair(data, integrator, positions, velocities):
    system = openmm.XmlSerializer.clone(data["system"])
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.setVelocities(velocities)
    return context


def _state(context):
    state = context.getState(getPositions=True, getVelocities=True)
    return state.getPositions(asNumpy=True)._value, state.getVelocities(asNumpy=True)._value


@pytest.mark.parametrize("constraints", [False, True])
def test_respa_without_friction_follows_openmms_mts_integrator(constraints):
    """With friction 1e-20/ps (a = 1 and b = 0 in double precision) the thermostat drops out and
    both integrators are velocity-Verlet RESPA: from one state, 25 outer steps of 60 fs with 4
    bonded sub-steps give one trajectory to rounding (Reference platform, double precision); with
    constraints (a System whose first bonds are constrained) the constraint steps are OpenMM's."""
    data = _bead_spring(frames=1)
    system = data["system"] = openmm.XmlSerializer.clone(data["system"])
    if constraints:
        for i, j in data["bonds"][:10]:
            system.addConstraint(int(i), int(j), float(np.linalg.norm(data["X"][-1][i] - data["X"][-1][j])))
    split_fast_slow(system)
    rng = np.random.default_rng(0)
    x = data["X"][-1]
    v = rng.normal(scale=0.3, size=x.shape)
    ours = RespaLangevinIntegrator(T, 1e-20, 0.06, 4, constraints=constraints)
    theirs = openmm.MTSLangevinIntegrator(T, 1e-20, 0.06, [(SLOW_GROUP, 1), (FAST_GROUP, 4)])
    a, b = _pair(data, ours, x, v), _pair(data, theirs, x, v)
    for integrator in (ours, theirs):
        integrator.step(25)
    (xa, va), (xb, vb) = _state(a), _state(b)
    moved = np.abs(xa - x).max()
    assert moved > 0.05  # it moved: the comparison means something
    assert np.abs(xa - xb).max() < 1e-9 * max(1.0, moved)
    assert np.abs(va - vb).max() < 1e-7
    if constraints:
        for k in range(10):
            i, j, d = system.getConstraintParameters(k)
            assert np.linalg.norm(xa[i] - xa[j]) == pytest.approx(d.value_in_unit(unit.nanometer), abs=1e-5)
    # the lean form: 1 context update + 2 slow kicks + 1 opening fast kick + 4 x (A O A kick), and
    # with constraints 4 steps more per sub-step and a closing one
    assert ours.getNumComputations() == 1 + 2 + 1 + 4 * 4 + (4 * 4 + 1 if constraints else 0)


def test_respa_loads_a_checkpoint_of_openmms_mts_integrator():
    """A run checkpointed with OpenMM's MTSLangevinIntegrator resumes with this one (the same
    integrator variables), positions and velocities unchanged."""
    data = _bead_spring(frames=1)
    split_fast_slow(data["system"])
    x = data["X"][-1]
    theirs = openmm.MTSLangevinIntegrator(T, 1.0, 0.06, [(SLOW_GROUP, 1), (FAST_GROUP, 3)])
    old = _pair(data, theirs, x, np.zeros_like(x))
    theirs.step(5)
    checkpoint = old.createCheckpoint()
    new = _pair(data, RespaLangevinIntegrator(T, 1.0, 0.06, 3), x + 0.1, np.zeros_like(x))
    new.loadCheckpoint(checkpoint)
    (xa, va), (xb, vb) = _state(old), _state(new)
    assert np.array_equal(xa, xb) and np.array_equal(va, vb)
    new.getIntegrator().step(5)  # and runs on
    assert np.all(np.isfinite(_state(new)[0]))


def test_respa_refuses_bad_arguments():
    with pytest.raises(ValueError, match="whole number"):
        RespaLangevinIntegrator(T, 1.0, 0.06, 0)
    with pytest.raises(ValueError, match="must be > 0"):
        RespaLangevinIntegrator(T, 0.0, 0.06, 3)
