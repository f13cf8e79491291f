"""The OpenMM bridge: an EquivariantPotential as an OpenMM Force.

Two backends give the same energies and forces:

* ``"torchforce"`` (default): openmm-torch's ``TorchForce`` running the model compiled to
  TorchScript with ``e3nn.util.jit.script``. Runs inside the OpenMM platform (Reference, CPU,
  CUDA) with no Python in the MD loop.
* ``"pythonforce"``: OpenMM's built-in ``openmm.PythonForce`` calling the eager model. For models
  that cannot be scripted (TorchScript is deprecated upstream), and for environments where
  openmmtorch cannot load (e.g. a torch other than the one openmmtorch was built against).

Units at this boundary: positions in nm, energy in kJ/mol, forces in kJ/mol/nm.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch  # must precede openmmtorch (libnvrtc.so.12 is loaded by torch)
from e3nn.util.jit import compile_mode
from e3nn.util.jit import script as e3nn_script

import openmm
from openmm import unit

from multiscale.models.io import MODEL_FORMATS, model_from_state, model_state
from multiscale.models.potential import EquivariantPotential

BACKENDS = ("torchforce", "pythonforce")


@compile_mode("script")
class OpenMMAdapter(torch.nn.Module):
    """Adapts ``model(positions, types, box)`` to TorchForce's ``forward(positions, boxVectors)``.

    Holds the per-particle type indices and the optional particle subset as buffers. Whatever
    float dtype OpenMM passes in is cast to the model's dtype inside the model.
    """

    def __init__(
        self,
        model: EquivariantPotential,
        type_indices: torch.Tensor,
        particles: Optional[torch.Tensor],
        periodic: bool,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("types", type_indices.to(torch.long))
        self.use_subset = particles is not None
        subset = particles if particles is not None else torch.zeros(0, dtype=torch.long)
        self.register_buffer("particles", subset.to(torch.long))
        self.periodic = bool(periodic)

    def forward(self, positions: torch.Tensor, boxVectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        pos = positions
        if self.use_subset:
            pos = positions.index_select(0, self.particles)
        elif positions.shape[0] != self.types.shape[0]:
            raise ValueError(
                "particle-count mismatch: the System has "
                + str(positions.shape[0])
                + " particles but the ML force was built for "
                + str(self.types.shape[0])
                + "; pass one type per particle, or particles=[...] for a subset"
            )
        box: Optional[torch.Tensor] = None
        if self.periodic:
            if boxVectors is None:
                raise ValueError("periodic=True but OpenMM passed no box vectors")
            box = boxVectors
        return self.model(pos, self.types, box)


class PythonForceComputation:
    """The callable handed to ``openmm.PythonForce``: State → (energy kJ/mol, forces kJ/mol/nm).

    Pickles as the model's checkpoint dictionary (OpenMM may pickle the function), never as code.
    """

    def __init__(self, model: EquivariantPotential, type_indices: torch.Tensor, periodic: bool):
        self.model = model
        self.types = type_indices.to(torch.long)
        self.periodic = bool(periodic)

    def __call__(self, state: openmm.State):
        positions, box = state_positions_and_box(state, self.periodic)
        device = self.model.readout.shift.device
        out = self.model.compute(positions, self.types.to(device), box)
        return float(out["energy"]), out["forces"].to(torch.float64).cpu().numpy()

    def __reduce__(self):
        return (_rebuild_computation, (model_state(self.model), self.types.tolist(), self.periodic))


def _rebuild_computation(state: Dict, types: List[int], periodic: bool) -> PythonForceComputation:
    return PythonForceComputation(model_from_state(state), torch.tensor(types, dtype=torch.long), periodic)


def check_particle_selection(particle_types: Sequence[str], particles: Optional[Sequence[int]], what: str = "the ML force"):
    """Validate ``particle_types`` (one type name per particle) and the optional ``particles``
    subset (distinct, non-negative System indices, one per type). Returns them cleaned."""
    if isinstance(particle_types, str):
        raise TypeError("particle_types must be a list of type names, one per particle, not a single string")
    particle_types = [str(t) for t in particle_types]
    if not particle_types:
        raise ValueError(f"particle_types is empty; {what} must act on at least one particle")
    if particles is not None:
        particles = [int(p) for p in particles]
        if len(particles) != len(particle_types):
            raise ValueError(
                f"particle-count mismatch: {len(particles)} particles but {len(particle_types)} particle_types; "
                "give one type per particle in `particles`"
            )
        if len(set(particles)) != len(particles):
            raise ValueError("particles lists an index more than once; each particle may appear once")
        if min(particles) < 0:
            raise ValueError(f"particles contains a negative index ({min(particles)}); indices are 0-based System indices")
    return particle_types, particles


def state_positions_and_box(state: openmm.State, periodic: bool):
    """(positions (N, 3) nm, box (3, 3) nm or None) of an OpenMM State as numpy arrays."""
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    box = None
    if periodic:
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    return positions, box


def _validate(model, particle_types: Sequence[str], particles: Optional[Sequence[int]]) -> torch.Tensor:
    if not isinstance(model, tuple(MODEL_FORMATS.values())):
        raise TypeError(
            f"model must be a multiscale potential (EquivariantPotential or another registered model), "
            f"got {type(model).__name__}; load a checkpoint with multiscale.models.load_model(path)"
        )
    particle_types, particles = check_particle_selection(particle_types, particles)
    return model.type_indices(particle_types)


def _import_openmmtorch():
    """Import openmmtorch (after torch, as it requires), silencing the 'simtk.openmm is
    deprecated' message its own ``import simtk.openmm`` prints on every import."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import openmmtorch
    finally:
        logging.disable(previous)
    return openmmtorch


def torch_force(
    model: EquivariantPotential,
    particle_types: List[str],
    periodic: bool,
    particles: Optional[List[int]] = None,
    *,
    backend: str = "torchforce",
) -> openmm.Force:
    """An OpenMM Force computing ``model``'s energy and forces.

    Parameters
    ----------
    model: the potential (its dtype is kept; OpenMM's float32/float64 positions are cast).
    particle_types: type name of each particle the force acts on (all System particles, or the
        ones in ``particles``, in that order). An unknown name raises ValueError naming it.
    periodic: use the Context's periodic box vectors (nm). The System must then be periodic.
    particles: optional System indices of the subset the force acts on (ML/MM); None → all.
    backend: "torchforce" (openmm-torch TorchForce, TorchScript) or "pythonforce"
        (OpenMM's PythonForce calling the eager model). Both give the same energies and forces.

    Returns an ``openmmtorch.TorchForce`` or ``openmm.PythonForce``; add it with
    ``system.addForce(force)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    type_indices = _validate(model, particle_types, particles)
    # Work on a rebuilt copy: e3nn's script() compiles submodules in place, and a force must not
    # change when the caller goes on training or editing its model. (deepcopy cannot copy
    # e3nn's compiled functions; the checkpoint round trip can.)
    model = model_from_state(model_state(model)).eval()
    if backend == "pythonforce":
        computation = PythonForceComputation(model, type_indices, periodic)
        force = openmm.PythonForce(computation, {}, [] if particles is None else list(map(int, particles)))
        force.setUsesPeriodicBoundaryConditions(bool(periodic))
        force.setName("multiscale ML potential (PythonForce)")
        return force

    openmmtorch = _import_openmmtorch()
    subset = None if particles is None else torch.tensor([int(p) for p in particles], dtype=torch.long)
    module = e3nn_script(OpenMMAdapter(model, type_indices, subset, periodic)).to("cpu")
    force = openmmtorch.TorchForce(module)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    force.setName("multiscale ML potential (TorchForce)")
    return force
