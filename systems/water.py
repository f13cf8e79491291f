"""Periodic boxes of liquid water, built with OpenMM's own ``Modeller.addSolvent``.

Units: lengths and positions in nm. Box vectors are returned as a (3, 3) array whose *rows* are
the cell vectors a, b, c (OpenMM's convention).
"""

from __future__ import annotations

import random
from typing import Dict, Optional, Tuple

import numpy as np
import openmm
from openmm import Vec3, app, unit

#: Number density of liquid water at 0.997 g/cm³ and 298 K, in molecules per nm³.
WATER_PER_NM3 = 33.4

#: Smallest cubic box edge (nm) accepted; smaller cells cannot hold a meaningful liquid sample.
MIN_BOX_NM = 1.0

#: Water models addSolvent can build: force-field file with the model's residue template, and
#: particles per molecule (virtual sites included).
WATER_MODELS: Dict[str, Tuple[str, int]] = {
    "tip3p": ("amber14/tip3p.xml", 3),
    "spce": ("amber14/spce.xml", 3),
    "tip4pew": ("amber14/tip4pew.xml", 4),
    "tip5p": ("tip5p.xml", 5),
}


def _box_edge_nm(num_waters: Optional[int], target_atoms: Optional[int], box_nm: Optional[float], per_molecule: int) -> float:
    given = [name for name, value in (("num_waters", num_waters), ("target_atoms", target_atoms), ("box_nm", box_nm)) if value is not None]
    if len(given) != 1:
        raise ValueError(
            f"pass exactly one of num_waters, target_atoms or box_nm (got {given or 'none'}); "
            "e.g. water_box(1000), water_box(target_atoms=3000) or water_box(box_nm=3.0)"
        )
    if box_nm is not None:
        edge = float(box_nm)
        if not np.isfinite(edge) or edge <= 0:
            raise ValueError(f"box_nm must be a positive box edge in nm, got {box_nm!r}")
    else:
        name, count = given[0], num_waters if num_waters is not None else target_atoms
        if isinstance(count, bool) or int(count) != count or count <= 0:
            raise ValueError(f"{name} must be a positive integer, got {count!r}")
        molecules = count if num_waters is not None else count / per_molecule
        edge = (molecules / WATER_PER_NM3) ** (1.0 / 3.0)
    if edge < MIN_BOX_NM:
        minimum = int(np.ceil(WATER_PER_NM3 * MIN_BOX_NM**3))
        raise ValueError(
            f"the box edge would be {edge:.3f} nm, below the {MIN_BOX_NM} nm minimum of the addSolvent template; "
            f"ask for at least {minimum} waters ({minimum * per_molecule} atoms) or box_nm >= {MIN_BOX_NM}"
        )
    return edge


def _solvate(forcefield_file: str, model: str, edge: float, seed: int) -> app.Modeller:
    modeller = app.Modeller(app.Topology(), [])
    saved = random.getstate()
    random.seed(seed)
    try:
        modeller.addSolvent(app.ForceField(forcefield_file), model=model, boxSize=Vec3(edge, edge, edge) * unit.nanometer)
    finally:
        random.setstate(saved)
    return modeller


def water_box(
    num_waters: Optional[int] = None,
    *,
    target_atoms: Optional[int] = None,
    box_nm: Optional[float] = None,
    model: str = "tip3p",
    seed: int = 0,
) -> Tuple[app.Topology, np.ndarray, np.ndarray]:
    """A cubic periodic box of pre-equilibrated water at ~0.997 g/cm³.

    Give exactly one of
    ``num_waters`` (approximate number of molecules), ``target_atoms`` (approximate number of
    particles, virtual sites included) or ``box_nm`` (cubic box edge in nm). Counts set the edge
    from a density of ``WATER_PER_NM3`` molecules/nm³; because addSolvent drops the molecules that
    would clash across the periodic boundary, the edge is then corrected (a few rebuilds) so the
    real count lands close to the request: within ~1-2 % from ~5,000 atoms up, up to ~10 % for
    small boxes and just above multiples of the 3 nm template (3,297 atoms are built for 3,000).
    Read the real count from ``topology.getNumAtoms()``. ``box_nm`` boxes are built once, as asked.

    addSolvent tiles a pre-equilibrated 3 nm template. Unless the edge is a multiple of 3 nm,
    the tiling does not match across the periodic boundary: a few percent of the molecules there
    come too close (O-O down to ~0.18 nm; TIP3P/PME energies of -20 kJ/mol per water or
    higher, instead of about -40), or, for edges just above a multiple of 3 nm, a thin vacuum slab is left.
    That is fine for timing energy/force evaluations; before dynamics, energy-minimize
    (``openmm.LocalEnergyMinimizer.minimize``) and equilibrate.

    ``model`` is one of ``WATER_MODELS`` ('tip3p', 'spce', 'tip4pew', 'tip5p'). ``seed`` seeds
    Python's ``random`` module, which addSolvent uses for its random choices, for the duration of
    the call (the caller's random state is restored); a pure-water box involves none, so the
    result is the same for every seed.

    Returns ``(topology, positions, box_vectors)``: the Topology (carrying the periodic box
    vectors), positions as a float64 (N, 3) array in nm, and the box as a float64 (3, 3) array
    in nm with the cell vectors as rows.
    """
    if model not in WATER_MODELS:
        raise ValueError(f"unknown water model {model!r}; choose one of {sorted(WATER_MODELS)}")
    forcefield_file, per_molecule = WATER_MODELS[model]
    edge = _box_edge_nm(num_waters, target_atoms, box_nm, per_molecule)

    if box_nm is not None:
        modeller = _solvate(forcefield_file, model, edge, seed)
    else:
        # addSolvent drops the molecules that clash across the periodic boundary (a surface effect
        # worth up to ~10 % in small boxes), so rescale the edge to the count actually obtained and
        # rebuild, at most twice more, keeping the box closest to the request.
        wanted = num_waters * per_molecule if num_waters is not None else target_atoms
        best = None
        for _ in range(3):
            modeller = _solvate(forcefield_file, model, edge, seed)
            count = modeller.topology.getNumAtoms()
            if best is None or abs(count - wanted) < abs(best.topology.getNumAtoms() - wanted):
                best = modeller
            if abs(count - wanted) <= 0.01 * wanted:
                break
            edge *= (wanted / count) ** (1.0 / 3.0)
        modeller = best

    topology = modeller.topology
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64).reshape(-1, 3)
    box = np.asarray(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer), dtype=np.float64)
    return topology, positions, box


def tip3p_pme_system(
    topology: app.Topology,
    cutoff_nm: float = 0.9,
    ewald_error_tolerance: float = 5e-4,
    rigid_water: bool = True,
) -> openmm.System:
    """The classical TIP3P System for ``topology`` (amber14 + TIP3P): PME electrostatics with a
    real-space/Lennard-Jones cutoff of ``cutoff_nm`` nm, H-bond constraints, and rigid water
    unless ``rigid_water=False``. The Topology must be periodic (e.g. from :func:`water_box`)."""
    if topology.getPeriodicBoxVectors() is None:
        raise ValueError("PME needs a periodic Topology; set topology.setPeriodicBoxVectors(...) or build it with water_box()")
    if not cutoff_nm > 0:
        raise ValueError(f"cutoff_nm must be a positive distance in nm, got {cutoff_nm!r}")
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    return forcefield.createSystem(
        topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=app.HBonds,
        rigidWater=rigid_water,
        ewaldErrorTolerance=ewald_error_tolerance,
    )


def water_cluster(num_waters: int, *, seed: int = 0) -> Tuple[app.Topology, np.ndarray]:
    """A compact cluster of ``num_waters`` TIP3P waters cut from an equilibrated-density box:
    the waters whose oxygens lie nearest the box centre. Open boundaries (no box on the Topology).

    Returns (topology, positions in nm).
    """
    if num_waters < 1:
        raise ValueError(f"num_waters must be >= 1, got {num_waters}")
    topology, positions, box = water_box(box_nm=max(1.2, 2.0 * (num_waters / 33.4) ** (1 / 3) + 0.4), seed=seed)
    centre = box.sum(axis=0) / 2
    residues = list(topology.residues())
    if num_waters > len(residues):
        raise ValueError(f"num_waters={num_waters} is more than the {len(residues)} waters of the template box")
    oxygen = [next(a.index for a in r.atoms() if a.element.symbol == "O") for r in residues]
    chosen = sorted(np.argsort(np.linalg.norm(positions[oxygen] - centre, axis=1))[:num_waters])
    cluster = app.Topology()
    chain = cluster.addChain()
    keep = []
    for k in chosen:
        residue = cluster.addResidue("HOH", chain)
        atoms = {}
        for atom in residues[k].atoms():
            atoms[atom.name] = cluster.addAtom(atom.name, atom.element, residue)
            keep.append(atom.index)
        cluster.addBond(atoms["O"], atoms["H1"])
        cluster.addBond(atoms["O"], atoms["H2"])
    pos = positions[keep]
    # make each molecule whole around its oxygen (the template box is periodic)
    for start in range(0, len(keep), 3):
        for h in (start + 1, start + 2):
            d = pos[h] - pos[start]
            pos[h] -= np.round(d @ np.linalg.inv(box)) @ box
    return cluster, pos - pos.mean(axis=0)


def flexible_water_system(topology: app.Topology) -> openmm.System:
    """amber14 TIP3P with flexible O–H bonds and H–O–H angle (no constraints), NoCutoff:
    a cheap, smooth teacher for isolated water clusters."""
    forcefield = app.ForceField("amber14/tip3p.xml")
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
