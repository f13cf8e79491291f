"""An ensemble of potentials as one OpenMM Force: the ensemble-mean energy and forces.

The deployment (checks, TorchForce or PythonForce, name, force group) is the bridge's own
(:func:`multiscale.openmm.bridge.deploy`); this module only says how an ensemble is copied and
pickled. The spread between members is not part of the Force: watch it with
:class:`multiscale.openmm.reporters.EnsembleUncertaintyReporter`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import openmm
import torch

from multiscale.models.ensemble import EnsemblePotential
from multiscale.models.io import model_from_state, model_state
from multiscale.openmm.bridge import BACKENDS, PythonForceComputation, deploy

#: backends of :func:`ensemble_force` (those of the single-model bridge)
ENSEMBLE_BACKENDS = BACKENDS


class EnsembleForceComputation(PythonForceComputation):
    """The ``openmm.PythonForce`` callable of an ensemble: State → (mean energy kJ/mol, mean forces
    kJ/mol/nm), with the bridge's particle selection and checks. Pickles as the members'
    checkpoint dictionaries (``model_state``), never as code."""

    def __reduce__(self):
        states = [model_state(member) for member in self.model.members]
        return (_rebuild, (states, self.types.tolist(), self.periodic, self.particles, self.allow_default_box))


def _rebuild(states: List[Dict], types: List[int], periodic: bool, particles=None, allow_default_box=False):
    ensemble = EnsemblePotential([model_from_state(state) for state in states])
    return EnsembleForceComputation(ensemble, torch.tensor(types, dtype=torch.long), periodic, particles, allow_default_box)


def _copy(ensemble: EnsemblePotential) -> EnsemblePotential:
    # e3nn's script() compiles in place and deepcopy cannot copy e3nn modules: rebuild the members
    # from their checkpoint dictionaries, so the caller's ensemble (modules, device) stays untouched
    return EnsemblePotential([model_from_state(model_state(m), map_location="cpu").eval() for m in ensemble.members]).eval()


def ensemble_force(
    ensemble: EnsemblePotential,
    particle_types: Sequence[str],
    periodic: bool,
    particles: Optional[Sequence[int]] = None,
    backend: str = "torchforce",
    *,
    system: Optional[openmm.System] = None,
    allow_default_box: bool = False,
) -> openmm.Force:
    """An OpenMM Force whose energy is the ensemble-mean energy (kJ/mol) and whose forces are the
    ensemble-mean forces (kJ/mol/nm).

    Parameters are those of :func:`multiscale.openmm.torch_force`: ``particle_types`` one type name
    per particle the force acts on (all System particles, or those in ``particles``), ``periodic``,
    ``particles`` (checked against the System when the force runs, or at once with ``system``),
    ``backend`` "torchforce" (the scripted ensemble, members evaluated in a loop) or
    "pythonforce" (the eager ensemble), ``allow_default_box`` (accept an exact 2 nm cubic box).
    """
    if not isinstance(ensemble, EnsemblePotential):
        raise TypeError(
            f"ensemble_force expects an EnsemblePotential, got {type(ensemble).__name__}; for a single model use "
            "multiscale.openmm.torch_force, or wrap it: EnsemblePotential([model])"
        )
    return deploy(
        ensemble, particle_types, periodic, particles, backend=backend, system=system, allow_default_box=allow_default_box,
        # The PythonForce backend calls the caller's own (eager) ensemble, as it always has; only
        # TorchScript needs a copy to compile
        copy=_copy if backend == "torchforce" else (lambda held: held.eval()),
        computation_class=EnsembleForceComputation,
        description=f"ensemble mean of {ensemble.num_members} members",
    )
