"""Fixed force-field charges as OpenMM's own electrostatics: a native ``NonbondedForce``.

The fixed-charge baseline of hybrid models: OpenMM computes E_Coulomb (PME, Ewald or a cluster's
plain sum, with the exclusions you choose), a network learns the rest by Δ-learning, and both run
together:

    base = fixed_charge_system(charges, masses, box=box, cutoff=1.0, exclusions=bonds)
    delta = delta_configurations(configs, base)          # E_ref − E_Coulomb, F_ref − F_Coulomb
    model, _, _ = fit_potential(delta, valid_delta, out, job)
    system = create_delta_system(base, model, types)     # E = E_Coulomb + E_ML

The force uses exactly the conventions of :class:`multiscale.electrostatics.Coulomb` (α and
grid from ``ewaldErrorTolerance``, excluded pairs removed in real and reciprocal space with the
nearest image), so the two agree to OpenMM's precision (tests/test_electrostatics.py).
Units: charges in e, distances in nm, masses in amu.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import openmm

from multiscale.electrostatics.coulomb import MAX_COULOMB_CUTOFF_NM, check_exclusions
from multiscale.openmm.assembly import ForceTerm, assemble_system

_METHODS = {"pme": openmm.NonbondedForce.PME, "ewald": openmm.NonbondedForce.Ewald, "direct": openmm.NonbondedForce.NoCutoff}


def coulomb_force(
    charges: Sequence[float],
    *,
    cutoff: float = 1.0,
    method: str = "pme",
    tolerance: float = 5e-4,
    exclusions: Optional[Sequence[Sequence[int]]] = None,
) -> openmm.NonbondedForce:
    """A ``NonbondedForce`` with these per-particle ``charges`` (e) and no Lennard-Jones.

    ``method``: "pme" or "ewald" (periodic; real-space ``cutoff`` nm, ``tolerance`` OpenMM's
    ewaldErrorTolerance) or "direct" (open boundaries, every pair). ``exclusions``: (i, j) pairs
    whose Coulomb interaction is removed (zero-charge exceptions, nearest image)."""
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(_METHODS)}")
    q = np.asarray(charges, dtype=float)
    if q.ndim != 1 or q.size == 0 or not np.isfinite(q).all():
        raise ValueError("charges must be a non-empty list of finite per-particle charges in e")
    if np.abs(q).max() > 10:
        raise ValueError(
            f"a charge of {np.abs(q).max():g} e is not a force-field partial charge; charges are in units of the "
            "elementary charge (e), not Coulomb or kJ/mol"
        )
    if not 0 < cutoff <= MAX_COULOMB_CUTOFF_NM:
        raise ValueError(f"cutoff must be a distance in nm (0 < cutoff <= {MAX_COULOMB_CUTOFF_NM}), got {cutoff!r}")
    force = openmm.NonbondedForce()
    for charge in q:
        force.addParticle(float(charge), 0.1, 0.0)
    for i, j in check_exclusions(exclusions, len(q)).tolist():
        force.addException(int(i), int(j), 0.0, 0.1, 0.0)
    force.setNonbondedMethod(_METHODS[method])
    if method != "direct":
        force.setCutoffDistance(float(cutoff))
        force.setEwaldErrorTolerance(float(tolerance))
        force.setExceptionsUsePeriodicBoundaryConditions(True)
    force.setUseDispersionCorrection(False)
    force.setName("multiscale fixed-charge Coulomb")
    return force


def fixed_charge_system(
    charges: Sequence[float],
    masses_amu: Sequence[float],
    *,
    box: Optional[np.ndarray] = None,
    cutoff: float = 1.0,
    tolerance: float = 5e-4,
    exclusions: Optional[Sequence[Sequence[int]]] = None,
    method: Optional[str] = None,
) -> openmm.System:
    """A System whose only force is the fixed-charge Coulomb term: the Δ-learning base of a
    fixed-charge hybrid model. Periodic (PME) when ``box`` (rows a, b, c, nm) is given, a
    cluster's direct sum otherwise (``method`` overrides)."""
    if len(masses_amu) != len(charges):
        raise ValueError(f"{len(charges)} charges but {len(masses_amu)} masses; pass one of each per particle")
    method = method or ("pme" if box is not None else "direct")
    if (box is None) != (method == "direct"):
        raise ValueError(f"method {method!r} and box={'None' if box is None else 'a cell'} disagree; PME/Ewald need a box")
    force = coulomb_force(charges, cutoff=cutoff, method=method, tolerance=tolerance, exclusions=exclusions)
    return assemble_system(list(masses_amu), box_nm=box, terms=[ForceTerm(force)], what="the fixed-charge System")
