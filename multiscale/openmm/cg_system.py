"""Coarse-grained OpenMM Systems, assembled from plain data: a :class:`~multiscale.cg.mapping.Mapping`
(bead masses, types, bonds), fitted :class:`~multiscale.cg.priors.Priors` and a bead network.

``build_cg_system`` returns the OpenMM System (bead masses, priors as native forces, the bead
network as an ML force, a periodic box) and its CG Topology. ``force_matching_set`` turns mapped
reference data into training targets F_mapped − F_prior. Long CG runs:
:mod:`multiscale.openmm.cg_simulation`.

Units: nm, ps, kJ/mol, K, amu.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import app, unit

from multiscale.cg.mapping import Mapping
from multiscale.cg.priors import Priors
from multiscale.data.configuration import Configuration
from multiscale.openmm.bridge import is_ml_force
from multiscale.openmm.assembly import Barostat, MLTerm, PressureRamp, PriorTerms, assemble_system
from multiscale.openmm.system import clone_system
from multiscale.openmm.topology import cg_topology


def build_cg_system(
    mapping: Mapping,
    priors: Optional[Priors],
    *,
    tabulated=None,
    model=None,
    box: Optional[np.ndarray] = None,
    nonbonded_cutoff_nm: float = 1.0,
    use_angles: Optional[bool] = None,
    use_dihedrals: Optional[bool] = None,
    backend: str = "torchforce",
    pressure_correction=None,
    barostat: Optional[Barostat] = None,
    adjustable_ramps: bool = False,
    tabulated_form: str = "tables",
) -> Tuple[openmm.System, app.Topology]:
    """The CG System (priors + optional ML bead potential + optional corrections) and the CG Topology.

    ``pressure_correction``: a :class:`~multiscale.openmm.pressure.PressureCorrection`, added on
    the intermolecular pairs of the mapping's chains. ``barostat``: a
    :class:`~multiscale.openmm.assembly.Barostat` for constant-pressure runs, or a
    :class:`~multiscale.openmm.assembly.MembraneBarostat` for a bilayer's area at a surface tension.

    ``box``: (3, 3) nm periodic cell (rows a, b, c), None for open boundaries.
    ``use_angles`` / ``use_dihedrals``: include angle / dihedral priors (default: whenever
    ``priors`` has any of that kind).

    ``tabulated``: a :class:`~multiscale.cg.tabulated.TabulatedModel` (the MS-CG family) added
    on the mapping's bonds, angles and dihedrals; ``priors`` may then be None (the tables alone,
    or the tables under the network). ``adjustable_ramps``: its intermolecular ramps times a
    global parameter a Context may change (:data:`multiscale.openmm.tabulated.INTERMOLECULAR_SCALE`).
    ``tabulated_form``: "tables" or "closed" (:data:`multiscale.openmm.tabulated.FORMS`).
    """
    topology = cg_topology(mapping)
    periodic = box is not None
    if periodic:
        box = np.asarray(box, dtype=float)
        if box.shape != (3, 3):
            raise ValueError(f"box must be (3, 3) nm, got shape {box.shape}")
        topology.setPeriodicBoxVectors([openmm.Vec3(*map(float, row)) for row in box] * unit.nanometer)
        if nonbonded_cutoff_nm >= 0.5 * min(np.linalg.norm(box, axis=1)):
            raise ValueError(
                f"nonbonded_cutoff_nm={nonbonded_cutoff_nm} is not below half the box; use a smaller cutoff or a larger system"
            )
    if priors is None and tabulated is None:
        raise ValueError("a CG System needs priors, a tabulated model or both")
    if use_angles is None:
        use_angles = bool(getattr(priors, "angles", None))
    if use_dihedrals is None:
        use_dihedrals = bool(getattr(priors, "dihedrals", None))
    terms: List[Any] = []
    if priors is not None:
        terms.append(PriorTerms(priors, mapping.bead_types, mapping.bead_bonds,
                                mapping.bead_angles if use_angles else [], mapping.bead_dihedrals if use_dihedrals else [],
                                nonbonded_cutoff_nm=nonbonded_cutoff_nm, periodic=periodic))
    if tabulated is not None:
        from multiscale.openmm.tabulated import TabulatedTerms

        if periodic and tabulated.cutoff_nm >= 0.5 * min(np.linalg.norm(box, axis=1)):
            raise ValueError(f"the tabulated pair cutoff {tabulated.cutoff_nm} nm is not below half the box")
        terms.append(TabulatedTerms(tabulated, mapping.bead_types, mapping.bead_bonds, mapping.bead_angles,
                                    mapping.bead_dihedrals if tabulated.dihedrals else [], periodic=periodic,
                                    adjustable_ramps=adjustable_ramps, form=tabulated_form))
    if model is not None:
        missing = sorted(set(mapping.bead_types) - set(model.type_names))
        if missing:
            raise ValueError(f"the bead network does not know bead type(s) {missing}; it was trained on {model.type_names}")
        # the box (if any) is set from the caller's cell
        terms.append(MLTerm(model, mapping.bead_types, periodic, backend=backend))
    if pressure_correction is not None:
        terms.append(PressureRamp(pressure_correction, mapping.chains))
    if barostat is not None:
        terms.append(barostat)
    system = assemble_system(mapping.bead_masses, box_nm=box, terms=terms, what="a bead")
    return system, topology


def prior_only_system(system: openmm.System) -> openmm.System:
    """A copy of a CG System without its ML force: the priors alone."""
    return clone_system(system, keep=lambda force: not is_ml_force(force))


def force_matching_set(
    positions: np.ndarray,
    forces: np.ndarray,
    bead_types: Sequence[str],
    prior_system: openmm.System,
    *,
    boxes: Optional[np.ndarray] = None,
    platform: str = "Reference",
) -> List[Configuration]:
    """Training targets for the bead network: mapped forces minus the priors' forces.

    ``positions`` (T, n, 3) nm and ``forces`` (T, n, 3) kJ/mol/nm are mapped CG data
    (``Mapping.map_positions`` / ``map_forces``); ``prior_system`` holds the priors only.
    """
    from multiscale.labels import OpenMMLabeller

    positions = np.asarray(positions, dtype=float)
    forces = np.asarray(forces, dtype=float)
    if positions.shape != forces.shape or positions.ndim != 3:
        raise ValueError(f"positions {positions.shape} and forces {forces.shape} must both be (frames, beads, 3)")
    configs = [
        Configuration(list(bead_types), positions[t], box=None if boxes is None else boxes[t], forces=forces[t])
        for t in range(positions.shape[0])
    ]
    priors = OpenMMLabeller(prior_system, platform=platform).label(configs).raise_on_failure()
    return [
        config.with_labels(forces=config.forces - prior.forces, energy=None, info={"target": "F_mapped - F_prior"})
        for config, prior in zip(configs, priors.configurations)
    ]
