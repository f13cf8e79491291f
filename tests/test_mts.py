"""Multiple time stepping (OpenMM's MTSLangevinIntegrator through CGSimulation): bonded forces on
the inner step, pair forces on the outer one, sample the same ensemble as plain Langevin at the
inner step: temperature, bond lengths and pair energy of an OpenMM bead-spring melt."""

import numpy as np
import openmm
import pytest
from openmm import app

import multiscale  # noqa: F401
from multiscale.openmm.cg_simulation import CGSimulation
from multiscale.openmm.mts import FAST_GROUP, SLOW_GROUP, mts_langevin, split_fast_slow
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
