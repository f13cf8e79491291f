"""Old import path: CG Systems and CG MD are OpenMM objects, so they live in
:mod:`multiscale.openmm.cg_system` (assembly, force-matching targets) and
:mod:`multiscale.openmm.cg_simulation` (resumable Langevin runs). Kept so that existing scripts
keep working."""

from multiscale.openmm.cg_simulation import CGInstabilityError, CGSimulation  # noqa: F401
from multiscale.openmm.cg_system import build_cg_system, force_matching_set, prior_only_system  # noqa: F401
