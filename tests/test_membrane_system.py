"""The all-atom bilayer (systems/membrane.py) and its lipid mapping, on a tiny patch cut from
OpenMM's DMPC bilayer: exact lipid counts per leaflet at the patch's area per lipid, whole lipids,
no water inside lipid heavy atoms, hydrogen-mass repartitioning and HBonds as asked, a zero-tension
membrane barostat, a stable 4 fs run; the mapping keeps every constrained hydrogen in its heavy
atom's bead (so the summed force map is exact) and is refused or made constraint-aware when not."""

import numpy as np
import openmm
import pytest
from openmm import app, unit

import multiscale  # noqa: F401
from multiscale.cg.mapping import build_mapping, constraints_of, lipid_mapping_definition
from multiscale.cg.mapping.definition import MappingDefinition
from multiscale.openmm.assembly import MembraneBarostat
from systems.membrane import (FLUID_AREA_PER_LIPID_NM2, HMR_HYDROGEN_MASS_AMU, LIPID_TEMPERATURES_K, cut_patch,
                              leaflets, load_patch, membrane_system, minimise, packing_check)

CUTOFF = 0.7


@pytest.fixture(scope="module")
def patch():
    bilayer = cut_patch("DMPC", 4, 20)
    system = membrane_system(bilayer.topology, bilayer.box, cutoff_nm=CUTOFF,
                             barostat=MembraneBarostat(1.0, LIPID_TEMPERATURES_K["DMPC"]))
    bilayer.positions = minimise(system, bilayer, max_iterations=300)
    return bilayer, system


def test_cut_patch_counts_area_and_water(patch):
    bilayer, _ = patch
    full = load_patch("DMPC")
    assert bilayer.n_lipids == 8 and bilayer.n_waters >= 0.9 * 160
    _, side = leaflets(bilayer.topology, bilayer.positions, bilayer.box)
    assert sorted(side.tolist()) == [-1] * 4 + [1] * 4
    # the patch's area per lipid, exactly
    assert bilayer.area_per_lipid_nm2 == pytest.approx(full.area_per_lipid_nm2, rel=1e-9)
    # every lipid whole: bonded atoms within 0.2 nm (no bond cut by re-imaging)
    x = bilayer.positions
    d = np.array([np.linalg.norm(x[a.index] - x[b.index]) for a, b in bilayer.topology.bonds()])
    assert d.max() < 0.2


def test_only_the_gel_packed_dppc_patch_is_flagged_against_the_measured_fluid_areas():
    # OpenMM's DPPC patch is at a gel's area per lipid (~0.50 nm²), far below the fluid DPPC's 0.631 nm²
    # measured by Kučerka et al. (2011); the other PC patches lie near their measured fluid areas
    for lipid in FLUID_AREA_PER_LIPID_NM2:
        check = packing_check(lipid, load_patch(lipid).area_per_lipid_nm2, LIPID_TEMPERATURES_K[lipid])
        assert check["gel_like"] == (lipid == "DPPC"), (lipid, check)
        if lipid == "DPPC":
            assert check["relative_difference_percent"] < -15 and "equilibration_steps" in check["message"]
        else:
            assert abs(check["relative_difference_percent"]) < 6 and check["message"] is None
    # a lipid with no published fluid area is not judged; an area in Å² is refused
    assert packing_check("POPE", 0.40)["gel_like"] is False
    with pytest.raises(ValueError, match="nm²"):
        packing_check("DPPC", 63.1)


def test_no_water_sits_on_a_lipid_across_the_new_faces():
    bilayer = cut_patch("DMPC", 4, 20)  # before minimisation
    heavy = [a.index for a in bilayer.topology.atoms() if a.residue.name != "HOH" and a.element.symbol != "H"]
    oxygens = [a.index for a in bilayer.topology.atoms() if a.residue.name == "HOH" and a.element.symbol == "O"]
    d = bilayer.positions[oxygens][:, None] - bilayer.positions[heavy][None]
    widths = np.diag(bilayer.box)
    d[..., :2] -= widths[:2] * np.round(d[..., :2] / widths[:2])
    assert np.sqrt((d ** 2).sum(-1)).min() >= 0.2


def test_system_has_hmr_hbonds_pme_and_a_tension_free_barostat(patch):
    bilayer, system = patch
    masses = np.array([system.getParticleMass(k).value_in_unit(unit.dalton) for k in range(system.getNumParticles())])
    atoms = list(bilayer.topology.atoms())
    lipid_h = [a.index for a in atoms if a.element.symbol == "H" and a.residue.name != "HOH"]
    water_h = [a.index for a in atoms if a.element.symbol == "H" and a.residue.name == "HOH"]
    assert np.allclose(masses[lipid_h], HMR_HYDROGEN_MASS_AMU)
    assert np.allclose(masses[water_h], 1.008, atol=1e-3)
    # total mass is conserved by repartitioning (against the same force field without it)
    plain = membrane_system(bilayer.topology, bilayer.box, cutoff_nm=CUTOFF, hydrogen_mass_amu=None)
    plain_masses = np.array([plain.getParticleMass(k).value_in_unit(unit.dalton) for k in range(plain.getNumParticles())])
    assert masses.sum() == pytest.approx(plain_masses.sum(), rel=1e-12)
    assert np.all(masses[lipid_h] > plain_masses[lipid_h])
    constrained = {tuple(sorted(c)) for c in constraints_of(system)}
    for a, b in bilayer.topology.bonds():
        if "H" in (a.element.symbol, b.element.symbol):
            assert tuple(sorted((a.index, b.index))) in constrained
    nonbonded = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)][0]
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    barostat = [f for f in system.getForces() if isinstance(f, openmm.MonteCarloMembraneBarostat)][0]
    assert barostat.getDefaultSurfaceTension().value_in_unit(unit.bar * unit.nanometer) == 0.0
    assert barostat.getXYMode() == openmm.MonteCarloMembraneBarostat.XYIsotropic


def test_four_femtosecond_run_is_stable(patch):
    bilayer, system = patch
    T = LIPID_TEMPERATURES_K["DMPC"]
    integrator = openmm.LangevinMiddleIntegrator(T, 1.0, 0.004)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in bilayer.box])
    context.setPositions(bilayer.positions)
    context.setVelocitiesToTemperature(T, 4)
    integrator.step(250)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    temperature = 2 * state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (dof * 0.0083144626)
    assert 240 < temperature < 370


def test_lipid_mapping_keeps_hydrogens_with_their_heavy_atoms(patch):
    bilayer, system = patch
    modeller = app.Modeller(bilayer.topology, bilayer.positions * unit.nanometer)
    modeller.delete([r for r in bilayer.topology.residues() if r.name == "HOH"])
    top = modeller.topology
    n = top.getNumAtoms()
    constraints = [c for c in constraints_of(system) if max(c) < n]
    definition = lipid_mapping_definition(top)
    mapping = build_mapping(top, definition, constraints=constraints)
    assert mapping.force_map_kind == "sum"  # exact: no constraint crosses a bead
    assert mapping.n_beads == 10 * 8 and len(mapping.chains) == 8
    assert sorted(set(mapping.bead_types)) == ["C", "CT", "GL", "NC", "PO"]
    # DMPC's 13-carbon tails: beads of 4, 4 and 5 carbons, the chain end (CT) the larger
    tail = [mapping.atom_indices[b] for b in range(10) if mapping.bead_names[b].startswith("C2")]
    heavy = [sum(1 for a in atoms if list(top.atoms())[a].element.symbol == "C") for atoms in tail]
    assert heavy == [4, 4, 5] and [mapping.bead_types[b] for b in range(10) if mapping.bead_names[b].startswith("C2")] == ["C", "C", "CT"]
    lipid_mass = sum(a.element.mass.value_in_unit(unit.dalton) for a in top.atoms())
    assert mapping.bead_masses.sum() == pytest.approx(lipid_mass, rel=1e-9)
    # one residue per lipid in the CG topology
    named = mapping.with_molecule_names(["DMP"] * 8)
    assert [r.name for r in named.cg_topology().residues()] == ["DMP"] * 8
    with pytest.raises(ValueError, match="3 characters"):
        mapping.with_molecule_names(["DMPC"] * 8)
    # a hydrogen moved into another bead: its HBonds constraint crosses a bead, and the force map
    # must become constraint-aware (the plain sum would be wrong)
    template = definition.residues["DMP"].to_dict()
    beads = template["beads"]
    beads[0]["atoms"].remove("H12A")
    beads[1]["atoms"].append("H12A")
    moved = build_mapping(top, MappingDefinition.from_dict({"residues": {"DMP": template}}), constraints=constraints)
    assert moved.force_map_kind != "sum"
