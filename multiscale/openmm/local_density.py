"""A local-density potential as an OpenMM force: U = Σ_i κ (ρ_i − ρ₀(type_i))² over the member
beads i, with ρ_i = Σ_{j member, j ≠ i} w(r_ij) their member neighbours counted with the smooth
weight of :func:`multiscale.cg.analysis.local_density.local_density_weight` (1 inside
``inner_nm``, a cos² taper to 0 at ``outer_nm``).

Why: a solvent-free CG bilayer whose pair tables reproduce the reference's structure has no
stable fluid at zero tension (README, "Lipid membranes"): it contracts into a gel or spreads
into a thin sheet. The water that held it is gone, and pair potentials cannot say how crowded a
bead's surroundings are. A two-sided spring on each tail bead's local density, with ρ₀ the
reference's mean per bead type, restores the area against contraction and against dilution
alike (a many-body term of the local-density family; Sanyal & Shell, J. Chem. Phys. 145,
034109 (2016)). OpenMM has no local-density force; a CustomGBForce computes the per-bead sum as
a computed value and the energy per bead from it, on every platform.

Units: nm, kJ/mol.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import openmm

#: the force's name in a System
LOCAL_DENSITY_FORCE = "cg_local_density"


def local_density_force(types: Sequence[str], rho0: Mapping[str, float], kappa_kj_mol: float, inner_nm: float,
                        outer_nm: float, periodic: bool = True) -> openmm.CustomGBForce:
    """The force over beads of ``types`` (one per particle); members are the beads whose type is a
    key of ``rho0`` (target neighbour count per type), ``kappa_kj_mol`` the spring (kJ/mol per
    neighbour²). Neighbours are counted among members only, without exclusions (a bead's own
    molecule counts, as in the reference's ρ₀), up to ``outer_nm`` (the force's cutoff)."""
    if not kappa_kj_mol > 0:
        raise ValueError(f"kappa_kj_mol must be > 0 (kJ/mol per neighbour squared), got {kappa_kj_mol!r}")
    if not 0.0 < inner_nm < outer_nm:
        raise ValueError(f"the local density needs 0 < inner_nm < outer_nm, got {inner_nm!r}, {outer_nm!r} (nm)")
    if outer_nm > 3.0:
        raise ValueError(f"outer_nm={outer_nm} is implausibly large; distances are in nm (1 nm = 10 Å)")
    unknown = sorted(set(rho0) - set(types))
    if unknown:
        raise ValueError(f"rho0 names bead types {unknown} that no bead has (types: {sorted(set(types))})")
    if sum(t in rho0 for t in types) < 2:
        raise ValueError("a local density needs at least 2 member beads")
    force = openmm.CustomGBForce()
    force.setName(LOCAL_DENSITY_FORCE)
    force.addPerParticleParameter("member")
    force.addPerParticleParameter("rho0")
    width = float(outer_nm) - float(inner_nm)
    taper = f"0.5*(1+cos({math.pi!r}*(r-{float(inner_nm)!r})/{width!r}))"
    force.addComputedValue("rho", f"member1*member2*select(step(r-{float(inner_nm)!r}), {taper}, 1)",
                           openmm.CustomGBForce.ParticlePairNoExclusions)
    force.addEnergyTerm(f"member*{float(kappa_kj_mol)!r}*(rho-rho0)^2", openmm.CustomGBForce.SingleParticle)
    for t in types:
        force.addParticle([1.0, float(rho0[t])] if t in rho0 else [0.0, 0.0])
    force.setNonbondedMethod(openmm.CustomGBForce.CutoffPeriodic if periodic else openmm.CustomGBForce.CutoffNonPeriodic)
    force.setCutoffDistance(float(outer_nm))
    return force
