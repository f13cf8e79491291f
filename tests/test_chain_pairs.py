"""Chain-pair tables: corrections on the distances of bead pairs a given number of bonds apart
within one chain (1-5, 1-6, …), refined by iterative Boltzmann refinement to the reference's
distributions. Checked against the bond graph by hand, distances measured across periodic
boundaries, the refinement's analytic step for Gaussians, and OpenMM's energies and forces
(finite differences) of both forms."""

import mdtraj
import numpy as np
import openmm
import pytest

import multiscale  # noqa: F401
from multiscale.cg.analysis import chain_pair_values
from multiscale.cg.tabulated import Table, TabulatedModel, refine_bonded
from multiscale.cg.topology import BondGraph
from multiscale.openmm.mts import FAST_GROUP, SLOW_GROUP, split_fast_slow
from multiscale.openmm.tabulated import CHAIN_PAIR_FORCE, chain_pair_groups, tabulated_forces
from multiscale.units import kT

T = 450.0
LENGTH = 6


def _chains(n_chains=2):
    types = (["E"] + ["M"] * (LENGTH - 2) + ["E"]) * n_chains
    bonds = [(c * LENGTH + k, c * LENGTH + k + 1) for c in range(n_chains) for k in range(LENGTH - 1)]
    return types, bonds


def _topology(types, bonds):
    top = mdtraj.Topology()
    atoms = []
    for c in range(len(types) // LENGTH):
        chain = top.add_chain()
        residue = top.add_residue("PE", chain)
        atoms += [top.add_atom(types[c * LENGTH + k], None, residue) for k in range(LENGTH)]
    for i, j in bonds:
        top.add_bond(atoms[i], atoms[j])
    return top


def _helix(start, n=LENGTH):
    """A bent chain whose beads are 0.38 nm apart: its 1-6 distance is ~1.5 nm."""
    k = np.arange(n)
    return np.asarray(start) + np.stack([0.3 * k, 0.2 * np.cos(1.3 * k), 0.2 * np.sin(1.3 * k)], axis=1)


def test_separated_pairs_are_exactly_that_many_bonds_apart():
    chain = BondGraph(6, [(k, k + 1) for k in range(5)])
    np.testing.assert_array_equal(chain.separated(4), [[0, 4], [1, 5]])
    np.testing.assert_array_equal(chain.separated(5), [[0, 5]])
    assert chain.separated(6).shape == (0, 2)
    # a ring of six: the opposite beads are three bonds apart both ways, the others closer
    ring = BondGraph(6, [(k, (k + 1) % 6) for k in range(6)])
    np.testing.assert_array_equal(ring.separated(3), [[0, 3], [1, 4], [2, 5]])
    assert ring.separated(4).shape == (0, 2)
    # two molecules: no pair between them
    two = BondGraph(6, [(0, 1), (1, 2), (3, 4), (4, 5)])
    assert two.separated(2).tolist() == [[0, 2], [3, 5]]
    with pytest.raises(ValueError, match="hops"):
        chain.separated(0)


def test_chain_pair_distances_are_measured_on_whole_chains():
    """A chain wrapped across a 2 nm box: its 1-6 distance (~1.6 nm, beyond half the box) is the
    unwrapped one, not the minimum image."""
    types, bonds = _chains(2)
    x = np.concatenate([_helix([0.3, 1.0, 1.0]), _helix([0.2, 0.4, 0.3])])
    box = 2.0
    traj = mdtraj.Trajectory((x % box)[None].astype(np.float32), _topology(types, bonds))
    traj.unitcell_vectors = (box * np.eye(3))[None].astype(np.float32)
    values = chain_pair_values(traj, [5, 4])
    assert sorted(values) == [(4, "E", "M"), (5, "E", "E")]
    expected = [np.linalg.norm(x[c * 6 + 5] - x[c * 6]) for c in range(2)]
    assert max(expected) > box / 2
    np.testing.assert_allclose(np.sort(values[(5, "E", "E")]), np.sort(expected), atol=1e-5)
    assert values[(4, "E", "M")].size == 4  # two 1-5 pairs per chain, one frame
    with pytest.raises(ValueError, match="bonds"):
        chain_pair_values(traj, [1])


def test_chain_pair_tables_round_trip_and_start_at_zero(tmp_path):
    model = TabulatedModel({}, {}, {}, {}, "1-3", 1.0, T)
    rng = np.random.default_rng(0)
    reference = {(5, "E", "E"): rng.normal(1.7, 0.3, 500), (4, "M", "E"): rng.normal(1.4, 0.2, 500)}
    out = model.with_chain_pairs(reference, spacing_nm=0.04)
    assert sorted(out.chain_pairs) == [(4, "E", "M"), (5, "E", "E")]  # types in canonical order
    assert not model.chain_pairs  # a copy
    table = out.chain_pairs[(5, "E", "E")]
    assert table.knots[0] < reference[(5, "E", "E")].min() and table.knots[-1] > reference[(5, "E", "E")].max()
    np.testing.assert_allclose(table.energy_at(np.linspace(0.2, 3.5, 50)), 0.0)
    table.force[:] = np.sin(table.knots)
    out.save(tmp_path / "m.json")
    back = TabulatedModel.load(tmp_path / "m.json")
    assert sorted(back.chain_pairs) == sorted(out.chain_pairs)
    np.testing.assert_allclose(back.chain_pairs[(5, "E", "E")].force, table.force)
    # a model saved before chain pairs existed loads without them
    data = out.to_dict()
    del data["chain_pairs"]
    assert TabulatedModel.from_dict(data).chain_pairs == {}


def test_refinement_moves_a_chain_pair_table_by_the_boltzmann_step():
    """CG 1-6 distances 0.1 nm longer than the reference's (Gaussians of equal width σ): the step
    is a constant force −kBT Δμ/σ² that pulls them in (σ broadened by the kernel); the
    tails, beyond the chain-pair floor, are left alone."""
    rng = np.random.default_rng(1)
    sigma, shift = 0.25, 0.1
    reference = {(5, "E", "E"): rng.normal(1.7, sigma, 60_000)}
    model = TabulatedModel({}, {}, {}, {}, "1-3", 1.0, T).with_chain_pairs(reference)
    cg = {(5, "E", "E"): rng.normal(1.7 + shift, sigma, 60_000)}
    refined = refine_bonded(model, {"chain_pair": reference}, {"chain_pair": cg}, temperature_K=T)
    table = refined.chain_pairs[(5, "E", "E")]
    spacing = float(np.diff(table.knots)[0])
    centre = (table.knots > 1.7 - sigma) & (table.knots < 1.7 + shift + sigma)
    expected = -kT(T) * shift / (sigma ** 2 + (1.5 * spacing) ** 2)
    assert np.median(table.force[centre]) == pytest.approx(expected, rel=0.2)
    tail = table.knots > 1.7 + 3 * sigma  # below 15 % of the reference's peak
    np.testing.assert_array_equal(table.force[tail], 0.0)
    assert "chain_pair-5-E-E" in refined.fit["bonded_refinements"]["max_abs_delta_u_kj_mol"]
    # without CG samples for a key, its table is left alone
    untouched = refine_bonded(model, {"chain_pair": reference}, {"chain_pair": {}}, temperature_K=T)
    np.testing.assert_array_equal(untouched.chain_pairs[(5, "E", "E")].force, 0.0)


def _model_with_bumps():
    rng = np.random.default_rng(2)
    reference = {(4, "E", "M"): rng.uniform(0.8, 1.8, 100), (5, "E", "E"): rng.uniform(0.9, 2.2, 100)}
    flat = {key: Table("bond", np.linspace(0.3, 0.5, 11), np.zeros(11), 100.0) for key in (("E", "M"), ("M", "M"))}
    model = TabulatedModel({}, flat, {}, {}, "1-3", 1.0, T).with_chain_pairs(reference)
    for (s, _, _), table in model.chain_pairs.items():
        table.force[:] = 3.0 * np.sin(2.0 * table.knots + s) * np.exp(-(table.knots - 1.4) ** 2)
    return model


@pytest.mark.parametrize("form", ["tables", "closed"])
def test_openmm_chain_pair_force_is_the_table_on_unwrapped_chains(form):
    """Energy of both OpenMM forms against the tables on the 1-5 and 1-6 distances of whole
    chains, one of them longer than half the box (no minimum image), and forces against finite
    differences; the force is on the outer MTS step."""
    model = _model_with_bumps()
    types, bonds = _chains(2)
    box = 2.0
    x = np.concatenate([_helix([0.3, 1.0, 1.0]), _helix([0.2, 0.4, 0.3])])
    forces = [f for f in tabulated_forces(model, types, bonds, periodic=True, form=form) if f.getName() == CHAIN_PAIR_FORCE]
    assert len(forces) == 1 and forces[0].getNumBonds() == 6
    system = openmm.System()
    for _ in types:
        system.addParticle(56.0)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    system.addForce(forces[0])
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))

    def energy(positions):
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy()._value

    graph = BondGraph(len(types), bonds)
    expected = sum(model.chain_pairs[(s,) + tuple(sorted((types[i], types[j])))].energy_at(np.linalg.norm(x[j] - x[i]))
                   for s in (4, 5) for i, j in graph.separated(s))
    tolerance = 1e-6 if form == "tables" else 0.1 * 6  # the closed form's fit tolerance per term
    assert energy(x) == pytest.approx(float(expected), abs=tolerance)
    context.setPositions(x)
    f = context.getState(getForces=True).getForces(asNumpy=True)._value
    h = 1e-5
    for atom, axis in [(0, 0), (5, 1), (7, 2), (11, 0)]:
        plus, minus = x.copy(), x.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        assert f[atom, axis] == pytest.approx(-(energy(plus) - energy(minus)) / (2 * h), abs=2e-3)
    split_fast_slow(system)
    assert system.getForce(0).getForceGroup() == SLOW_GROUP != FAST_GROUP


def test_chain_pairs_without_a_table_for_their_types_are_refused():
    model = _model_with_bumps()
    types, bonds = _chains(1)
    types[5] = "X"
    with pytest.raises(ValueError, match="chain-pair table"):
        chain_pair_groups(model, types, np.array(bonds))


def test_refinement_in_runs_needs_the_references_chain_pair_distances():
    from multiscale.openmm.bonded_iteration import refine_bonded_in_runs

    model = _model_with_bumps()
    with pytest.raises(ValueError, match="chain_pair"):
        refine_bonded_in_runs(model, lambda m: None, None, [], None, None, {"bond": {}}, rounds=1, temperature_K=T,
                              steps=10, timestep_ps=0.01)


def test_iterate_averaging_takes_the_mean_of_the_refined_models():
    """The mean of refinements of one model: each table's forces and each bending–torsion type's
    coefficients averaged, the Table invariants kept (an angle table ending at π keeps g = 0 there)."""
    from multiscale.openmm.bonded_iteration import averaged_model

    knots = np.linspace(2.0, np.pi, 12)
    models = []
    for k in range(3):
        model = _model_with_bumps()
        model.angles[("M", "M", "M")] = Table("angle", knots, (k + 1.0) * np.cos(knots), 10.0)
        model.dihedrals[("E", "M", "M", "M")] = np.array([0.0, -3.0 * k, 1.0])
        for table in model.chain_pairs.values():
            table.force *= k
        models.append(model)
    mean = averaged_model(models)
    np.testing.assert_allclose(mean.angles[("M", "M", "M")].force[:-1], 2.0 * np.cos(knots[:-1]))
    assert mean.angles[("M", "M", "M")].force[-1] == 0.0
    np.testing.assert_allclose(mean.dihedrals[("E", "M", "M", "M")], [0.0, -3.0, 1.0])
    for key, table in mean.chain_pairs.items():
        np.testing.assert_allclose(table.force, models[1].chain_pairs[key].force)
    assert mean.fit["bonded_refinements"]["averaged_over_last"] == 3
