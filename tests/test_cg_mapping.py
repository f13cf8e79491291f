"""Coarse-grained mappings and force maps (multiscale.cg).

References used here are not the project's: hand-computed centres of mass from OpenMM's element
masses, OpenMM's own constrained Verlet dynamics (the full force m·a from positions), the
analytic inverse-variance optimum, and OpenMM's PDB writer / mdtraj's topology reader.
Units: nm, kJ/mol/nm, amu.
"""

from __future__ import annotations

import io
import json

import mdtraj as md
import numpy as np
import openmm
import pytest
import scipy.sparse as sp
from openmm import app, unit
from openmm.app import element

from multiscale.cg import (
    ForceMapError,
    Mapping,
    MappingDefinition,
    MappingError,
    basic_force_map,
    build_mapping,
    check_force_map,
    constraint_aware_force_map,
    constraints_of,
    crossing_constraints,
    masses_of,
    optimal_force_map,
)
from systems.water import tip3p_pme_system, water_box

WATER = {"molecules": [{"residues": ["HOH"], "bead_type": "W"}]}
M_O, M_H = element.oxygen.mass.value_in_unit(unit.dalton), element.hydrogen.mass.value_in_unit(unit.dalton)


@pytest.fixture(scope="module")
def water():
    return water_box(box_nm=1.2)


def alkane(n_res: int, n_chains: int = 1, seed: int = 0):
    """n_chains all-atom n-alkane chains, one CH3/CH2 residue per carbon (a 'monomer'), with a
    zig-zag carbon backbone (C–C 0.1535 nm) and H at 0.109 nm; positions jittered by 0.004 nm."""
    rng = np.random.default_rng(seed)
    top, pos = app.Topology(), []
    for c in range(n_chains):
        chain, prev = top.addChain(), None
        for k in range(n_res):
            end = k in (0, n_res - 1)
            res = top.addResidue("CH3" if end else "CH2", chain)
            carbon = top.addAtom("C", element.carbon, res)
            centre = np.array([0.1253 * k, 0.0887 * (k % 2), 0.6 * c])
            out = np.array([0.0, 1.0 if k % 2 else -1.0, 0.0])
            dirs = [out * 0.58 + np.array([0, 0, 0.81]), out * 0.58 - np.array([0, 0, 0.81])]
            if end:
                dirs.append(np.array([-1.0 if k == 0 else 1.0, 0.3 * out[1], 0.0]))
            pos.append(centre)
            for h, d in enumerate(dirs):
                top.addBond(carbon, top.addAtom(f"H{h + 1}", element.hydrogen, res))
                pos.append(centre + 0.109 * d / np.linalg.norm(d))
            if prev is not None:
                top.addBond(prev, carbon)
            prev = carbon
    pos = np.array(pos)
    return top, pos + rng.normal(scale=0.004, size=pos.shape)


def alkane_system(top, ideal, constrained=()):
    """Bonds, angles and torsions with equilibrium values from ``ideal`` (so forces come from the
    jitter and the motion), and the atom pairs in ``constrained`` as constraints instead of bonds."""
    system = openmm.System()
    for atom in top.atoms():
        system.addParticle(atom.element.mass)
    bonds = [(a.index, b.index) for a, b in top.bonds()]
    nbrs = {i: set() for i in range(top.getNumAtoms())}
    for i, j in bonds:
        nbrs[i].add(j)
        nbrs[j].add(i)
    stretch, bend, torsion = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce(), openmm.PeriodicTorsionForce()
    dist = lambda i, j: float(np.linalg.norm(ideal[i] - ideal[j]))
    for i, j in bonds:
        if (i, j) in constrained or (j, i) in constrained:
            system.addConstraint(i, j, dist(i, j))
        else:
            stretch.addBond(i, j, dist(i, j), 2.5e5)
    for j in nbrs:
        for i in nbrs[j]:
            for k in nbrs[j]:
                if i < k:
                    u, v = ideal[i] - ideal[j], ideal[k] - ideal[j]
                    bend.addAngle(i, j, k, float(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v))), 400.0)
    carbons = [a.index for a in top.atoms() if a.element is element.carbon]
    for a, b, c, d in zip(carbons, carbons[1:], carbons[2:], carbons[3:]):
        torsion.addTorsion(a, b, c, d, 3, 0.0, 5.0)
    for force in (stretch, bend, torsion):
        system.addForce(force)
    return system


def chain_definition(**extra):
    rule = {"residues": ["CH3", "CH2"], "monomers_per_bead": 2, "bead_type": "M", "end_bead_type": "E"}
    rule.update(extra)
    return {"polymers": [rule]}


def dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


# ------------------------------------------------------------------------------------------
# coordinate maps
# ------------------------------------------------------------------------------------------


def test_water_one_bead_per_molecule_is_the_hand_computed_centre_of_mass(water):
    top, pos, box = water
    mapping = build_mapping(top, WATER)
    m_x = dense(mapping.coordinate_map)
    n_w = top.getNumResidues()
    assert m_x.shape == (n_w, 3 * n_w) and mapping.bead_types == ["W"] * n_w
    np.testing.assert_allclose(m_x.sum(axis=1), 1.0, atol=1e-14)
    total = M_O + 2 * M_H
    np.testing.assert_allclose(m_x[0, :3], [M_O / total, M_H / total, M_H / total], rtol=1e-12)
    hand = (M_O * pos[0::3] + M_H * pos[1::3] + M_H * pos[2::3]) / total
    np.testing.assert_allclose(mapping.map_positions(pos), hand, atol=1e-12)
    np.testing.assert_allclose(mapping.bead_masses, total, rtol=1e-12)
    # trajectories: (T, N, 3) -> (T, n, 3)
    traj = np.stack([pos, pos + 0.1])
    np.testing.assert_allclose(mapping.map_positions(traj)[1], hand + 0.1, atol=1e-12)
    # one chain (molecule) per water, no bonds; the box travels with the mapping
    assert mapping.chains == [[k] for k in range(n_w)] and mapping.bead_bonds == []
    np.testing.assert_allclose(mapping.box, box)


def test_periodic_unwrapping_of_a_split_molecule(water):
    top, pos, box = water
    mapping = build_mapping(top, WATER)
    hand = (M_O * pos[0] + M_H * pos[1] + M_H * pos[2]) / (M_O + 2 * M_H)
    wrapped = pos.copy()
    wrapped[1] += box[0]  # H1 of water 0 put into the next periodic image: molecule no longer whole
    assert np.linalg.norm(mapping.map_positions(wrapped)[0] - hand) > 0.05
    np.testing.assert_allclose(mapping.map_positions(wrapped, box)[0], hand, atol=1e-12)
    np.testing.assert_allclose(mapping.map_positions(wrapped, np.diag(box))[0], hand, atol=1e-12)
    np.testing.assert_allclose(mapping.map_positions(np.stack([wrapped, pos]), box)[:, 0], [hand, hand], atol=1e-12)


def test_two_monomers_per_bead_on_a_butane_like_chain():
    top, pos = alkane(4)
    mapping = build_mapping(top, chain_definition())
    masses = np.array([a.element.mass.value_in_unit(unit.dalton) for a in top.atoms()])
    first = [a.index for r in list(top.residues())[:2] for a in r.atoms()]  # CH3 + CH2: 7 atoms
    second = [a.index for r in list(top.residues())[2:] for a in r.atoms()]
    assert len(first) == 7 and [list(a) for a in mapping.atom_indices] == [first, second]
    hand = [(masses[idx, None] * pos[idx]).sum(0) / masses[idx].sum() for idx in (first, second)]
    np.testing.assert_allclose(mapping.map_positions(pos), hand, atol=1e-12)
    np.testing.assert_allclose(mapping.bead_masses, [masses[first].sum(), masses[second].sum()])
    assert mapping.bead_types == ["E", "E"] and mapping.bead_bonds == [(0, 1)] and mapping.chains == [[0, 1]]
    # the same from an mdtraj Topology
    again = build_mapping(md.Topology.from_openmm(top), chain_definition())
    np.testing.assert_allclose(dense(again.coordinate_map), dense(mapping.coordinate_map))


def test_polymer_types_bonds_angles_dihedrals_and_chains():
    top, _ = alkane(8, n_chains=2)
    mapping = build_mapping(top, chain_definition())
    assert mapping.bead_types == ["E", "M", "M", "E"] * 2
    assert mapping.chains == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert mapping.bead_bonds == [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]
    assert mapping.bead_angles == [(0, 1, 2), (1, 2, 3), (4, 5, 6), (5, 6, 7)]
    assert mapping.bead_dihedrals == [(0, 1, 2, 3), (4, 5, 6, 7)]


def test_one_bead_per_connected_molecule():
    top, pos = alkane(4, n_chains=2)
    mapping = build_mapping(top, {"molecules": [{"residues": ["CH3", "CH2"], "bead_type": "ALK", "per": "molecule"}]})
    masses = np.array([a.element.mass.value_in_unit(unit.dalton) for a in top.atoms()])
    assert mapping.n_beads == 2 and [len(a) for a in mapping.atom_indices] == [14, 14]
    hand = [(masses[s, None] * pos[s]).sum(0) / masses[s].sum() for s in (slice(0, 14), slice(14, 28))]
    np.testing.assert_allclose(mapping.map_positions(pos), hand, atol=1e-12)
    per_residue = build_mapping(top, {"molecules": [{"residues": ["CH3", "CH2"], "bead_type": "U"}]})
    assert per_residue.n_beads == 8 and per_residue.chains == [[0, 1, 2, 3], [4, 5, 6, 7]] and per_residue.bead_bonds == []


def test_polymer_remainder_is_refused_unless_allowed():
    top, _ = alkane(5)
    with pytest.raises(MappingError, match=r"5 monomers.*monomers_per_bead=2.*allow_remainder"):
        build_mapping(top, chain_definition())
    mapping = build_mapping(top, chain_definition(allow_remainder=True, remainder_bead_type="R"))
    assert [len(a) for a in mapping.atom_indices] == [4 + 3, 3 + 3, 4]  # CH3+CH2, CH2+CH2, last bead: one CH3
    assert mapping.bead_types == ["E", "M", "R"]


def test_weights_and_force_maps_satisfy_mf_mxT_identity(water):
    top, pos, _ = water
    explicit = [0.5, 0.3, 0.2]
    for weights in ("mass", "geometry", explicit):
        definition = {"residues": {"HOH": {"beads": [{"name": "W", "atoms": ["O", "H1", "H2"], "weights": weights}]}}}
        mapping = build_mapping(top, definition)
        m_x, m_f = dense(mapping.coordinate_map), dense(mapping.force_map)
        np.testing.assert_allclose(m_f @ m_x.T, np.eye(len(m_x)), atol=1e-12)
        assert mapping.force_map_kind == "sum" and set(np.unique(m_f)) == {0.0, 1.0}
    np.testing.assert_allclose(m_x[0, :3], explicit)
    geometry = build_mapping(top, {"molecules": [{"residues": ["HOH"], "bead_type": "W", "weights": "geometry"}]})
    np.testing.assert_allclose(geometry.map_positions(pos)[0], pos[:3].mean(0), atol=1e-12)
    # check_force_map catches a wrong map and names the bead pair
    bad = dense(mapping.force_map).copy()
    bad[3, 0] = 0.5
    with pytest.raises(ForceMapError, match=r"bead 3, bead 0"):
        check_force_map(mapping.coordinate_map, bad)


def test_templates_with_bonds_within_and_to_the_next_residue():
    top, pos = alkane(4)
    definition = {
        "residues": {
            name: {"beads": [{"name": "C", "type": "CX", "atoms": ["C"]},
                             {"name": "H", "type": "HX", "atoms": [f"H{k + 1}" for k in range(n)], "weights": "geometry"}],
                   "bonds": [["C", "H"]], "bonds_to_next": [["C", "C"]]}
            for name, n in (("CH3", 3), ("CH2", 2))
        }
    }
    mapping = build_mapping(top, definition)
    assert mapping.bead_names == ["C", "H"] * 4 and mapping.bead_types == ["CX", "HX"] * 4
    assert mapping.bead_bonds == [(0, 1), (0, 2), (2, 3), (2, 4), (4, 5), (4, 6), (6, 7)]
    np.testing.assert_allclose(mapping.map_positions(pos)[1], pos[1:4].mean(0), atol=1e-12)
    # bonds_to_next naming a bead the next residue lacks
    definition["residues"]["CH2"]["bonds_to_next"] = [["C", "X"]]
    with pytest.raises(MappingError, match=r"no bead named 'X'"):
        build_mapping(top, definition)


def test_yaml_round_trip_and_unknown_keys(tmp_path, water):
    top, pos, _ = water
    (tmp_path / "map.yaml").write_text(
        "cg_mapping:\n  residues:\n    HOH:\n      beads:\n        - {name: W, type: SOL, atoms: [O, H1, H2], weights: mass}\n"
    )
    definition = MappingDefinition.from_yaml(tmp_path / "map.yaml")
    mapping = build_mapping(top, tmp_path / "map.yaml")
    np.testing.assert_allclose(mapping.map_positions(pos), build_mapping(top, WATER).map_positions(pos), atol=1e-12)
    definition.to_yaml(tmp_path / "again.yaml")
    assert MappingDefinition.from_yaml(tmp_path / "again.yaml") == definition
    with pytest.raises(ValueError, match=r"unknown molecule rule option.*'bead_typ'"):
        MappingDefinition.from_dict({"molecules": [{"residues": ["HOH"], "bead_typ": "W"}]})
    with pytest.raises(ValueError, match=r"'HOH' is claimed by both"):
        MappingDefinition.from_dict({"residues": {"HOH": {"beads": [{"name": "W", "atoms": ["O"]}]}}, **WATER})


# ------------------------------------------------------------------------------------------
# validation errors
# ------------------------------------------------------------------------------------------


def _template(*beads, **extra):
    return {"residues": {"HOH": {"beads": [dict(b) for b in beads], **extra}}}


def test_atom_in_two_beads_needs_allowed_overlaps(water):
    top, pos, _ = water
    definition = _template({"name": "A", "atoms": ["O", "H1"]}, {"name": "B", "atoms": ["O", "H2"]})
    with pytest.raises(MappingError, match=r"atom 0 'O' of residue HOH.*in 2 beads.*allowed_overlaps=\['HOH:O'\]"):
        build_mapping(top, definition)
    mapping = build_mapping(top, definition, allowed_overlaps=["HOH:O"])
    m_x, m_f = dense(mapping.coordinate_map), dense(mapping.force_map)
    # the plain sum is no longer a valid force map with a shared atom; the built one is
    with pytest.raises(ForceMapError):
        check_force_map(m_x, basic_force_map(mapping.atom_indices, mapping.n_atoms))
    np.testing.assert_allclose(m_f @ m_x.T, np.eye(len(m_x)), atol=1e-10)
    assert mapping.force_map_kind == "constraint-aware"
    # shared O counts half in each bead's mass; total mass conserved
    np.testing.assert_allclose(mapping.bead_masses[:2], [M_O / 2 + M_H] * 2)
    np.testing.assert_allclose(mapping.bead_masses.sum(), top.getNumResidues() * (M_O + 2 * M_H))
    # by index works too
    build_mapping(top, definition, allowed_overlaps=[a.index for a in top.atoms() if a.name == "O"])


def test_bead_without_an_atom_of_its_own(water):
    top, _, _ = water
    definition = _template({"name": "A", "atoms": ["O", "H1"]}, {"name": "B", "atoms": ["O", "H1", "H2"]})
    with pytest.raises(MappingError, match=r"bead 'A' of residue HOH.*no atom of its own"):
        build_mapping(top, definition, allowed_overlaps=["HOH:O", "HOH:H1"])


def test_empty_bead_is_refused():
    with pytest.raises(ValueError, match=r"residue template 'HOH'.*beads\[1\].*bead 'B' is empty"):
        MappingDefinition.from_dict(_template({"name": "A", "atoms": ["O"]}, {"name": "B", "atoms": []}))


def test_unmapped_atoms_need_allow_unmapped(water):
    top, pos, _ = water
    definition = _template({"name": "A", "atoms": ["O", "H1"]})
    with pytest.raises(MappingError, match=r"atom\(s\) are in no bead, first atom 2 'H2' of residue HOH.*allow_unmapped=True"):
        build_mapping(top, definition)
    mapping = build_mapping(top, definition, allow_unmapped=True)
    forces = np.random.default_rng(0).normal(size=pos.shape)
    np.testing.assert_allclose(mapping.map_forces(forces)[0], forces[0] + forces[1])  # H2 ignored


def test_bad_explicit_weights_are_refused():
    for weights, message in (([0.5, 0.4, 0.2], r"residue template 'HOH'.*bead 'W': weights sum to 1.1, not 1.*divide them by 1.1"),
                             ([1.2, -0.1, -0.1], r"bead 'W': negative weight\(s\) for atom\(s\) \['H1', 'H2'\]"),
                             ([0.5, 0.5], r"2 weights for 3 atoms")):
        with pytest.raises(ValueError, match=message):
            MappingDefinition.from_dict(_template({"name": "W", "atoms": ["O", "H1", "H2"], "weights": weights}))


def test_residue_without_template_and_missing_atom_name(water):
    top, _, _ = water
    with pytest.raises(MappingError, match=r"residue HOH 1 \(index 0, chain 1\) has no template or rule.*\['HOH'\]"):
        build_mapping(top, {"molecules": [{"residues": ["SOL"], "bead_type": "W"}]})
    assert build_mapping(top, {"molecules": [{"residues": ["SOL"], "bead_type": "W"}]}, allow_unmapped=True).n_beads == 0
    with pytest.raises(MappingError, match=r"bead 'W' lists atom 'OW', which residue HOH 1 .* lacks"):
        build_mapping(top, _template({"name": "W", "atoms": ["OW", "H1", "H2"]}))


# ------------------------------------------------------------------------------------------
# constraints
# ------------------------------------------------------------------------------------------


def _verlet_full_forces(system, positions, steps=3, dt=0.0005):
    """Run OpenMM's (leap-frog) Verlet integrator on the Reference platform and return, at the
    middle frame, (getForces(), m·(x₊ − 2x + x₋)/dt²): the second is the full force including
    the constraint forces, because OpenMM sets x(t+dt) = x(t) + dt·v(t+dt/2) after constraining.
    The centre-of-mass motion remover is taken out of ``system``: it changes velocities outside
    the forces."""
    for k in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(k), openmm.CMMotionRemover):
            system.removeForce(k)
    integrator = openmm.VerletIntegrator(dt)
    integrator.setConstraintTolerance(1e-12)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.applyConstraints(1e-12)
    context.setVelocitiesToTemperature(300.0, 1)
    frames = []
    for _ in range(steps):
        integrator.step(1)
        state = context.getState(getPositions=True, getForces=True)
        frames.append((state.getPositions(asNumpy=True)._value, state.getForces(asNumpy=True)._value))
    m = masses_of(system)[:, None]
    (x0, _), (x1, f1), (x2, _) = frames[-3:]
    return f1, m * (x2 - 2 * x1 + x0) / dt**2


def test_rigid_water_one_bead_per_molecule_plain_sum_is_exact(water):
    """getForces() lacks the rigid-water constraint forces, but they cancel inside each bead."""
    top, pos, _ = water
    system = tip3p_pme_system(top, cutoff_nm=0.55)
    mapping = build_mapping(top, WATER, constraints=constraints_of(system))
    assert mapping.force_map_kind == "sum" and len(mapping.constraints) == 3 * top.getNumResidues()
    forces, full = _verlet_full_forces(system, pos)
    constraint_force = full - forces
    assert np.abs(constraint_force).max() > 100.0  # per atom, the constraint forces are large
    scale = np.abs(mapping.map_forces(full)).max()
    np.testing.assert_allclose(mapping.map_forces(forces), mapping.map_forces(full), atol=1e-10 * scale)


def test_tip4p_virtual_sites_get_zero_force_weight():
    """OpenMM reports a force on TIP4P's massless M site although it has already added it to O, H1
    and H2: the mapped force must leave it out, and then equals Σ m·a of the molecule."""
    top, pos, _ = water_box(box_nm=1.2, model="tip4pew")
    system = app.ForceField("amber14/tip4pew.xml").createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.55)
    mapping = build_mapping(top, WATER, constraints=system)  # a System is accepted for its constraints
    assert mapping.constraints == sorted(constraints_of(system))
    sites = [a.index for a in top.atoms() if a.element is None]
    assert mapping.massless == sites and len(sites) == top.getNumResidues()
    m_x, m_f = dense(mapping.coordinate_map), dense(mapping.force_map)
    assert not m_x[:, sites].any() and not m_f[:, sites].any()
    np.testing.assert_allclose(m_f @ m_x.T, np.eye(len(m_x)), atol=1e-12)
    forces, full = _verlet_full_forces(system, pos)
    scale = np.abs(mapping.map_forces(full)).max()
    np.testing.assert_allclose(mapping.map_forces(forces), mapping.map_forces(full), atol=1e-10 * scale)
    naive = basic_force_map(mapping.atom_indices, mapping.n_atoms)  # includes M
    assert np.abs(naive @ forces - mapping.map_forces(full)).max() > 1e-3 * scale
    with pytest.raises(ForceMapError, match=r"massless particle 3"):
        mapping.with_force_map(naive)
    noisy = np.random.default_rng(0).normal(size=(50, mapping.n_atoms, 3))
    optimal = mapping.with_force_map(mapping.optimal_force_map(noisy, neighbors=2).force_map, "optimal")
    assert not dense(optimal.force_map)[:, sites].any()
    # geometry weights average over the massive atoms only; explicit weight on M is refused
    geometry = build_mapping(top, {"molecules": [{"residues": ["HOH"], "bead_type": "W", "weights": "geometry"}]})
    np.testing.assert_allclose(geometry.map_positions(pos)[0], pos[:3].mean(0), atol=1e-12)
    with pytest.raises(MappingError, match=r"massless particle atom 3 'M'.*weight 0"):
        build_mapping(top, _template({"name": "W", "atoms": ["O", "H1", "H2", "M"], "weights": [0.7, 0.1, 0.1, 0.1]}))


def test_rigid_water_split_into_two_beads_is_refused(water):
    top, _, _ = water
    system = tip3p_pme_system(top, cutoff_nm=0.55)
    definition = _template({"name": "O", "atoms": ["O"]}, {"name": "H", "atoms": ["H1", "H2"]}, bonds=[["O", "H"]])
    assert build_mapping(top, definition).force_map_kind == "sum"  # fine for a flexible reference run
    with pytest.raises(ForceMapError, match=r"bead 'O' of residue HOH 1.*constraint group \[atom 0 'O'.*'H1'.*'H2'.*joins it to bead 'H'"):
        build_mapping(top, definition, constraints=constraints_of(system))


def test_constraint_across_a_bead_boundary_against_openmm_dynamics():
    """Butane-like chain, 2 monomers per bead, central C–C bond and the end C–H bonds constrained.
    The constraint-aware map of getForces() equals the map of the full force m·a from OpenMM's
    constrained Verlet dynamics; the plain sum does not."""
    top, pos = alkane(4)
    atoms = list(top.atoms())
    carbons = [a.index for a in atoms if a.name == "C"]
    end_ch = [(a.index, b.index) for a, b in top.bonds() if {a.name, b.name} == {"C", "H1"} and a.residue.name == "CH3"]
    constrained = [(carbons[1], carbons[2])] + end_ch
    system = alkane_system(top, pos, constrained)
    mapping = build_mapping(top, chain_definition(), constraints=constraints_of(system))
    assert mapping.force_map_kind == "constraint-aware"
    assert crossing_constraints(mapping.atom_indices, mapping.constraints) == [(carbons[1], carbons[2])]
    m_x, m_f = dense(mapping.coordinate_map), dense(mapping.force_map)
    np.testing.assert_allclose(m_f @ m_x.T, np.eye(2), atol=1e-10)
    np.testing.assert_allclose(m_f[:, carbons[1]], m_f[:, carbons[2]], atol=1e-12)
    with pytest.raises(ForceMapError, match=rf"constrained atoms {carbons[1]} and {carbons[2]} differ"):
        mapping.with_force_map(basic_force_map(mapping.atom_indices, mapping.n_atoms))

    # algebra: any equal-and-opposite pair force along a constrained bond maps to zero
    rng = np.random.default_rng(1)
    for a, b in mapping.constraints:
        pair = np.zeros((top.getNumAtoms(), 3))
        g = rng.normal(size=3) * 100.0
        pair[a], pair[b] = g, -g
        np.testing.assert_allclose(mapping.map_forces(pair), 0.0, atol=1e-10)
    plain = basic_force_map(mapping.atom_indices, mapping.n_atoms)
    pair = np.zeros((top.getNumAtoms(), 3))
    pair[carbons[1]], pair[carbons[2]] = [100.0, 0, 0], [-100.0, 0, 0]
    np.testing.assert_allclose(plain @ pair, [[100.0, 0, 0], [-100.0, 0, 0]])

    # OpenMM: getForces() omits the constraint forces; m·a includes them
    forces, full = _verlet_full_forces(system, pos)
    free = [k for k in range(len(atoms)) if all(k not in c for c in mapping.constraints)]
    np.testing.assert_allclose(full[free], forces[free], atol=1e-10 * np.abs(forces).max())  # sanity of m·a
    leak = plain @ (full - forces)
    assert np.abs(leak).max() > 1.0  # the plain sum misses the cross-bead constraint force
    np.testing.assert_allclose(mapping.map_forces(forces), mapping.map_forces(full), atol=1e-10 * np.abs(full).max())


def test_constraint_aware_map_equals_plain_sum_when_that_is_valid():
    top, pos = alkane(4)
    end_ch = [(a.index, b.index) for a, b in top.bonds() if a.residue.index == b.residue.index]
    mapping = build_mapping(top, chain_definition())
    m_f = constraint_aware_force_map(mapping.coordinate_map, mapping.atom_indices, end_ch)
    np.testing.assert_allclose(dense(m_f), dense(basic_force_map(mapping.atom_indices, mapping.n_atoms)), atol=1e-12)


# ------------------------------------------------------------------------------------------
# optimal force maps
# ------------------------------------------------------------------------------------------


def test_optimal_map_is_the_inverse_variance_weighting():
    """Two beads of three atoms with coordinate weights c and independent atomic noise σ_i on top
    of a shared bead force: the minimum-variance weights are w_i = (c_i/σ_i²) / Σ_j c_j²/σ_j²."""
    rng = np.random.default_rng(0)
    c = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5]])
    sigma = np.array([[1.0, 3.0, 10.0], [5.0, 1.0, 2.0]])
    m_x = sp.block_diag([c[:1], c[1:]], format="csr")
    atoms = [[0, 1, 2], [3, 4, 5]]
    t = 20000
    bead_force = rng.normal(scale=2.0, size=(t, 2, 3))
    forces = np.repeat(bead_force, 3, axis=1) * c.reshape(1, 6, 1) + rng.normal(size=(t, 6, 3)) * sigma.reshape(1, 6, 1)
    result = optimal_force_map(m_x, atoms, forces)
    m_f = dense(result.force_map)
    np.testing.assert_allclose(m_f @ dense(m_x).T, np.eye(2), atol=1e-10)
    analytic = (c / sigma**2) / (c**2 / sigma**2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m_f[0, :3], analytic[0], rtol=0.03, atol=1e-3)
    np.testing.assert_allclose(m_f[1, 3:], analytic[1], rtol=0.03, atol=1e-3)
    assert m_f[0, 2] < 0.02 * m_f[0, 0]  # the noisiest atom is nearly ignored
    # noise variance per component: Σ σ² for the plain sum, 1/Σ(c²/σ²) for the optimum
    expected_sum = 3 * (sigma**2).sum(axis=1) + 3 * 4.0
    expected_opt = 3 / (c**2 / sigma**2).sum(axis=1) + 3 * 4.0
    np.testing.assert_allclose(result.mean_square_baseline, expected_sum, rtol=0.03)
    np.testing.assert_allclose(result.mean_square_optimal, expected_opt, rtol=0.03)
    assert result.reduction == pytest.approx(1 - expected_opt.sum() / expected_sum.sum(), abs=0.02)
    assert result.reduction > 0.8


def test_optimal_map_with_neighbours_and_constraints():
    """A stiff bond between atom 2 (bead 0) and atom 3 (bead 1) adds large equal-and-opposite
    noise to the two atoms that carry 90 % of their beads' coordinate weight, so a bead cannot
    simply ignore them; with a wider support the optimal map cancels much of that noise using
    the partner's force. Constraint equalities hold."""
    rng = np.random.default_rng(3)
    m_x = sp.csr_matrix(np.array([[0.05, 0.05, 0.9, 0, 0, 0], [0, 0, 0, 0.9, 0.05, 0.05]]))
    atoms = [[0, 1, 2], [3, 4, 5]]
    bonds = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    t = 5000
    forces = rng.normal(size=(t, 6, 3))
    stiff = rng.normal(scale=30.0, size=(t, 3))
    forces[:, 2] += stiff
    forces[:, 3] -= stiff
    narrow = optimal_force_map(m_x, atoms, forces, bonds=bonds, neighbors=0)
    wide = optimal_force_map(m_x, atoms, forces, bonds=bonds, neighbors=3)
    for result in (narrow, wide):
        np.testing.assert_allclose(dense(result.force_map) @ dense(m_x).T, np.eye(2), atol=1e-10)
    assert narrow.mean_square_optimal.sum() < 0.25 * narrow.mean_square_baseline.sum()
    assert wide.mean_square_optimal.sum() < 0.6 * narrow.mean_square_optimal.sum()
    assert dense(wide.force_map)[0, 3] != 0 and dense(narrow.force_map)[0, 3] == 0
    # with atoms 2 and 3 constrained, their weights are tied in every bead (and the forces carry
    # no constraint force, like getForces())
    tied = optimal_force_map(m_x, atoms, forces, constraints=[(2, 3)], bonds=bonds, neighbors=1)
    m_f = dense(tied.force_map)
    np.testing.assert_allclose(m_f[:, 2], m_f[:, 3], atol=1e-12)
    np.testing.assert_allclose(m_f @ dense(m_x).T, np.eye(2), atol=1e-10)


def test_mapping_optimal_force_map_round_trip(water):
    """Water beads with a noisy oxygen (σ = 5) and quiet hydrogens (σ = 1): the optimal weights
    follow c_i/σ_i² (c = mass fractions), averaged over the 50 beads."""
    top, _, _ = water
    mapping = build_mapping(top, WATER)
    rng = np.random.default_rng(0)
    sigma = np.array([5.0, 1.0, 1.0])
    forces = rng.normal(size=(1500, mapping.n_atoms, 3)) * np.tile(sigma, mapping.n_beads)[None, :, None]
    result = mapping.optimal_force_map(forces)
    c = np.array([M_O, M_H, M_H]) / (M_O + 2 * M_H)
    analytic = (c / sigma**2) / (c**2 / sigma**2).sum()
    weights = dense(result.force_map)[np.arange(mapping.n_beads)[:, None], np.arange(3 * mapping.n_beads).reshape(-1, 3)]
    np.testing.assert_allclose(weights.mean(axis=0), analytic, rtol=0.03)
    # variance per component: Σσ² = 27 for the plain sum, 1/Σ(c²/σ²) ≈ 26.5 for the optimum (the
    # heavy O carries the coordinate, so little can be gained here)
    assert result.reduction == pytest.approx(1 - 1 / (c**2 / sigma**2).sum() / (sigma**2).sum(), abs=0.005)
    optimal = mapping.with_force_map(result.force_map, "optimal")
    assert optimal.force_map_kind == "optimal" and mapping.force_map_kind == "sum"
    np.testing.assert_allclose(optimal.map_forces(forces[0]), dense(result.force_map) @ forces[0])
    with pytest.raises(ForceMapError, match="M_f M_x"):
        mapping.with_force_map(2 * mapping.force_map)


def test_with_optimal_force_map_reports_the_held_out_reduction(water):
    """Fitted on some frames, measured on others: the held-out mean-square reduction is the
    noise model's expectation (the same σ pattern as above, whose optimum is ≈ 1.8 % below the sum)."""
    top, _, _ = water
    mapping = build_mapping(top, WATER)
    rng = np.random.default_rng(1)
    sigma = np.tile([5.0, 1.0, 1.0], mapping.n_beads)[None, :, None]
    train, held_out = (rng.normal(size=(n, mapping.n_atoms, 3)) * sigma for n in (1500, 500))
    adopted, info = mapping.with_optimal_force_map(train, held_out)
    c = np.array([M_O, M_H, M_H]) / (M_O + 2 * M_H)
    expected = 1 - 1 / (c**2 / np.array([25.0, 1.0, 1.0])).sum() / 27.0
    assert info["kind"] == "optimal" and adopted.force_map_kind == "optimal" and mapping.force_map_kind == "sum"
    assert info["mean_square_reduction_held_out"] == pytest.approx(expected, abs=0.01)
    before, after = mapping.map_forces(held_out), adopted.map_forces(held_out)
    assert info["mean_square_reduction_held_out"] == pytest.approx(1 - (after**2).sum() / (before**2).sum())
    with pytest.raises(ValueError, match="at least one frame"):
        mapping.with_optimal_force_map(train, held_out[:0])


def test_mapped_trajectory_is_the_mapped_positions_with_the_boxes(water):
    top, pos, _ = water
    mapping = build_mapping(top, WATER)
    frames = np.stack([pos, pos + 0.01])
    boxes = np.stack([np.eye(3) * 2.5, np.eye(3) * 2.6])
    traj = mapping.mapped_trajectory(frames, boxes)
    np.testing.assert_allclose(traj.xyz, mapping.map_positions(frames), atol=1e-6)  # mdtraj stores float32
    np.testing.assert_allclose(traj.unitcell_vectors, boxes, atol=1e-6)
    assert traj.n_atoms == mapping.n_beads and [a.name for a in traj.topology.atoms] == mapping.bead_names
    with pytest.raises(ValueError, match="one cell per frame"):
        mapping.mapped_trajectory(frames, boxes[:1])


# ------------------------------------------------------------------------------------------
# CG topology, storage
# ------------------------------------------------------------------------------------------


def test_cg_topology_mdtraj_and_pdb_conect_records():
    top, pos = alkane(8, n_chains=2)
    mapping = build_mapping(top, chain_definition(end_bead_type="C", bead_type="MIDDLE"))
    cg = mapping.cg_topology()
    assert cg.getNumChains() == 2 and cg.getNumAtoms() == 8 and cg.getNumResidues() == 8
    assert [r.name for r in cg.residues()] == ["C_", "MID", "MID", "C_"] * 2  # 'C' is a PDB nucleotide name
    assert sorted((a.index, b.index) for a, b in cg.bonds()) == mapping.bead_bonds
    assert all(a.element is None for a in cg.atoms())
    traj_top = md.Topology.from_openmm(cg)
    assert (traj_top.n_atoms, traj_top.n_bonds, traj_top.n_chains) == (8, 6, 2)
    assert sorted((a.index, b.index) for a, b in mapping.mdtraj_topology().bonds) == mapping.bead_bonds

    out = io.StringIO()
    app.PDBFile.writeFile(cg, mapping.map_positions(pos) * unit.nanometer, out)
    lines = out.getvalue().splitlines()
    serials = [int(line[6:11]) for line in lines if line.startswith(("ATOM", "HETATM"))]
    assert len(serials) == 8
    bead_of = {s: k for k, s in enumerate(serials)}
    conect = set()
    for line in lines:
        if line.startswith("CONECT"):
            fields = [int(line[p:p + 5]) for p in range(6, len(line), 5)]
            conect.update(tuple(sorted((bead_of[fields[0]], bead_of[f]))) for f in fields[1:])
    assert sorted(conect) == mapping.bead_bonds
    # reading it back with OpenMM recovers the bonds
    back = app.PDBFile(io.StringIO(out.getvalue()))
    assert back.topology.getNumBonds() == 6


def test_save_load_round_trip(tmp_path):
    top, pos = alkane(6)
    system = alkane_system(top, pos, [(a.index, b.index) for a, b in top.bonds() if {a.name, b.name} == {"C"}][1:2])
    mapping = build_mapping(top, chain_definition(), constraints=constraints_of(system))
    mapping.save(tmp_path / "mapping.json")
    loaded = Mapping.load(tmp_path / "mapping.json")
    for name in ("coordinate_map", "force_map"):
        assert (getattr(loaded, name) != getattr(mapping, name)).nnz == 0  # exact
    for name in ("bead_names", "bead_types", "bead_bonds", "chains", "constraints", "atom_bonds", "force_map_kind"):
        assert getattr(loaded, name) == getattr(mapping, name)
    np.testing.assert_array_equal(loaded.bead_masses, mapping.bead_masses)
    assert json.loads(json.dumps(mapping.to_dict())) == mapping.to_dict()
    with pytest.raises(MappingError, match="not a stored"):
        Mapping.from_dict({"bead_names": []})
