"""All-atom lipid bilayers from OpenMM's own pre-equilibrated patches (amber14 + lipid17, TIP3P).

OpenMM ships bilayer patches of 128 lipids (64 per leaflet) in ``openmm/app/data`` (POPC, DPPC,
DMPC, DLPC, DOPC, POPE, DLPE; one residue per lipid, CHARMM atom names; lipid17 parameters
through ``amber14-all.xml``). They are large for a CPU (25–33k atoms, about 2.7 ns/day for POPC
on 2 cores), so :func:`cut_patch` cuts a smaller periodic bilayer out of one:

1. **lateral subset**: the lipids of each leaflet whose centres of mass lie nearest (Chebyshev
   distance, through the patch's periodic images) to the centre of a square of side
   L = sqrt(n · a), with n lipids per leaflet and a the patch's area per lipid, so both leaflets
   hold exactly n lipids and the new box has the patch's area per lipid;
2. **re-imaged**: each lipid is moved whole to the periodic image nearest that centre; each
   water molecule to its image nearest the centre, kept if its oxygen lies in the square;
3. **re-hydrated**: of those waters, the ``waters_per_lipid`` · 2n nearest the bilayer's
   mid-plane (the same number on both sides, by minimum-image distance along z), and none whose
   oxygen is within 0.2 nm of a lipid heavy atom of the new periodic box (clashes across the new
   lateral faces); the box height is the water layer's extent plus one water spacing (0.3 nm);
4. **minimised** (:func:`minimise`), in the System of :func:`membrane_system`.

Why this size for the quick run: 16 lipids per leaflet (a 3.1 nm square of DMPC) is the smallest
patch whose lateral box clears twice the 1.0 nm PME cutoff with room for the box to breathe under
the membrane barostat; 25 waters per lipid (full hydration of a PC head group is ~25–30) keep a
water layer ≥ 1.3 nm thick on each side. Measured plan: 35 DMPC with 870 waters (6,740 atoms)
run at ~0.13 ps per wall second on 2 CPU threads at 4 fs.

:func:`membrane_system`: PME (1.0 nm), constrained bonds to hydrogen, rigid TIP3P, hydrogen-mass
repartitioning (3 amu hydrogens; OpenMM leaves water alone) for a 4 fs step, and optionally
``MonteCarloMembraneBarostat`` at zero surface tension and 1 bar (the force field's own area).

Units: nm, ps, K, bar, amu. Box vectors are (3, 3) arrays whose rows are the cell vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import app, unit

from multiscale.openmm.assembly import MembraneBarostat

#: the bilayer patches OpenMM ships (openmm/app/data/<LIPID>.pdb), each 128 lipids
LIPIDS = ("POPC", "DPPC", "DMPC", "DLPC", "DOPC", "POPE", "DLPE")

#: simulation temperatures (K): above each lipid's main phase transition, where experimental areas
#: per lipid are measured (Kučerka et al., BBA 1808, 2761 (2011): POPC 303 K, DPPC 323 K)
LIPID_TEMPERATURES_K: Dict[str, float] = {"POPC": 303.0, "DPPC": 323.0, "DMPC": 303.0, "DLPC": 303.0,
                                           "DOPC": 303.0, "POPE": 310.0, "DLPE": 310.0}

#: experimental area per lipid (nm²) of the fluid bilayer at LIPID_TEMPERATURES_K (joint X-ray and
#: neutron scattering; Kučerka, Nieh & Katsaras, BBA 1808, 2761 (2011); the PE lipids are not in it)
FLUID_AREA_PER_LIPID_NM2: Dict[str, float] = {"DLPC": 0.632, "DMPC": 0.606, "DPPC": 0.631, "POPC": 0.643,
                                              "DOPC": 0.674}

#: a bilayer this much smaller in area per lipid than the fluid one is packed like a gel (a gel PC's
#: area is ~20 % below its fluid one: DPPC 0.479 nm² at 293 K against 0.631 at 323 K, Nagle &
#: Tristram-Nagle, BBA 1469, 159 (2000)); OpenMM's fluid patches lie within 5 % of the fluid areas
GEL_AREA_DEFICIT = 0.10

#: the force field files (amber14's lipid17 terms + TIP3P) the patches load with
FORCEFIELD_FILES = ("amber14-all.xml", "amber14/tip3p.xml")

#: hydrogen mass (amu) after repartitioning (the heavy atom gives up the difference): with HBonds
#: constraints it makes a 4 fs step stable (Hopkins et al., JCTC 11, 1864 (2015), 3.024 amu)
HMR_HYDROGEN_MASS_AMU = 3.0

#: the largest honest all-atom step with HMR + HBonds (ps)
REFERENCE_TIMESTEP_PS = 0.004

#: water oxygen – lipid heavy atom distance (nm) below which a water is dropped as a clash
WATER_CLASH_NM = 0.2

#: one water spacing (nm): the gap left at the box's z faces when the water layer is cut
WATER_SPACING_NM = 0.3

WATER_RESIDUES = ("HOH", "WAT", "TIP3")


def patch_file(lipid: str) -> Path:
    """The path of OpenMM's pre-equilibrated ``lipid`` patch; refuses unknown names."""
    name = str(lipid).upper()
    if name not in LIPIDS:
        raise ValueError(f"no bilayer patch for lipid {lipid!r}; OpenMM ships {', '.join(LIPIDS)}")
    path = Path(app.__file__).resolve().parent / "data" / f"{name}.pdb"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from this OpenMM installation (openmm 8.6.1 ships it)")
    return path


@dataclass
class Bilayer:
    """A bilayer: ``topology``, ``positions`` (N, 3) nm, ``box`` (3, 3) nm, its ``lipid`` name,
    ``n_lipids`` (both leaflets) and ``n_waters``."""

    topology: app.Topology
    positions: np.ndarray
    box: np.ndarray
    lipid: str
    n_lipids: int
    n_waters: int

    @property
    def area_per_lipid_nm2(self) -> float:
        return float(self.box[0, 0] * self.box[1, 1] / (self.n_lipids / 2))

    def write_pdb(self, path) -> None:
        with open(path, "w") as handle:
            app.PDBFile.writeFile(self.topology, self.positions * unit.nanometer, handle, keepIds=False)


def load_patch(lipid: str) -> Bilayer:
    """OpenMM's whole patch of ``lipid`` (128 lipids)."""
    pdb = app.PDBFile(str(patch_file(lipid)))
    box = np.array([[v.x, v.y, v.z] for v in pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)])
    positions = np.array(pdb.positions.value_in_unit(unit.nanometer))
    lipids = [r for r in pdb.topology.residues() if r.name not in WATER_RESIDUES]
    return Bilayer(pdb.topology, positions, box, str(lipid).upper(), len(lipids),
                   sum(1 for r in pdb.topology.residues() if r.name in WATER_RESIDUES))


def _residue_atoms(residue) -> np.ndarray:
    return np.array([a.index for a in residue.atoms()], dtype=np.int64)


def _heavy_mass(atom) -> float:
    return 0.0 if atom.element is None else atom.element.mass.value_in_unit(unit.dalton)


def leaflets(topology: app.Topology, positions: np.ndarray, box: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(lipid residue indices, leaflet of each: +1 upper, −1 lower) from the phosphorus atoms'
    heights against the bilayer mid-plane (the mean P height; the patches keep the bilayer whole
    inside the box along z)."""
    lipids = [r for r in topology.residues() if r.name not in WATER_RESIDUES]
    p_z = []
    for residue in lipids:
        phosphorus = [a.index for a in residue.atoms() if a.element is not None and a.element.symbol == "P"]
        if not phosphorus:
            raise ValueError(f"lipid residue {residue.name} {residue.id} has no phosphorus atom to assign its leaflet")
        p_z.append(positions[phosphorus[0], 2])
    p_z = np.array(p_z)
    mid = p_z.mean()
    return np.array([r.index for r in lipids]), np.where(p_z > mid, 1, -1)


def cut_patch(lipid: str, lipids_per_leaflet: int, waters_per_lipid: int = 25) -> Bilayer:
    """A smaller periodic bilayer cut from OpenMM's ``lipid`` patch (see the module docstring),
    not yet minimised: ``lipids_per_leaflet`` lipids in each leaflet, ``waters_per_lipid`` waters
    per lipid (fewer if clashes at the new faces removed some; the count is in ``n_waters``)."""
    if isinstance(lipids_per_leaflet, bool) or int(lipids_per_leaflet) != lipids_per_leaflet or lipids_per_leaflet < 1:
        raise ValueError(f"lipids_per_leaflet must be a positive integer, got {lipids_per_leaflet!r}")
    if isinstance(waters_per_lipid, bool) or int(waters_per_lipid) != waters_per_lipid or waters_per_lipid < 1:
        raise ValueError(f"waters_per_lipid must be a positive integer, got {waters_per_lipid!r}")
    patch = load_patch(lipid)
    if lipids_per_leaflet > patch.n_lipids // 2:
        raise ValueError(f"the {patch.lipid} patch has {patch.n_lipids // 2} lipids per leaflet; "
                         f"lipids_per_leaflet={lipids_per_leaflet} asks for more")
    top, x, box = patch.topology, patch.positions, patch.box
    if np.abs(box - np.diag(np.diag(box))).max() > 1e-9:
        raise ValueError("the patch box is not rectangular")
    widths = np.diag(box)
    waters_in_patch = patch.n_waters / patch.n_lipids
    if waters_per_lipid > waters_in_patch:
        raise ValueError(f"the {patch.lipid} patch holds {waters_in_patch:.0f} waters per lipid; "
                         f"waters_per_lipid={waters_per_lipid} asks for more")
    side = math.sqrt(lipids_per_leaflet * widths[0] * widths[1] / (patch.n_lipids / 2))
    centre = 0.5 * widths[:2]
    residues = list(top.residues())
    masses = np.array([_heavy_mass(a) for a in top.atoms()])

    def nearest_image(points_xy):
        d = points_xy - centre
        return d - widths[:2] * np.round(d / widths[:2])

    lipid_index, leaflet = leaflets(top, x, box)
    shifts: Dict[int, np.ndarray] = {}
    chosen: List[int] = []
    for side_sign in (1, -1):
        members = lipid_index[leaflet == side_sign]
        coms = np.array([np.average(x[_residue_atoms(residues[r])], axis=0, weights=masses[_residue_atoms(residues[r])])
                         for r in members])
        offsets = nearest_image(coms[:, :2])
        order = np.argsort(np.max(np.abs(offsets), axis=1), kind="stable")[:lipids_per_leaflet]
        for k in order:
            r = int(members[k])
            shifts[r] = np.append(offsets[k] + side / 2 - coms[k, :2], 0.0)  # centre of mass to the new square
            chosen.append(r)
    chosen.sort()
    mid_z = float(np.mean([x[_residue_atoms(residues[r]), 2].mean() for r in chosen]))
    new_x = {r: x[_residue_atoms(residues[r])] + shifts[r] for r in chosen}
    lipid_heavy = np.concatenate([new_x[r][masses[_residue_atoms(residues[r])] > 1.5] for r in chosen])

    # waters: the image of each molecule nearest the square's centre, kept inside the square
    waters = [r for r in residues if r.name in WATER_RESIDUES]
    candidates = []
    for residue in waters:
        atoms = _residue_atoms(residue)
        oxygen = [a.index for a in residue.atoms() if a.element is not None and a.element.symbol == "O"][0]
        offset = nearest_image(x[oxygen, :2][None])[0]
        if np.any(np.abs(offset) >= side / 2):
            continue
        shift_xy = offset + side / 2 - x[oxygen, :2]
        dz = x[oxygen, 2] - mid_z
        dz -= widths[2] * round(dz / widths[2])
        moved = x[atoms] + np.append(shift_xy, 0.0)
        moved[:, 2] += (mid_z + dz) - x[oxygen, 2]
        candidates.append((residue.index, moved, moved[atoms.tolist().index(oxygen)], dz))
    # drop clashes with lipid heavy atoms across the new faces (periodic in x and y; a brute-force
    # minimum-image test per oxygen: exact, and cheap at these sizes)
    new_lateral = np.array([side, side])

    def clashes(point):
        d = lipid_heavy - point
        d[:, :2] -= new_lateral * np.round(d[:, :2] / new_lateral)
        return bool(np.any(np.einsum("ij,ij->i", d, d) < WATER_CLASH_NM ** 2))

    candidates = [c for c in candidates if not clashes(c[2])]
    wanted = waters_per_lipid * 2 * lipids_per_leaflet
    upper = sorted((c for c in candidates if c[3] > 0), key=lambda c: c[3])
    lower = sorted((c for c in candidates if c[3] <= 0), key=lambda c: -c[3])
    kept = upper[: wanted // 2] + lower[: wanted - wanted // 2]
    if len(kept) < wanted * 0.9:
        raise ValueError(f"only {len(kept)} waters of the {wanted} asked for fit above and below {2 * lipids_per_leaflet} "
                         f"{patch.lipid} lipids; ask for fewer waters_per_lipid")
    kept.sort(key=lambda c: c[0])
    dz_all = np.array([c[3] for c in kept])
    height = float(dz_all.max() - dz_all.min() + WATER_SPACING_NM)

    new_top = app.Topology()
    chain = new_top.addChain()
    coords: List[np.ndarray] = []
    atom_map = {}
    for r in chosen:
        residue = residues[r]
        new_residue = new_top.addResidue(residue.name, chain)
        for atom in residue.atoms():
            atom_map[atom.index] = new_top.addAtom(atom.name, atom.element, new_residue)
        coords.append(new_x[r])
    water_chain = new_top.addChain()
    for index, moved, _, _ in kept:
        residue = residues[index]
        new_residue = new_top.addResidue(residue.name, water_chain)
        for atom in residue.atoms():
            atom_map[atom.index] = new_top.addAtom(atom.name, atom.element, new_residue)
        coords.append(moved)
    for a, b in top.bonds():
        if a.index in atom_map and b.index in atom_map:
            new_top.addBond(atom_map[a.index], atom_map[b.index])
    positions = np.concatenate(coords)
    # the water layer's lowest molecule sits half a spacing above the box's bottom face
    positions[:, 2] += -(mid_z + dz_all.min()) + WATER_SPACING_NM / 2
    new_box = np.diag([side, side, height])
    new_top.setPeriodicBoxVectors([openmm.Vec3(*row) for row in new_box] * unit.nanometer)
    return Bilayer(new_top, positions, new_box, patch.lipid, 2 * lipids_per_leaflet, len(kept))


def membrane_system(topology: app.Topology, box: np.ndarray, *, cutoff_nm: float = 1.0,
                    hydrogen_mass_amu: Optional[float] = HMR_HYDROGEN_MASS_AMU,
                    barostat: Optional[MembraneBarostat] = None) -> openmm.System:
    """The all-atom System: amber14 + lipid17 + TIP3P, PME at ``cutoff_nm``, HBonds constraints,
    rigid water, hydrogen masses ``hydrogen_mass_amu`` (None: no repartitioning), and
    ``barostat`` (e.g. ``MembraneBarostat(1.0, T)``: zero tension, 1 bar) when given."""
    box = np.asarray(box, dtype=float)
    if cutoff_nm >= 0.5 * float(np.min(np.diag(box))):
        raise ValueError(f"cutoff_nm={cutoff_nm} is not below half the smallest box width {np.min(np.diag(box)):.2f} nm; "
                         "cut a larger patch or use a shorter cutoff")
    topology.setPeriodicBoxVectors([openmm.Vec3(*map(float, row)) for row in box] * unit.nanometer)
    forcefield = app.ForceField(*FORCEFIELD_FILES)
    kwargs = {} if hydrogen_mass_amu is None else {"hydrogenMass": hydrogen_mass_amu * unit.amu}
    system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * unit.nanometer,
                                     constraints=app.HBonds, rigidWater=True, ewaldErrorTolerance=5e-4, **kwargs)
    if barostat is not None:
        barostat.add_to(system)
    return system


def minimise(system: openmm.System, bilayer: Bilayer, *, platform: str = "CPU", tolerance: float = 10.0,
             max_iterations: int = 500) -> np.ndarray:
    """Energy-minimised positions (nm) of ``bilayer`` in ``system`` (constraints applied): enough
    iterations to relax the clashes at the new faces (the rest relaxes in the NPT equilibration)."""
    integrator = openmm.VerletIntegrator(0.001)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in bilayer.box])
    context.setPositions(bilayer.positions)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance * unit.kilojoule_per_mole / unit.nanometer, max_iterations)
    state = context.getState(getPositions=True, getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not math.isfinite(energy):
        raise RuntimeError("minimisation of the cut bilayer ended at a non-finite energy; cut a larger patch")
    return np.array(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def lipid_residues(topology) -> List[int]:
    """Indices of the lipid (non-water) residues."""
    return [r.index for r in topology.residues() if r.name not in WATER_RESIDUES]


def packing_check(lipid: str, area_per_lipid_nm2: float, temperature_K: Optional[float] = None) -> dict:
    """Whether a bilayer of ``lipid`` at ``area_per_lipid_nm2`` is packed like the fluid phase.

    Compares the area per lipid with the experimental fluid one (:data:`FLUID_AREA_PER_LIPID_NM2`).
    Returns ``{"lipid", "area_per_lipid_nm2", "fluid_area_per_lipid_nm2", "relative_difference_percent",
    "gel_like", "message"}``; ``fluid_area_per_lipid_nm2`` and the difference are None for a lipid
    with no published value (then ``gel_like`` is False), and ``message`` says what to do when
    ``gel_like``. Why it matters: OpenMM's DPPC patch is at 0.497 nm² per lipid, a gel's packing,
    and a reference equilibrated for tens of ps does not melt it (that takes ns), so a CG model
    fitted to it is fitted to a gel, whatever the temperature."""
    name = check_lipid(lipid)
    area = float(area_per_lipid_nm2)
    if not 0.2 < area < 2.0:
        raise ValueError(f"area per lipid {area} is outside 0.2-2 nm²; it is in nm² (1 nm² = 100 Å²)")
    fluid = FLUID_AREA_PER_LIPID_NM2.get(name)
    result = {"lipid": name, "area_per_lipid_nm2": area, "fluid_area_per_lipid_nm2": fluid,
              "relative_difference_percent": None if fluid is None else 100.0 * (area / fluid - 1.0),
              "gel_like": False, "message": None}
    if fluid is not None and area < (1.0 - GEL_AREA_DEFICIT) * fluid:
        at = LIPID_TEMPERATURES_K[name]
        result["gel_like"] = True
        result["message"] = (
            f"this {name} bilayer is packed like a gel: {area:.3f} nm² per lipid against the fluid phase's "
            f"{fluid:.3f} nm² measured at {at:g} K (Kučerka et al., BBA 1808, 2761 (2011)), "
            f"{100 * (1 - area / fluid):.0f} % smaller"
            + ("" if temperature_K is None else f"; simulated at {float(temperature_K):g} K")
            + ". Melting it takes ns of all-atom MD, so a reference equilibrated for less describes the gel, and so "
            "does a CG model fitted to it. Use a lipid whose patch is fluid (DMPC, POPC, DLPC, DOPC), or equilibrate "
            "for ns first (equilibration_steps in a --config file)")
    return result


def check_lipid(lipid: str) -> str:
    """The upper-case lipid name, or a ValueError naming the patches OpenMM ships."""
    name = str(lipid).upper()
    if name not in LIPIDS:
        raise ValueError(f"unknown lipid {lipid!r}; choose one of {', '.join(LIPIDS)} (OpenMM's bilayer patches)")
    return name


__all__: Sequence[str] = ("LIPIDS", "LIPID_TEMPERATURES_K", "FLUID_AREA_PER_LIPID_NM2", "GEL_AREA_DEFICIT",
                          "packing_check", "Bilayer", "patch_file", "load_patch", "leaflets",
                          "cut_patch", "membrane_system", "minimise", "lipid_residues", "check_lipid",
                          "REFERENCE_TIMESTEP_PS", "HMR_HYDROGEN_MASS_AMU")
