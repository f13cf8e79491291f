"""Iterated pressure correction: a tabulated model's ramp is the analytic A (1 − r/r_c), and
npt_density measures what OpenMM's barostat does (the job's use is in test_polymer_cg_protocol)."""

import numpy as np
import openmm
import pytest

import multiscale  # noqa: F401
from multiscale.openmm.density_matching import npt_density
from test_tabulated import T, _bead_spring


def test_tabulated_ramp_is_the_analytic_ramp():
    from multiscale.cg.tabulated import Table, TabulatedModel

    pair = Table("pair", np.linspace(0.3, 1.0, 36), np.concatenate([np.linspace(50, -2, 35), [0.0]]), 1000.0)
    model = TabulatedModel({("A", "A"): pair}, {}, {}, {}, "1-3", 1.0, T)
    ramped = model.with_pair_ramp(-2.5)
    r = np.linspace(0.35, 0.97, 20)
    np.testing.assert_allclose(ramped.pairs[("A", "A")].energy_at(r) - pair.energy_at(r),
                               -2.5 * (1 - r / 1.0) + (ramped.pairs[("A", "A")].energy_at(0.98) - pair.energy_at(0.98)
                                                       + 2.5 * (1 - 0.98)), atol=1e-9)
    assert ramped.fit["pair_ramp_kj_mol"] == -2.5 and "pair_ramp_kj_mol" not in model.fit


def test_npt_density_follows_the_barostat():
    """Compressing at 2000 bar makes the bead-spring melt denser than at 1 bar."""
    data = _bead_spring(frames=1, box=3.0)
    found = {}
    for pressure in (1.0, 2000.0):
        system = openmm.XmlSerializer.clone(data["system"])
        barostat = openmm.MonteCarloBarostat(pressure, T, 10)
        barostat.setRandomNumberSeed(4)
        system.addForce(barostat)
        found[pressure] = npt_density(system, data["X"][-1], data["B"][-1], temperature_K=T, steps=6000, timestep_ps=0.01, seed=3)
    mass = 56.0 * len(data["types"])
    assert found[2000.0]["mean"] > found[1.0]["mean"] + 3 * (found[1.0]["sem"] + found[2000.0]["sem"])
    assert 0.1 < found[1.0]["mean"] < mass / 1.0  # g/cm³, not amu/nm³
