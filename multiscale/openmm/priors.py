"""CG priors as native OpenMM forces, built from the fitted parameters (plain data) of
:mod:`multiscale.cg.priors`: harmonic bonds and angles with OpenMM's ½k convention, periodic
torsions, and a purely repulsive CustomNonbondedForce between beads.

Units: nm, rad, kJ/mol.
"""

from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np
import openmm

from multiscale.cg.geometry import _as_index
from multiscale.cg.priors import Priors, TypeKey, canonical_key, excluded_pairs, nonbonded_type_pairs
from multiscale.cg.priors.contacts import _type_codes


def _missing(kind: str, key: TypeKey) -> ValueError:
    return ValueError(
        f"no {kind} prior for type {key}; the priors were fitted on a system without this type tuple. "
        "Refit the priors on data containing it, or remove the term"
    )


def priors_to_openmm(
    priors: Priors,
    bead_types: Sequence[str],
    bonds: Any,
    angles: Any = (),
    dihedrals: Any = (),
    *,
    nonbonded_cutoff_nm: float,
    periodic: bool,
) -> List[Any]:
    """Native OpenMM forces for the priors of a CG system with ``len(bead_types)`` particles.

    Returns, in this order: HarmonicBondForce (½k(r − r0)², always), HarmonicAngleForce (always),
    PeriodicTorsionForce (only if ``priors.dihedrals`` is non-empty; one term per periodicity) and
    CustomNonbondedForce (only if ``priors.repulsive`` is non-empty). The non-bonded force has a
    per-particle parameter ``type`` (index into the sorted type names) and Discrete2DFunctions
    ``sigma_ab``/``epsilon_ab`` (nm, kJ/mol), exclusions from ``priors.exclusion``, cutoff
    ``nonbonded_cutoff_nm`` (nm), CutoffPeriodic if ``periodic`` else CutoffNonPeriodic, no
    long-range correction. With ``periodic`` the bonded forces use periodic boundary conditions.
    Names: "cg_prior_bonds", "cg_prior_angles", "cg_prior_torsions", "cg_prior_repulsion".
    """
    names = [str(t) for t in bead_types]
    n_beads = len(names)
    unique, codes = _type_codes(names, n_beads)
    bond_idx = _as_index(bonds, 2, "bonds", n_beads)
    angle_idx = _as_index(angles, 3, "angles", n_beads)
    dihedral_idx = _as_index(dihedrals, 4, "dihedrals", n_beads)
    cutoff = float(nonbonded_cutoff_nm)
    if not cutoff > 0:
        raise ValueError(f"nonbonded_cutoff_nm must be a positive distance in nm, got {nonbonded_cutoff_nm!r}")

    bond_force = openmm.HarmonicBondForce()
    bond_force.setName("cg_prior_bonds")
    for i, j in bond_idx.tolist():
        key = canonical_key((names[i], names[j]))
        if key not in priors.bonds:
            raise _missing("bond", key)
        p = priors.bonds[key]
        bond_force.addBond(i, j, p.r0, p.k)
    bond_force.setUsesPeriodicBoundaryConditions(bool(periodic))
    forces: List[Any] = [bond_force]

    angle_force = openmm.HarmonicAngleForce()
    angle_force.setName("cg_prior_angles")
    for i, j, k in angle_idx.tolist():
        key = canonical_key((names[i], names[j], names[k]))
        if key not in priors.angles:
            raise _missing("angle", key)
        p = priors.angles[key]
        angle_force.addAngle(i, j, k, p.theta0, p.k)
    angle_force.setUsesPeriodicBoundaryConditions(bool(periodic))
    forces.append(angle_force)

    if priors.dihedrals:
        torsion_force = openmm.PeriodicTorsionForce()
        torsion_force.setName("cg_prior_torsions")
        for i, j, k, l in dihedral_idx.tolist():
            key = canonical_key((names[i], names[j], names[k], names[l]))
            if key not in priors.dihedrals:
                raise _missing("dihedral", key)
            for n, phase, kn in priors.dihedrals[key].terms:
                torsion_force.addTorsion(i, j, k, l, int(n), float(phase), float(kn))
        torsion_force.setUsesPeriodicBoundaryConditions(bool(periodic))
        forces.append(torsion_force)

    if priors.repulsive:
        n_types = len(unique)
        sigma = np.zeros((n_types, n_types))
        epsilon = np.zeros((n_types, n_types))
        for key in nonbonded_type_pairs(names, bond_idx, priors.exclusion):
            if key not in priors.repulsive:
                raise _missing("repulsive non-bonded", key)
        for key, p in priors.repulsive.items():
            reach = p.sigma if priors.repulsive_form == "r12" else 2.0 ** (1.0 / 6.0) * p.sigma
            if reach >= cutoff:
                raise ValueError(
                    f"repulsive prior {key}: its range {reach:.4g} nm (sigma {p.sigma:.4g} nm) reaches the cutoff "
                    f"{cutoff:g} nm; raise nonbonded_cutoff_nm"
                )
            if key[0] in unique and key[1] in unique:
                a, b = unique.index(key[0]), unique.index(key[1])
                sigma[a, b] = sigma[b, a] = p.sigma
                epsilon[a, b] = epsilon[b, a] = p.epsilon
        if priors.repulsive_form == "r12":
            expression = f"eps*((sig/r)^12 - (sig/{cutoff!r})^12)"
        else:
            expression = "step(rmin - r)*(4*eps*((sig/r)^12 - (sig/r)^6) + eps); rmin = 2^(1/6)*sig"
        expression += "; sig = sigma_ab(type1, type2); eps = epsilon_ab(type1, type2)"
        repulsion = openmm.CustomNonbondedForce(expression)
        repulsion.setName("cg_prior_repulsion")
        repulsion.addTabulatedFunction("sigma_ab", openmm.Discrete2DFunction(n_types, n_types, sigma.T.ravel().tolist()))
        repulsion.addTabulatedFunction(
            "epsilon_ab", openmm.Discrete2DFunction(n_types, n_types, epsilon.T.ravel().tolist())
        )
        repulsion.addPerParticleParameter("type")
        for c in codes.tolist():
            repulsion.addParticle([float(c)])
        for i, j in excluded_pairs(n_beads, bond_idx, priors.exclusion).tolist():
            repulsion.addExclusion(i, j)
        repulsion.setNonbondedMethod(
            openmm.CustomNonbondedForce.CutoffPeriodic if periodic else openmm.CustomNonbondedForce.CutoffNonPeriodic
        )
        repulsion.setCutoffDistance(cutoff)
        repulsion.setUseLongRangeCorrection(False)
        forces.append(repulsion)
    return forces
