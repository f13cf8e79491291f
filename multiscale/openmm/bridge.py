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

from multiscale.models.base import Potential
from multiscale.models.io import model_from_state, model_state
from multiscale.models.potential import EquivariantPotential

BACKENDS = ("torchforce", "pythonforce")


#: OpenMM's periodic box when none was set (System and Topology default): a 2 nm cube.
OPENMM_DEFAULT_BOX_NM = 2.0


@compile_mode("script")
class OpenMMAdapter(torch.nn.Module):
    """Adapts ``model(positions, types, box)`` to TorchForce's ``forward(positions, boxVectors)``.

    Holds the per-particle type indices and the optional particle subset as buffers. Whatever
    float dtype OpenMM passes in is cast to the model's dtype inside the model (after wrapping
    the positions into the cell in float64).
    """

    def __init__(
        self,
        model: EquivariantPotential,
        type_indices: torch.Tensor,
        particles: Optional[torch.Tensor],
        periodic: bool,
        allow_default_box: bool = False,
    ):
        super().__init__()
        self.model = model
        self.register_buffer("types", type_indices.to(torch.long))
        self.use_subset = particles is not None
        subset = particles if particles is not None else torch.zeros(0, dtype=torch.long)
        self.register_buffer("particles", subset.to(torch.long))
        self.highest_particle: int = int(subset.max()) if subset.numel() > 0 else -1
        self.periodic = bool(periodic)
        self.allow_default_box = bool(allow_default_box)

    def forward(self, positions: torch.Tensor, boxVectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        pos = select_particles(positions, self.types.shape[0], self.particles, self.use_subset, self.highest_particle)
        box: Optional[torch.Tensor] = None
        if self.periodic:
            if boxVectors is None:
                raise ValueError("periodic=True but OpenMM passed no box vectors")
            check_box_was_set(boxVectors, self.allow_default_box)
            box = boxVectors
        return self.model(pos, self.types, box)


def select_particles(
    positions: torch.Tensor, num_types: int, particles: torch.Tensor, use_subset: bool, highest_particle: int
) -> torch.Tensor:
    """The positions of the particles the ML force acts on, after checking them against the
    System's particle count (TorchScript-compatible; shared by both backends)."""
    if use_subset:
        if highest_particle >= positions.shape[0]:
            raise ValueError(
                "the ML force's particles include index "
                + str(highest_particle)
                + " but the System has only "
                + str(positions.shape[0])
                + " particles (0.."
                + str(positions.shape[0] - 1)
                + "); pass System indices in particles=[...]"
            )
        return positions.index_select(0, particles)
    if positions.shape[0] != num_types:
        raise ValueError(
            "particle-count mismatch: the System has "
            + str(positions.shape[0])
            + " particles but the ML force was built for "
            + str(num_types)
            + "; pass one type per particle, or particles=[...] for a subset"
        )
    return positions


def check_box_was_set(box: torch.Tensor, allow_default_box: bool, default_edge_nm: float = 2.0) -> None:
    """Refuse OpenMM's never-set default box (an exact 2 nm cube) for a periodic ML force.

    OpenMM gives every System a 2 nm cubic box until one is set, so a periodic force added to a
    System whose box was forgotten would silently see that cube. A model built for an exact 2 nm
    cube says so with ``allow_default_box=True``."""
    if allow_default_box:
        return
    default = torch.eye(3, dtype=box.dtype, device=box.device) * default_edge_nm  # OPENMM_DEFAULT_BOX_NM
    if bool(torch.equal(box, default)):
        raise ValueError(
            "the periodic box is OpenMM's default 2 nm cube, which means it was never set: call "
            "system.setDefaultPeriodicBoxVectors(a, b, c) (or context.setPeriodicBoxVectors) with the real "
            "cell in nm, e.g. from topology.getPeriodicBoxVectors(). If the cell really is an exact 2 nm "
            "cube, build the force with torch_force(..., allow_default_box=True)"
        )


class PythonForceComputation:
    """The callable handed to ``openmm.PythonForce``: State → (energy kJ/mol, forces kJ/mol/nm).

    It receives every particle of the System (not OpenMM's particle subset, whose indices OpenMM
    does not check against the System: an index past the end reads memory that was never set) and
    selects and checks the subset itself, exactly as the TorchForce adapter does.

    Pickles as the model's checkpoint dictionary (OpenMM may pickle the function), never as code.
    """

    def __init__(
        self,
        model: EquivariantPotential,
        type_indices: torch.Tensor,
        periodic: bool,
        particles: Optional[Sequence[int]] = None,
        allow_default_box: bool = False,
    ):
        self.model = model
        self.types = type_indices.to(torch.long)
        self.periodic = bool(periodic)
        self.particles = None if particles is None else [int(p) for p in particles]
        self._subset = torch.tensor(self.particles if self.particles is not None else [], dtype=torch.long)
        self.allow_default_box = bool(allow_default_box)

    def __call__(self, state: openmm.State):
        positions, box = state_positions_and_box(state, self.periodic)
        all_positions = torch.from_numpy(positions)
        highest = max(self.particles) if self.particles else -1
        pos = select_particles(all_positions, int(self.types.shape[0]), self._subset, self.particles is not None, highest)
        if box is not None:
            check_box_was_set(torch.from_numpy(box), self.allow_default_box)
        device = next(self.model.parameters()).device  # a Potential or an ensemble of them
        out = self.model.compute(pos, self.types.to(device), box)
        forces = out["forces"].to(torch.float64).cpu().numpy()
        if self.particles is None:
            return float(out["energy"]), forces
        full = np.zeros_like(positions)
        full[self.particles] = forces
        return float(out["energy"]), full

    def __reduce__(self):
        return (
            _rebuild_computation,
            (model_state(self.model), self.types.tolist(), self.periodic, self.particles, self.allow_default_box),
        )


def _rebuild_computation(
    state: Dict, types: List[int], periodic: bool, particles: Optional[List[int]] = None, allow_default_box: bool = False
) -> PythonForceComputation:
    return PythonForceComputation(model_from_state(state), torch.tensor(types, dtype=torch.long), periodic, particles, allow_default_box)


def check_particle_selection(particle_types: Sequence[str], particles: Optional[Sequence[int]], what: str = "the ML force"):
    """Validate ``particle_types`` (one type name per particle) and the optional ``particles``
    subset (distinct, non-negative System indices, one per type). Returns them cleaned."""
    if isinstance(particle_types, str):
        raise TypeError("particle_types must be a list of type names, one per particle, not a single string")
    particle_types = [str(t) for t in particle_types]
    if not particle_types:
        raise ValueError(f"particle_types is empty; {what} must act on at least one particle")
    if particles is not None:
        if isinstance(particles, (str, bytes)) or not hasattr(particles, "__len__"):
            raise TypeError(f"particles must be a list of System particle indices, got {particles!r}")
        particles = [_particle_index(p) for p in particles]
        if len(particles) != len(particle_types):
            raise ValueError(
                f"particle-count mismatch: {len(particles)} particles but {len(particle_types)} particle_types; "
                "give one type per particle in `particles`"
            )
        repeated = sorted({p for p in particles if particles.count(p) > 1})
        if repeated:
            raise ValueError(f"particles lists index(es) {repeated} more than once; each particle may appear once")
        if min(particles) < 0:
            raise ValueError(f"particles contains a negative index ({min(particles)}); indices are 0-based System indices")
    return particle_types, particles


def _particle_index(value) -> int:
    """A particle index as an int; refuses 1.5, "3" and True instead of truncating or converting them."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point() and value.dtype != torch.bool:
            return int(value)
        raise TypeError(f"particle indices must be integers (0-based System indices), got {value!r} ({type(value).__name__})")
    return int(value)


def check_system_particles(system: openmm.System, particles: Optional[Sequence[int]], count: int, what: str = "the ML force") -> None:
    """Check a particle selection (or, without one, ``count`` types) against ``system``'s size."""
    n = system.getNumParticles()
    if particles is None and count != n:
        raise ValueError(
            f"particle-count mismatch: {count} particle_types for a System of {n} particles; "
            f"pass one type per particle, or particles=[...] to act on a subset"
        )
    if particles is not None and particles and max(particles) >= n:
        raise ValueError(f"{what}'s particles include index {max(particles)} but the System has {n} particles (0..{n - 1})")


def state_positions_and_box(state: openmm.State, periodic: bool):
    """(positions (N, 3) nm, box (3, 3) nm or None) of an OpenMM State as numpy arrays."""
    positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    box = None
    if periodic:
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
    return positions, box


def _import_openmmtorch():
    """Import openmmtorch (after torch, as it requires), silencing the 'simtk.openmm is
    deprecated' message its own ``import simtk.openmm`` prints on every import.

    If ``openmm`` was imported before torch, OpenMM tried to load openmm-torch's platform plugins
    at that import, when libtorch (libnvrtc, libc10, ...) was not loaded yet, and recorded them as
    failures: every Context with a TorchForce then fails with "does not support all required
    kernels". Those plugins are loaded again here, now that torch is loaded, so the import order
    does not matter."""
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        import openmmtorch
    finally:
        logging.disable(previous)
    _reload_torch_plugins()
    return openmmtorch


_RELOADED_PLUGINS: set = set()


def _reload_torch_plugins() -> None:
    import re

    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (\S*OpenMMTorch\S*\.(?:so|dylib|dll)): (.*)", failure)
        if not match or match.group(1) in _RELOADED_PLUGINS:
            continue
        path, reason = match.groups()
        # only failures caused by torch's own libraries not being loaded yet; a CUDA or OpenCL
        # plugin that failed for want of a driver fails again and stays unloaded
        if not any(lib in reason for lib in ("libnvrtc", "libtorch", "libc10", "libcudart")):
            continue
        _RELOADED_PLUGINS.add(path)
        try:
            openmm.Platform.loadPluginLibrary(path)
        except Exception:  # noqa: BLE001  (a plugin that still cannot load stays as OpenMM left it)
            pass


def torch_force(
    model: EquivariantPotential,
    particle_types: List[str],
    periodic: bool,
    particles: Optional[List[int]] = None,
    *,
    backend: str = "torchforce",
    system: Optional[openmm.System] = None,
    allow_default_box: bool = False,
) -> openmm.Force:
    """An OpenMM Force computing ``model``'s energy and forces.

    Parameters
    ----------
    model: the potential (its dtype is kept; OpenMM's float32/float64 positions are wrapped into
        the cell in their own precision, then cast).
    particle_types: type name of each particle the force acts on (all System particles, or the
        ones in ``particles``, in that order). An unknown name raises ValueError naming it.
    periodic: use the Context's periodic box vectors (nm). The System must then be periodic, and
        its box must have been set: OpenMM's never-set default (an exact 2 nm cube) is refused
        when the force is evaluated, unless ``allow_default_box=True``.
    particles: optional System indices of the subset the force acts on (ML/MM); None → all.
        Integers, distinct, non-negative; checked against the System's size when the force is
        evaluated (both backends), and here already when ``system`` is given.
    backend: "torchforce" (openmm-torch TorchForce, TorchScript) or "pythonforce"
        (OpenMM's PythonForce calling the eager model). Both give the same energies and forces.
    system: optional System the force is meant for: checks the particle count and the indices,
        and (for ``periodic=True``) that its default box is not OpenMM's never-set 2 nm cube,
        before any Context is created.

    Returns an ``openmmtorch.TorchForce`` or ``openmm.PythonForce`` in force group
    :data:`ML_FORCE_GROUP`, named with the :data:`ML_FORCE_TAG` that :func:`is_ml_force`
    recognises; add it with ``system.addForce(force)``.
    """
    if not isinstance(model, Potential):
        raise TypeError(
            f"model must be a multiscale potential (EquivariantPotential or another registered family), "
            f"got {type(model).__name__}; load a checkpoint with multiscale.models.load_model(path)"
            + ("; for an ensemble use multiscale.openmm.ensemble_force" if type(model).__name__ == "EnsemblePotential" else "")
        )
    # Work on a rebuilt copy: e3nn's script() compiles submodules in place, and a force must not
    # change when the caller goes on training or editing its model. (deepcopy cannot copy
    # e3nn's compiled functions; the checkpoint round trip can.)
    return deploy(
        model, particle_types, periodic, particles, backend=backend, system=system, allow_default_box=allow_default_box,
        copy=lambda m: model_from_state(model_state(m)).eval(), computation_class=PythonForceComputation,
        description="potential",
    )


#: force group of every ML force the bridge makes (``getState(groups={ML_FORCE_GROUP})`` reads
#: the ML energy alone; priors and force-field terms stay in group 0)
ML_FORCE_GROUP = 1
#: the first word of every ML force's name: how an ML force read back from a System is recognised
ML_FORCE_TAG = "multiscale-ml"


def is_ml_force(force: openmm.Force) -> bool:
    """True for a force made by the bridge (``torch_force``, ``ensemble_force``): by its tag."""
    return force.getName().startswith(ML_FORCE_TAG)


def deploy(
    model: torch.nn.Module,
    particle_types: Sequence[str],
    periodic: bool,
    particles: Optional[Sequence[int]],
    *,
    backend: str,
    system: Optional[openmm.System],
    allow_default_box: bool,
    copy,
    computation_class,
    description: str,
) -> openmm.Force:
    """The one deployment path of ML forces: checks, TorchForce or PythonForce, name, group.

    ``model`` has ``type_indices`` and ``compute`` and a TorchScript-able ``forward(positions,
    types, box)``; ``copy(model)`` gives the CPU copy that is scripted or called (never the
    caller's own modules); ``computation_class`` is the PythonForce callable (it decides how the
    model pickles)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if not isinstance(periodic, (bool, np.bool_)):
        raise TypeError(f"periodic must be True or False, got {periodic!r}")
    particle_types, particles = check_particle_selection(particle_types, particles, f"the ML {description} force")
    type_indices = model.type_indices(particle_types)
    if system is not None:
        check_system_particles(system, particles, len(type_indices))
        if periodic and not allow_default_box:
            box = np.asarray([list(v.value_in_unit(unit.nanometer)) for v in system.getDefaultPeriodicBoxVectors()])
            check_box_was_set(torch.from_numpy(box), False)
    module = copy(model)
    if backend == "pythonforce":
        force = openmm.PythonForce(computation_class(module, type_indices, periodic, particles, allow_default_box), {})
    else:
        openmmtorch = _import_openmmtorch()
        subset = None if particles is None else torch.tensor(particles, dtype=torch.long)
        scripted = e3nn_script(OpenMMAdapter(module, type_indices, subset, periodic, allow_default_box)).to("cpu")
        force = openmmtorch.TorchForce(scripted)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    label = {"torchforce": "TorchForce", "pythonforce": "PythonForce"}[backend]
    force.setName(f"{ML_FORCE_TAG} {description} ({label})")
    force.setForceGroup(ML_FORCE_GROUP)
    return force
