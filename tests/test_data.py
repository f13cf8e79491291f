"""Datasets: extxyz and npz I/O, splits, reference energies, statistics, sampling from OpenMM/mdtraj.

References are external: ASE (its writer, reader and LJ calculator), OpenMM Contexts, the published
constants 1 eV = 96.48533212 kJ/mol and 1 Å = 0.1 nm, and closed-form least-squares answers.
"""

from __future__ import annotations

import os

import ase
import ase.io
import mdtraj
import numpy as np
import openmm
import pytest
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from openmm import app, unit

from multiscale.data import (
    Configuration,
    atoms_to_configuration,
    configurations_from_trajectory,
    dataset_statistics,
    fit_reference_energies,
    load_dataset,
    read_configurations,
    read_extxyz,
    sample_simulation,
    save_dataset,
    split_dataset,
    write_configurations,
    write_extxyz,
)

EV = 96.48533212  # kJ/mol, published (CODATA 2018), written out on purpose
ANGSTROM = 0.1  # nm
FIELDS = ("positions", "box", "energy", "forces", "virial", "charges", "dipole")


def assert_same(a: Configuration, b: Configuration, rtol: float = 1e-10) -> None:
    assert a.types == b.types
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_allclose(y, x, rtol=rtol, atol=1e-13, err_msg=name)
    assert a.total_charge == b.total_charge
    assert a.multiplicity == b.multiplicity


def sample_configs():
    rng = np.random.default_rng(7)
    box = np.array([[1.23, 0.0, 0.0], [0.17, 1.31, 0.0], [-0.05, 0.22, 1.19]])
    w = rng.normal(size=(3, 3)) * 40.0
    return [
        Configuration(
            ["O", "H", "H", "Na"],
            rng.random((4, 3)),
            box=box,
            energy=-1234.5678901234,
            forces=rng.normal(size=(4, 3)) * 300.0,
            virial=w + w.T,
            charges=[-0.834, 0.417, 0.417, 1.0],
            total_charge=1.0,
            multiplicity=2,
            info={"source": "test", "step": 42, "temperature": 300.5},
        ),
        Configuration(["C", "O"], rng.random((2, 3)) * 0.3),  # open, no labels
        Configuration(["C", "O"], [[0, 0, 0], [0.113, 0, 0]], energy=-5.0, dipole=[0.0023, -0.001, 0.0]),  # open, a dipole
        Configuration(["Ar"], [[0.1, 0.2, 0.3]], energy=3.25e-7, forces=[[1e-9, -2.5, 7.0]]),
    ]


# ------------------------------------------------------------------------------------------- extxyz


def test_extxyz_round_trip_and_ase_reads_our_file(tmp_path):
    configs = sample_configs()
    path = tmp_path / "set.xyz"
    write_extxyz(path, configs)
    back = read_extxyz(path)
    assert len(back) == 4
    for a, b in zip(configs, back):
        assert_same(a, b)
    assert back[0].info == {"source": "test", "step": 42, "temperature": 300.5}
    assert back[1].box is None and back[1].energy is None and back[1].forces is None
    assert os.listdir(tmp_path) == ["set.xyz"]  # no temporary file left behind

    # ASE itself reads our file, in eV / Å / eV/Å / eV/Å³
    atoms = ase.io.read(path, index=":", format="extxyz")
    c = configs[0]
    np.testing.assert_allclose(atoms[0].positions, c.positions / ANGSTROM, rtol=1e-12)
    np.testing.assert_allclose(atoms[0].cell[:], c.box / ANGSTROM, rtol=1e-12)
    assert atoms[0].get_potential_energy() == pytest.approx(c.energy / EV, rel=1e-12)
    np.testing.assert_allclose(atoms[0].get_forces(), c.forces / (EV / ANGSTROM), rtol=1e-12)
    volume_a3 = np.linalg.det(c.box / ANGSTROM)
    np.testing.assert_allclose(atoms[0].get_stress(voigt=False), -c.virial / EV / volume_a3, rtol=1e-10)
    assert list(atoms[0].pbc) == [True] * 3 and list(atoms[1].pbc) == [False] * 3
    np.testing.assert_allclose(atoms[2].get_dipole_moment(), configs[2].dipole / ANGSTROM, rtol=1e-12)  # e·Å


def test_read_file_written_by_ase(tmp_path):
    """ASE's own writer (eV, Å) → our reader gives the hand-converted OpenMM-unit numbers."""
    pos = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2399872, 0.92662721, 0.0]])
    cell = np.array([[10.0, 0.0, 0.0], [1.5, 9.0, 0.0], [0.0, 0.5, 8.0]])
    forces = np.array([[0.5, -0.25, 0.125], [-0.375, 0.0625, 0.0], [-0.125, 0.1875, -0.125]])
    stress = np.array([0.01, -0.02, 0.03, 0.004, -0.005, 0.006])  # Voigt xx yy zz yz xz xy, eV/Å³
    a = ase.Atoms("OHH", positions=pos, cell=cell, pbc=True, charges=[-0.8, 0.4, 0.4])
    a.info.update(charge=-1, spin=2, note="bulk")
    a.calc = SinglePointCalculator(a, energy=-14.25, forces=forces, stress=stress)
    b = ase.Atoms("NH3", positions=np.arange(12.0).reshape(4, 3) * 0.5, pbc=False)
    b.info["REF_energy"] = -7.5
    b.arrays["REF_forces"] = np.full((4, 3), 0.25)
    v = np.array([[1.5, 0.25, -0.5], [0.25, -2.0, 0.75], [-0.5, 0.75, 3.0]])  # libAtoms virial, eV
    c = ase.Atoms("Ar", positions=[[1.0, 2.0, 3.0]], cell=np.eye(3) * 6.0, pbc=True, info={"virial": v})
    path = tmp_path / "ase.extxyz"
    ase.io.write(path, [a, b, c], format="extxyz")

    first, second, third = read_extxyz(path)
    assert first.types == ["O", "H", "H"]
    np.testing.assert_allclose(first.positions, pos * 0.1, rtol=1e-12)
    np.testing.assert_allclose(first.box, cell * 0.1, rtol=1e-12)
    assert first.energy == pytest.approx(-14.25 * 96.48533212, rel=1e-12)
    np.testing.assert_allclose(first.forces, forces * 964.8533212, rtol=1e-12)
    np.testing.assert_allclose(first.charges, [-0.8, 0.4, 0.4])
    assert first.total_charge == -1.0 and first.multiplicity == 2
    assert first.info == {"note": "bulk"}
    # virial = −stress·V: V = det(cell) = 10·9·8 = 720 Å³
    s = np.array([[0.01, 0.006, -0.005], [0.006, -0.02, 0.004], [-0.005, 0.004, 0.03]])
    np.testing.assert_allclose(first.virial, -s * 720.0 * 96.48533212, rtol=1e-12)
    np.testing.assert_allclose(first.stress, s * 96.48533212 / 0.1**3, rtol=1e-12)  # kJ/mol/nm³

    assert second.box is None and second.types == ["N", "H", "H", "H"]
    assert second.energy == pytest.approx(-7.5 * 96.48533212, rel=1e-12)
    np.testing.assert_allclose(second.forces, 0.25 * 964.8533212, rtol=1e-12)
    np.testing.assert_allclose(third.virial, v * 96.48533212, rtol=1e-12)  # virial = −V·stress in both
    assert third.info == {}


def test_virial_sign_matches_finite_difference_of_ase_energy():
    """Virial from ASE's analytic LJ stress equals −∂E/∂ε by finite differences of ASE's energy."""
    rng = np.random.default_rng(3)
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], float)
    cell = np.array([[5.6, 0.0, 0.0], [0.3, 5.4, 0.0], [0.2, -0.1, 5.8]])
    atoms = ase.Atoms("Ar4", scaled_positions=frac + rng.normal(scale=0.03, size=(4, 3)), cell=cell, pbc=True)
    atoms.calc = LennardJones(sigma=3.4, epsilon=0.0103, rc=7.0)
    config = atoms_to_configuration(atoms)
    assert config.energy == pytest.approx(atoms.get_potential_energy() * EV, rel=1e-12)

    h = 1e-5
    dE = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.calc = LennardJones(sigma=3.4, epsilon=0.0103, rc=7.0)
                eps = np.zeros((3, 3))
                eps[i, j] = sign * h
                strained.set_cell(cell @ (np.eye(3) + eps), scale_atoms=True)
                energies.append(strained.get_potential_energy())
            dE[i, j] = (energies[0] - energies[1]) / (2 * h)
    dE = 0.5 * (dE + dE.T) * EV  # symmetric strain derivative, kJ/mol
    np.testing.assert_allclose(config.virial, -dE, rtol=1e-5, atol=1e-6 * np.abs(dE).max())
    assert np.abs(config.virial).max() > 1e-3  # a non-trivial check


def test_extxyz_errors_name_file_and_frame(tmp_path):
    good = ase.Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    slab = ase.Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=np.eye(3) * 5, pbc=[True, True, False])
    path = tmp_path / "slab.xyz"
    ase.io.write(path, [good, slab], format="extxyz")
    with pytest.raises(ValueError, match=r"slab\.xyz frame 1: partial periodicity"):
        read_extxyz(path)

    with pytest.raises(ValueError, match=r"configuration 1: .*not chemical element symbols.*\.npz"):
        write_extxyz(tmp_path / "cg.xyz", [sample_configs()[1], Configuration(["B1"], [[0, 0, 0]])])
    with pytest.raises(ValueError, match=r"info keys \['energy'\] are reserved"):
        write_extxyz(tmp_path / "r.xyz", [Configuration(["H"], [[0, 0, 0]], info={"energy": 1.0})])
    assert not (tmp_path / "cg.xyz").exists() and not (tmp_path / "r.xyz").exists()
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        read_extxyz(tmp_path / "missing.xyz")


# ------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("compress", [False, True])
def test_npz_round_trip_mixed(tmp_path, compress):
    configs = sample_configs() + [Configuration(["B1", "B2", "B1"], np.eye(3), charges=[0.5, -1.0, 0.5])]
    path = tmp_path / "set.npz"
    save_dataset(path, configs, compress=compress)
    back = load_dataset(path)
    assert len(back) == len(configs)
    for a, b in zip(configs, back):
        assert_same(a, b, rtol=0.0)  # binary: bit-exact
        assert a.info == b.info
    assert os.listdir(tmp_path) == ["set.npz"]
    with np.load(path, allow_pickle=False) as raw:  # plain numpy can read it without pickle
        assert str(raw["format"]) == "multiscale.dataset" and int(raw["version"]) == 1
        assert raw["has_energy"].tolist() == [True, False, True, True, False]
        assert raw["has_dipole"].tolist() == [False, False, True, False, False]
        assert raw["offsets"].tolist() == [0, 4, 6, 8, 9, 12]


def test_npz_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        save_dataset(tmp_path / "set.xyz", sample_configs())
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, positions=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a multiscale dataset"):
        load_dataset(foreign)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_dataset(text)
    with pytest.raises(ValueError, match=r"configuration 0: info 'obj'"):
        save_dataset(tmp_path / "obj.npz", [Configuration(["H"], [[0, 0, 0]], info={"obj": object()})])


def test_dispatch_on_suffix(tmp_path):
    configs = sample_configs()
    for name in ("a.xyz", "b.extxyz", "c.npz", "D.NPZ"):
        write_configurations(tmp_path / name, configs)
        for a, b in zip(configs, read_configurations(tmp_path / name)):
            assert_same(a, b)
    for bad in ("set.pdb", "noext"):
        with pytest.raises(ValueError, match=r"accepted suffixes: \.xyz, \.extxyz, \.npz"):
            write_configurations(tmp_path / bad, configs)
        with pytest.raises(ValueError, match=r"accepted suffixes: \.xyz, \.extxyz, \.npz"):
            read_configurations(tmp_path / bad)


# ------------------------------------------------------------------------------------------- splits


def _tagged(n):
    return [Configuration(["H"], [[0.0, 0.0, 0.0]], info={"id": k}) for k in range(n)]


def test_split_partition_and_determinism():
    configs = _tagged(100)
    train, val, test = split_dataset(configs, (0.8, 0.1, 0.1), seed=5)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    ids = [c.info["id"] for c in train + val + test]
    assert sorted(ids) == list(range(100))  # every config in exactly one split
    again = split_dataset(configs, (0.8, 0.1, 0.1), seed=5)
    assert [[c.info["id"] for c in s] for s in again] == [[c.info["id"] for c in s] for s in (train, val, test)]
    other = split_dataset(configs, (0.8, 0.1, 0.1), seed=6)
    assert [c.info["id"] for c in other[1]] != [c.info["id"] for c in val]

    assert [len(s) for s in split_dataset(_tagged(3))] == [1, 1, 1]
    assert [len(s) for s in split_dataset(_tagged(7), (0.5, 0.5, 0.0))] == [4, 3, 0]  # tie → earlier split
    assert sum(len(s) for s in split_dataset(_tagged(2))) == 2

    with pytest.raises(ValueError, match="sum to 1"):
        split_dataset(configs, (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="non-negative"):
        split_dataset(configs, (1.1, -0.1, 0.0))
    with pytest.raises(ValueError, match="three numbers"):
        split_dataset(configs, (0.5, 0.5))
    with pytest.raises(ValueError, match="empty"):
        split_dataset([])


def test_reference_energies_least_squares():
    e0 = {"H": -1312.5, "O": -197_000.25, "C": -99_000.75}
    rng = np.random.default_rng(0)
    configs = []
    for k in range(30):
        types = ["H"] * int(rng.integers(1, 6)) + ["O"] * int(rng.integers(0, 3)) + ["C"] * int(rng.integers(0, 3))
        energy = sum(e0[t] for t in types) + rng.normal(scale=1e-9)
        configs.append(Configuration(types, rng.random((len(types), 3)), energy=energy))
    configs.append(Configuration(["O", "O"], np.eye(2, 3)))  # no energy: skipped
    fitted = fit_reference_energies(configs, ["H", "O", "C"])
    for t in e0:
        assert fitted[t] == pytest.approx(e0[t], abs=1e-6)

    # rank-deficient: every config is H2O with E = 2a + b = -1000 → minimum-norm (2, 1)·(-1000)/5
    water = [Configuration(["O", "H", "H"], np.eye(3), energy=-1000.0) for _ in range(4)]
    fitted = fit_reference_energies(water, ["H", "O", "N"])
    assert fitted["H"] == pytest.approx(-400.0) and fitted["O"] == pytest.approx(-200.0)
    assert fitted["N"] == pytest.approx(0.0, abs=1e-12)

    with pytest.raises(ValueError, match="no configuration has an energy"):
        fit_reference_energies([Configuration(["H"], [[0, 0, 0]])], ["H"])
    with pytest.raises(ValueError, match="'Cl'"):
        fit_reference_energies([Configuration(["Cl"], [[0, 0, 0]], energy=1.0)], ["H"])


def test_dataset_statistics_known_numbers():
    e0 = {"H": -10.0, "O": -50.0}
    # centred per-atom energies 1, 2, 4 (N = 3, 3, 1) → mean 7/3, population std sqrt(14)/3
    configs = [
        Configuration(["O", "H", "H"], np.eye(3), energy=-70.0 + 3.0, forces=np.full((3, 3), 2.0)),
        Configuration(["O", "H", "H"], np.eye(3), energy=-70.0 + 6.0, forces=np.full((3, 3), -2.0)),
        Configuration(["H"], [[0, 0, 0]], energy=-10.0 + 4.0),
        Configuration(["H", "H"], np.eye(2, 3), box=np.eye(3), virial=np.full((3, 3), -6.0)),  # virial/N = ∓3
    ]
    stats = dataset_statistics(configs, ["H", "O"], e0)
    assert stats["num_configs"] == 4 and stats["num_atoms"] == 9
    assert stats["num_energies"] == 3 and stats["num_forces"] == 2
    assert stats["energy_per_atom_mean"] == pytest.approx(7.0 / 3.0)
    assert stats["energy_per_atom_std"] == pytest.approx(np.sqrt(14.0) / 3.0)
    assert stats["force_rms"] == pytest.approx(2.0)
    assert stats["num_virials"] == 1 and stats["virial_per_atom_rms"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"no entry for types \['O'\]"):
        dataset_statistics(configs, ["H", "O"], {"H": 0.0})


# ------------------------------------------------------------------------------------------- sampling


def argon_simulation(epsilon=0.996, periodic=True):
    """27 argon atoms on a 0.4 nm lattice in a 1.2 nm box, LJ cut at 0.5 nm; Langevin at 120 K."""
    topology = app.Topology()
    residue = topology.addResidue("AR", topology.addChain())
    system = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic if periodic else openmm.NonbondedForce.CutoffNonPeriodic)
    nb.setCutoffDistance(0.5)
    nb.setUseDispersionCorrection(False)
    positions = []
    for i in range(3):
        for j in range(3):
            for k in range(3):
                topology.addAtom("Ar", app.Element.getBySymbol("Ar"), residue)
                system.addParticle(39.948)
                nb.addParticle(0.0, 0.34, epsilon)
                positions.append([0.4 * i + 0.2, 0.4 * j + 0.2, 0.4 * k + 0.2])
    system.addForce(nb)
    box = np.eye(3) * 1.2
    system.setDefaultPeriodicBoxVectors(*box)
    if periodic:
        topology.setPeriodicBoxVectors(box)
    integrator = openmm.LangevinMiddleIntegrator(120 * unit.kelvin, 5 / unit.picosecond, 0.004 * unit.picosecond)
    integrator.setRandomNumberSeed(11)
    sim = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(np.array(positions))
    sim.context.setVelocitiesToTemperature(120 * unit.kelvin, 3)
    return sim


def evaluate(system, config):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if config.box is not None:
        ctx.setPeriodicBoxVectors(*config.box)
    ctx.setPositions(config.positions)
    state = ctx.getState(getEnergy=True, getForces=True)
    return (
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer),
    )


def test_sample_simulation_own_labels():
    sim = argon_simulation()
    configs = sample_simulation(sim, 3, 5, progress=False)
    assert [c.info for c in configs] == [{"source": "openmm", "step": s} for s in (5, 10, 15)]
    assert configs[0].types == ["Ar"] * 27
    assert not np.allclose(configs[0].positions, configs[2].positions)
    for c in configs:
        np.testing.assert_allclose(c.box, np.eye(3) * 1.2)
        energy, forces = evaluate(sim.system, c)
        assert c.energy == pytest.approx(energy, rel=1e-9)
        np.testing.assert_allclose(c.forces, forces, rtol=1e-9, atol=1e-9)
        assert np.abs(c.forces).max() > 1.0  # atoms interact: a non-trivial comparison
    final = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_array_equal(configs[-1].positions, final)


def test_sample_simulation_teacher_labels():
    driver = argon_simulation(epsilon=0.996)
    teacher = argon_simulation(epsilon=2 * 0.996).system  # pure LJ: E and F scale with epsilon
    configs = sample_simulation(driver, 2, 4, system=teacher, types=["X"] * 27, progress=False)
    assert configs[0].types == ["X"] * 27
    for c in configs:
        e_teacher, f_teacher = evaluate(teacher, c)
        e_driver, f_driver = evaluate(driver.system, c)
        assert c.energy == pytest.approx(e_teacher, rel=1e-9)
        np.testing.assert_allclose(c.forces, f_teacher, rtol=1e-9, atol=1e-9)
        assert c.energy == pytest.approx(2 * e_driver, rel=1e-9)  # the teacher's, not the driver's
        np.testing.assert_allclose(c.forces, 2 * f_driver, rtol=1e-9, atol=1e-9)

    with pytest.raises(ValueError, match="teacher system is non-periodic but the simulated System is periodic"):
        sample_simulation(driver, 1, 1, system=argon_simulation(periodic=False).system, progress=False)
    with pytest.raises(ValueError, match="types has 2 entries"):
        sample_simulation(driver, 1, 1, types=["Ar", "Ar"], progress=False)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        sample_simulation(driver, 0, 1, progress=False)


def test_sample_simulation_open_boundaries():
    configs = sample_simulation(argon_simulation(periodic=False), 1, 2, progress=False)
    assert configs[0].box is None and configs[0].energy is not None


def test_configurations_from_trajectory():
    top = mdtraj.Topology()
    residue = top.add_residue("HOH", top.add_chain())
    for name, element in (("O", mdtraj.element.oxygen), ("H1", mdtraj.element.hydrogen),
                          ("H2", mdtraj.element.hydrogen), ("M", None)):
        top.add_atom(name, element, residue)
    rng = np.random.default_rng(2)
    xyz = rng.random((5, 4, 3)).astype(np.float32)
    lengths = np.tile([2.0, 2.5, 3.0], (5, 1))
    angles = np.tile([90.0, 80.0, 70.0], (5, 1))
    traj = mdtraj.Trajectory(xyz, top, time=np.arange(5) * 2.0, unitcell_lengths=lengths, unitcell_angles=angles)

    configs = configurations_from_trajectory(traj, stride=2)
    assert [c.info["frame"] for c in configs] == [0, 2, 4]
    assert [c.info["time_ps"] for c in configs] == [0.0, 4.0, 8.0]
    assert configs[0].types == ["O", "H", "H", "M"]
    for c, frame in zip(configs, (0, 2, 4)):
        np.testing.assert_array_equal(c.positions, xyz[frame])
        np.testing.assert_allclose(np.linalg.norm(c.box, axis=1), [2.0, 2.5, 3.0], rtol=1e-6)
        a, b, cc = c.box  # angle between b and c is alpha = 90°, a–c beta = 80°, a–b gamma = 70°
        cos = lambda u, v: np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
        np.testing.assert_allclose(np.degrees(np.arccos([cos(b, cc), cos(a, cc), cos(a, b)])), [90, 80, 70], atol=1e-4)
        assert c.energy is None and c.forces is None

    open_traj = mdtraj.Trajectory(xyz, top)
    assert configurations_from_trajectory(open_traj, types=list("ABCD"))[3].box is None
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        configurations_from_trajectory(traj, stride=0)
