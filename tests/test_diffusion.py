"""Chain centre-of-mass diffusion: recovers the known D of a random walk (Einstein relation
⟨Δr²⟩ = 6 D t) through periodic wrapping."""

import mdtraj as md
import numpy as np
import pytest

from multiscale.cg.analysis import chain_center_of_mass_msd, chain_diffusion_coefficient


def _walkers(n_chains=200, frames=400, dt=2.0, D=0.01, box=3.0, seed=0):
    rng = np.random.default_rng(seed)
    top = md.Topology()
    for _ in range(n_chains):
        chain = top.add_chain()
        res = top.add_residue("B", chain)
        a = top.add_atom("B1", md.element.carbon, res)
        b = top.add_atom("B2", md.element.carbon, res)
        top.add_bond(a, b)
    start = rng.uniform(0, box, (n_chains, 3))
    path = start + np.cumsum(rng.normal(scale=np.sqrt(2 * D * dt), size=(frames, n_chains, 3)), axis=0)
    xyz = np.empty((frames, 2 * n_chains, 3))
    xyz[:, 0::2] = path
    xyz[:, 1::2] = path + np.array([0.3, 0.0, 0.0])
    xyz = np.mod(xyz, box)  # wrapped per bead, as a DCD written with enforcePeriodicBox may be
    cell = np.tile(np.eye(3) * box, (frames, 1, 1))
    traj = md.Trajectory(xyz, top)
    traj.unitcell_vectors = cell
    return traj


def test_random_walk_diffusion_is_recovered():
    traj = _walkers()
    D = chain_diffusion_coefficient(traj, np.ones(traj.n_atoms), frame_interval_ps=2.0)
    assert D == pytest.approx(0.01, rel=0.1)
    lags, msd = chain_center_of_mass_msd(traj, np.ones(traj.n_atoms))
    # linear in the lag (no wrap-around plateau at the box size)
    assert msd[-1] / msd[len(msd) // 2 - 1] == pytest.approx(lags[-1] / lags[len(msd) // 2 - 1], rel=0.15)
    assert msd[-1] > (3.0 / 2) ** 2 * 3


def test_refusals():
    traj = _walkers(frames=3)
    with pytest.raises(ValueError, match="4 frames"):
        chain_center_of_mass_msd(traj, np.ones(traj.n_atoms))
    with pytest.raises(ValueError, match="ps"):
        chain_diffusion_coefficient(_walkers(frames=10), np.ones(400), frame_interval_ps=0.0)
