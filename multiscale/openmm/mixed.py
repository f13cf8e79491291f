"""ML/MM Systems: an ML region inside a force-field System, with no term counted twice.

``create_mixed_system(topology, system, ml_atoms, model, embedding)`` copies the user's all-MM
System and

* removes every bonded term whose atoms all lie in the ML region (terms that cross the boundary
  stay; a covalent bond between the regions is refused, naming it: v1 takes whole molecules or
  residues that cut no bond);
* removes Lennard-Jones and Coulomb between ML atoms: every ML–ML pair becomes an exception with
  zero charge product and zero ε (this also removes the pair's reciprocal-space part, for the same
  image only). ML–MM Lennard-Jones stays in the force field.

``embedding="mechanical"``: the ML atoms keep their force-field charges for ML–MM electrostatics.
Under Ewald/PME a second NonbondedForce that carries only the ML charges, with the same cutoff,
tolerance and PME parameters and the same ML–ML exceptions, is subtracted: that force is the
Coulomb energy of the ML region with its own periodic images (and its self energy), exactly what
the exceptions leave behind (openmm-ml issue #108). With it, E_mixed − E_ML equals the all-MM
energy minus the energy of the ML region alone in the same box, images included. The ML force
acts on the ML atoms only (``particles=``).

``embedding="electrostatic"`` (a :class:`~multiscale.models.HybridPotential`): the ML atoms'
force-field charges are set to zero, so OpenMM's NonbondedForce holds MM–MM electrostatics only;
the model's predicted charges meet the MM charges through E_cross = Σ_ML q_i V_MM(r_i) (PME/Ewald
with the System's cutoff and tolerance, every image; forces with the dq/dr term), and the ML–ML
electrostatics are the model's own (:mod:`multiscale.openmm.embedding`). That force acts on every
particle, since the cross term moves the MM atoms too.

Periodic convention of the model: a model with periodic (or no) electrostatics sees the ML atoms
in the System's periodic cell (positions wrapped, minimum image within its cutoff), so the ML
region interacts with its own images through the model alone, never through force-field charges;
a HybridPotential whose Coulomb is a cluster's direct sum (trained on molecules in vacuum) sees the
region made whole and without images.

ML force group: :data:`multiscale.openmm.ML_FORCE_GROUP` (both embeddings).

Not changed: constraints and virtual sites, ML–MM bonded terms, and the long-range dispersion
correction of the NonbondedForce (a volume-dependent mean-field constant over all atom pairs; build
the MM System with ``useDispersionCorrection=False`` to leave ML–ML Lennard-Jones wholly to the
model). Units: OpenMM's.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import openmm
import torch
from openmm import app, unit

from multiscale.openmm.system import clone_system, topology_types

EMBEDDINGS = ("mechanical", "electrostatic")
#: bonded force types whose terms inside the ML region are removed
_BONDED = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "RBTorsionForce", "CMAPTorsionForce")
#: force types that hold no interaction between ML atoms to remove
_NEUTRAL = ("CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat", "MonteCarloMembraneBarostat",
            "MonteCarloFlexibleBarostat", "AndersenThermostat")
_PERIODIC_ELECTROSTATICS = (openmm.NonbondedForce.PME, openmm.NonbondedForce.Ewald, openmm.NonbondedForce.LJPME)


def check_ml_atoms(ml_atoms: Sequence[int], num_particles: int) -> List[int]:
    """The ML atom indices as a sorted list; ValueError for duplicates, non-integers, out of range."""
    atoms = list(ml_atoms)
    if not atoms:
        raise ValueError("ml_atoms is empty; give the indices of the atoms the ML model describes")
    bad = [a for a in atoms if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer))]
    if bad:
        raise ValueError(f"ml_atoms must be integer atom indices, got {bad[:5]}")
    outside = sorted({int(a) for a in atoms if not 0 <= int(a) < num_particles})
    if outside:
        raise ValueError(f"ml_atoms {outside[:5]} are outside the System's {num_particles} particles (0..{num_particles - 1})")
    if len(set(atoms)) != len(atoms):
        seen, twice = set(), set()
        for a in atoms:
            (twice if a in seen else seen).add(int(a))
        raise ValueError(f"ml_atoms lists atom(s) {sorted(twice)[:5]} more than once; give each atom once")
    return sorted(int(a) for a in atoms)


def _cut_bonds(topology: app.Topology, ml: Set[int]) -> List[str]:
    def name(atom) -> str:
        return f"{atom.residue.name}{atom.residue.id}:{atom.name} (atom {atom.index})"

    return [f"{name(a)}–{name(b)}" for a, b in topology.bonds() if (a.index in ml) != (b.index in ml)]


def _remove_bonded(force: openmm.Force, ml: Set[int]) -> int:
    """Zero the terms of a bonded force whose atoms are all in ``ml``; returns how many."""
    removed = 0
    kind = type(force).__name__
    if kind == "HarmonicBondForce":
        for k in range(force.getNumBonds()):
            i, j, length, _ = force.getBondParameters(k)
            if i in ml and j in ml:
                force.setBondParameters(k, i, j, length, 0.0)
                removed += 1
    elif kind == "HarmonicAngleForce":
        for k in range(force.getNumAngles()):
            i, j, m, angle, _ = force.getAngleParameters(k)
            if i in ml and j in ml and m in ml:
                force.setAngleParameters(k, i, j, m, angle, 0.0)
                removed += 1
    elif kind == "PeriodicTorsionForce":
        for k in range(force.getNumTorsions()):
            i, j, m, n, periodicity, phase, _ = force.getTorsionParameters(k)
            if {i, j, m, n} <= ml:
                force.setTorsionParameters(k, i, j, m, n, periodicity, phase, 0.0)
                removed += 1
    elif kind == "RBTorsionForce":
        for k in range(force.getNumTorsions()):
            i, j, m, n, *_ = force.getTorsionParameters(k)
            if {i, j, m, n} <= ml:
                force.setTorsionParameters(k, i, j, m, n, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
                removed += 1
    elif kind == "CMAPTorsionForce":
        zero_map = None
        for k in range(force.getNumTorsions()):
            index, a1, a2, a3, a4, b1, b2, b3, b4 = force.getTorsionParameters(k)
            if {a1, a2, a3, a4, b1, b2, b3, b4} <= ml:
                if zero_map is None:
                    size = force.getMapParameters(index)[0]
                    zero_map = force.addMap(size, [0.0] * (size * size))
                force.setTorsionParameters(k, zero_map, a1, a2, a3, a4, b1, b2, b3, b4)
                removed += 1
    return removed


def _ml_pairs(ml: Sequence[int]) -> List[Tuple[int, int]]:
    return [(ml[a], ml[b]) for a in range(len(ml)) for b in range(a + 1, len(ml))]


def _exclude_ml_pairs(force: openmm.NonbondedForce, ml: Sequence[int]) -> None:
    """Every ML–ML pair an exception with zero charge product and zero ε (existing ones overwritten)."""
    existing: Dict[Tuple[int, int], int] = {}
    for k in range(force.getNumExceptions()):
        i, j, *_ = force.getExceptionParameters(k)
        existing[(min(i, j), max(i, j))] = k
    for i, j in _ml_pairs(ml):
        if (i, j) in existing:
            force.setExceptionParameters(existing[(i, j)], i, j, 0.0, 1.0, 0.0)
        else:
            force.addException(i, j, 0.0, 1.0, 0.0)


def _ml_image_coulomb(force: openmm.NonbondedForce, ml: Sequence[int]) -> openmm.NonbondedForce:
    """A NonbondedForce with the same electrostatics as ``force`` but only the ML charges, no LJ,
    and the ML–ML exceptions: the ML region's Coulomb energy with its own periodic images."""
    images = openmm.NonbondedForce()
    images.setNonbondedMethod(openmm.NonbondedForce.PME if force.getNonbondedMethod() == openmm.NonbondedForce.LJPME
                              else force.getNonbondedMethod())
    images.setCutoffDistance(force.getCutoffDistance())
    images.setEwaldErrorTolerance(force.getEwaldErrorTolerance())
    images.setPMEParameters(*force.getPMEParameters())
    images.setUseDispersionCorrection(False)
    images.setUseSwitchingFunction(False)
    images.setExceptionsUsePeriodicBoundaryConditions(force.getExceptionsUsePeriodicBoundaryConditions())
    members = set(ml)
    for k in range(force.getNumParticles()):
        charge = force.getParticleParameters(k)[0] if k in members else 0.0
        images.addParticle(charge, 1.0, 0.0)
    for i, j in _ml_pairs(ml):
        images.addException(i, j, 0.0, 1.0, 0.0)
    return images


def create_mixed_system(
    topology: app.Topology,
    system: openmm.System,
    ml_atoms: Sequence[int],
    model,
    embedding: str = "mechanical",
    *,
    backend: str = "torchforce",
) -> openmm.System:
    """A copy of the all-MM ``system`` with the ``ml_atoms`` region described by ``model``
    (rules and periodic convention: module docstring). ``system`` is not modified."""
    from multiscale.openmm.bridge import torch_force
    from multiscale.openmm.embedding import electrostatic_embedding_force

    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    electrostatic = embedding == "electrostatic"
    cluster_model = bool(getattr(model, "direct", False))  # a HybridPotential with a cluster's Coulomb
    if electrostatic and not getattr(model, "PREDICTS_CHARGES", False):
        raise ValueError(
            f"embedding='electrostatic' needs a model with charges (a HybridPotential); {type(model).__name__} "
            "predicts none. Use embedding='mechanical', or train family: hybrid"
        )
    if topology.getNumAtoms() != system.getNumParticles():
        raise ValueError(f"the Topology has {topology.getNumAtoms()} atoms but the System {system.getNumParticles()} particles")
    ml = check_ml_atoms(ml_atoms, system.getNumParticles())
    members = set(ml)
    types = topology_types(topology)
    ml_types = [types[a] for a in ml]
    model.type_indices(ml_types)  # names a type of the ML region the model lacks
    cut = _cut_bonds(topology, members)
    if cut:
        raise ValueError(
            f"the ML region cuts {len(cut)} covalent bond(s): {', '.join(cut[:3])}; choose ml_atoms as whole "
            "molecules or residues (link atoms for cut bonds are not supported)"
        )
    periodic = system.usesPeriodicBoundaryConditions()
    if not periodic and getattr(model, "PREDICTS_CHARGES", False) and not cluster_model:
        raise ValueError(
            f"the model's Coulomb method is periodic ({model.coulomb.method}) but the System has no periodic box; "
            "use a periodic System (nonbondedMethod=app.PME) or a model with coulomb method 'direct'"
        )
    nonbonded = [system.getForce(k) for k in range(system.getNumForces()) if isinstance(system.getForce(k), openmm.NonbondedForce)]
    if electrostatic:
        mm_charges, coulomb = _embedding_charges(nonbonded, ml, model, system.getNumParticles())
    mixed = clone_system(system)
    unknown = []
    for index in range(mixed.getNumForces()):
        force = mixed.getForce(index)
        kind = type(force).__name__
        if kind in _BONDED:
            _remove_bonded(force, members)
        elif isinstance(force, openmm.NonbondedForce):
            if periodic and force.getNonbondedMethod() not in _PERIODIC_ELECTROSTATICS:
                raise ValueError(
                    "the System is periodic but its NonbondedForce does not use PME or Ewald, so the ML region's "
                    "periodic images cannot be removed exactly; create it with nonbondedMethod=app.PME"
                )
            _exclude_ml_pairs(force, ml)
            if electrostatic:
                for a in ml:
                    charge, sigma, epsilon = force.getParticleParameters(a)
                    force.setParticleParameters(a, 0.0, sigma, epsilon)
        elif isinstance(force, openmm.CustomNonbondedForce):
            excluded = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            for pair in _ml_pairs(ml):
                if pair not in excluded:
                    force.addExclusion(*pair)
        elif kind not in _NEUTRAL:
            unknown.append(kind)
    if unknown:
        raise ValueError(
            f"the System holds force(s) {sorted(set(unknown))} whose ML–ML terms create_mixed_system cannot remove; "
            f"it handles {', '.join(_BONDED)}, NonbondedForce and CustomNonbondedForce"
        )
    periodic_coulomb = [mixed.getForce(k) for k in range(mixed.getNumForces())
                        if isinstance(mixed.getForce(k), openmm.NonbondedForce)
                        and mixed.getForce(k).getNonbondedMethod() in _PERIODIC_ELECTROSTATICS]
    if electrostatic:
        mixed.addForce(electrostatic_embedding_force(model, ml_types, ml, mm_charges, coulomb, backend=backend))
        return mixed
    for force in periodic_coulomb:
        correction = openmm.CustomCVForce("-ml_images")
        correction.addCollectiveVariable("ml_images", _ml_image_coulomb(force, ml))
        correction.setName("multiscale ML-region image electrostatics (subtracted)")
        mixed.addForce(correction)
    if periodic and cluster_model:
        # the region made whole and seen without images: the embedding module with no MM charges
        zero = [0.0] * system.getNumParticles()
        mixed.addForce(electrostatic_embedding_force(model, ml_types, ml, zero, _coulomb_options(nonbonded), backend=backend))
    else:
        mixed.addForce(torch_force(model, ml_types, periodic, ml, backend=backend, system=mixed))
    return mixed


_OPENMM_METHODS = {openmm.NonbondedForce.PME: "pme", openmm.NonbondedForce.Ewald: "ewald", openmm.NonbondedForce.LJPME: "pme"}


def _coulomb_options(nonbonded: Sequence[openmm.NonbondedForce], dtype: str = "float64") -> Optional[Dict]:
    """Coulomb options of the System's (one) NonbondedForce: its cutoff (nm), method and
    ewaldErrorTolerance, in the ML model's precision ``dtype``; None for NoCutoff (no box)."""
    if not nonbonded:
        raise ValueError("the System has no NonbondedForce, so it has no force-field charges to embed the ML region in")
    if len(nonbonded) > 1:
        raise ValueError(f"the System has {len(nonbonded)} NonbondedForces; electrostatic embedding needs exactly one")
    force = nonbonded[0]
    method = force.getNonbondedMethod()
    if method == openmm.NonbondedForce.NoCutoff:
        return None
    if method not in _OPENMM_METHODS:
        raise ValueError(
            "electrostatic embedding needs the NonbondedForce to use PME, Ewald or NoCutoff (a cutoff with reaction "
            "field has no exact potential to embed in); create the System with nonbondedMethod=app.PME"
        )
    return dict(cutoff=force.getCutoffDistance().value_in_unit(unit.nanometer), method=_OPENMM_METHODS[method],
                tolerance=force.getEwaldErrorTolerance(), dtype=dtype)


def _embedding_charges(nonbonded, ml: Sequence[int], model, num_particles: int):
    """(MM charges with the ML entries zeroed, Coulomb options) for electrostatic embedding, after
    refusing what it cannot represent: an ML–MM exception (its pair would need a modified cross
    term), charge offsets, and an ML region whose force-field charge differs from the model's."""
    coulomb = _coulomb_options(nonbonded, "float32" if model.dtype == torch.float32 else "float64")
    force = nonbonded[0]
    members = set(ml)
    crossing = []
    for k in range(force.getNumExceptions()):
        i, j, *_ = force.getExceptionParameters(k)
        if (i in members) != (j in members):
            crossing.append((i, j))
    if crossing:
        raise ValueError(
            f"the NonbondedForce has {len(crossing)} exception(s) between ML and MM atoms, e.g. {crossing[0]}; "
            "electrostatic embedding needs the ML region to be whole molecules with no modified ML–MM pairs"
        )
    if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
        raise ValueError("the NonbondedForce has parameter offsets (alchemical charges); electrostatic embedding "
                         "cannot follow charges that change with global parameters")
    charges = [force.getParticleParameters(k)[0].value_in_unit(unit.elementary_charge) for k in range(num_particles)]
    region = sum(charges[a] for a in ml)
    if abs(region - model.total_charge) > 1e-3:
        raise ValueError(
            f"the ML region's force-field charges sum to {region:+.4f} e but the model's charges sum to "
            f"{model.total_charge:+.4f} e; call model.set_total_charge({round(region):+d}) (or choose the region "
            "so that the two agree)"
        )
    for a in ml:
        charges[a] = 0.0
    return charges, coulomb
