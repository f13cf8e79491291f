"""Potential: the small contract every model family implements.

A potential maps particle positions (nm), type indices and an optional periodic box (rows a, b, c
in nm) to an energy in kJ/mol. Everything else in multiscale (the OpenMM bridge, the trainer,
ensembles, checkpoints) relies on this contract only:

* ``type_names`` (list of str), ``num_types``, ``cutoff`` (nm), ``config`` (a YamlConfig whose
  ``to_dict`` rebuilds the model), ``CONFIG_CLASS`` (that config's class);
* ``atomic_energies(positions, types, box=None)`` → (N,) kJ/mol, TorchScript-compatible;
* ``edge_energies(types, senders, receivers, vectors)`` → (N,) kJ/mol from a precomputed graph
  (``vectors[e] = r_sender − r_receiver`` + image shift, nm), the batched-training entry point;
* ``batch_outputs(graph)`` → ``{"energy": (B,)}`` (plus e.g. ``"charges"``) of a batch of
  configurations (a :class:`BatchGraph`); by default the per-configuration sum of
  ``edge_energies``; families with whole-configuration terms (Coulomb) override it;
* ``forward(positions, types, box=None)`` → total energy (here: the sum of atomic energies);
* ``dtype`` and ``device`` of its arithmetic (Python-side properties);
* ``type_indices(names)`` and ``compute(...)`` (energy, forces, virial, stress), implemented here
  once for every family.

Families register themselves in :mod:`multiscale.models.registry` (name, class, config class,
checkpoint tag), the one registry that checkpoints and training read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from multiscale.neighbors import check_box

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


@dataclass
class BatchGraph:
    """The model inputs of a batch of configurations (one disconnected graph), as training builds
    them: particles of configuration b have ``batch == b``; positions (N, 3) and boxes (B, 3, 3) in
    nm, already strained when the virial is wanted; ``vectors[e]`` = r_sender − r_receiver + image
    shift (nm) for the edges within the model's cutoff; ``periodic`` (B,) bool; ``total_charge``
    (B,) in e."""

    types: torch.Tensor
    senders: torch.Tensor
    receivers: torch.Tensor
    vectors: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    batch: torch.Tensor
    periodic: torch.Tensor
    total_charge: torch.Tensor

    @property
    def num_graphs(self) -> int:
        return int(self.boxes.shape[0])


class Potential(torch.nn.Module):
    """Base class of the model families (see the module docstring for the contract)."""

    __jit_unused_properties__ = ["config", "dtype", "device"]

    def forward(
        self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Total potential energy in kJ/mol (0-d tensor in the model's dtype)."""
        return self.atomic_energies(positions, types, box).sum()

    # ------------------------------------------------------------------ Python side
    @torch.jit.unused
    def outputs(
        self, positions: torch.Tensor, types: torch.Tensor, box: Optional[torch.Tensor] = None
    ) -> Dict[str, torch.Tensor]:
        """What :meth:`compute` evaluates once: ``{"energy": ...}`` plus any per-particle outputs
        a family adds (e.g. ``charges``); forces and stress are derived from the energy."""
        return {"energy": self.forward(positions, types, box)}

    @torch.jit.unused
    def batch_outputs(self, graph: BatchGraph) -> Dict[str, torch.Tensor]:
        """Per-configuration energies (B,) kJ/mol of a batch (the training entry point)."""
        atomic = self.edge_energies(graph.types, graph.senders, graph.receivers, graph.vectors)
        energy = atomic.new_zeros(graph.num_graphs).index_add(0, graph.batch, atomic)
        return {"energy": energy}

    @classmethod
    def build(cls, types: Sequence[str], cutoff: float, dtype: str = "float32", **options) -> "Potential":
        """A new model from the flat options a training job gives (``JobConfig.model``)."""
        return cls(list(types), cutoff, dtype=dtype, **options)

    @classmethod
    def check_options(cls, options: Dict[str, object], derived: Sequence[str]) -> None:
        """Refuse unknown or mistyped training options (``JobConfig.model``) before any work."""
        import dataclasses

        known = {f.name for f in dataclasses.fields(cls.CONFIG_CLASS)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown model option(s) {unknown}; known options are {sorted(known)}")
        bad = sorted(set(options) & set(derived))
        if bad:
            raise ValueError(f"model option(s) {bad} are derived from the training data; remove them from the config")
        # types come from the data later; a placeholder stands in
        cls.CONFIG_CLASS.from_dict({**options, "types": ["placeholder"]})

    @classmethod
    def options_from_data(cls, graphs: Sequence) -> Dict[str, object]:
        """Hyper-parameters a family derives from training graphs (the registry's ``derived``
        fields other than ``types``); none by default."""
        return {}

    @torch.jit.unused
    def initialise_from_data(self, graphs: Sequence) -> None:
        """Set data-dependent constants (e.g. descriptor standardisation) before training; nothing
        by default. The readout's per-type shift and scale are set by the trainer for every family."""

    @property
    def config(self):
        return self._config

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point dtype of the model's parameters and arithmetic."""
        return self.readout.shift.dtype

    @property
    def device(self) -> torch.device:
        return self.readout.shift.device

    @torch.jit.unused
    def type_indices(self, particle_types: Sequence[str]) -> torch.Tensor:
        """Map type names to indices; an unknown name raises a ValueError that names it."""
        index = {name: k for k, name in enumerate(self.type_names)}
        unknown = sorted({str(t) for t in particle_types if str(t) not in index})
        if unknown:
            raise ValueError(
                f"unknown particle type(s) {unknown}; this model knows {self.type_names}. "
                "Map the particles onto the model's types or train a model that includes them."
            )
        return torch.tensor([index[str(t)] for t in particle_types], dtype=torch.long)

    @torch.jit.unused
    def compute(
        self,
        positions: ArrayLike,
        types: Union[Sequence[str], torch.Tensor],
        box: Optional[ArrayLike] = None,
        *,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> Dict[str, torch.Tensor]:
        """Energy (kJ/mol), forces (kJ/mol/nm) and optionally virial (kJ/mol) and stress (kJ/mol/nm³).

        ``virial = -∂E/∂ε`` and ``stress = (1/V) ∂E/∂ε`` for a symmetric strain ε applied to both
        positions and cell; stress needs a periodic ``box``.
        """
        dtype = self.dtype
        device = self.device
        # Positions and box stay in float64 up to the model, which wraps them into the cell before
        # casting to its dtype: far from the origin a float32 cast first would lose the relative
        # positions. Returned tensors are in the model's dtype.
        pos = torch.as_tensor(np.asarray(positions) if not isinstance(positions, torch.Tensor) else positions)
        if not pos.is_floating_point():
            raise ValueError(f"positions must be floating-point coordinates in nm, got {pos.dtype}")
        work = torch.float64
        pos = pos.to(device=device, dtype=work)
        if isinstance(types, torch.Tensor):
            if types.is_floating_point() or types.is_complex() or types.dtype == torch.bool:
                raise ValueError("types must be type names or an integer tensor of type indices, got a " + str(types.dtype) + " tensor")
            type_idx = types.to(device=device, dtype=torch.long)
        else:
            type_idx = self.type_indices(list(types)).to(device)
        if pos.dim() != 2 or pos.shape[1] != 3:
            raise ValueError(f"positions must have shape (N, 3) in nm, got {tuple(pos.shape)}")
        cell = None
        if box is not None:
            cell = torch.as_tensor(np.asarray(box) if not isinstance(box, torch.Tensor) else box).to(device=device, dtype=work)
            check_box(cell)
        if stress and cell is None:
            raise ValueError("stress needs a periodic box; pass box=(3, 3) cell vectors in nm")

        pos = pos.detach().requires_grad_(forces)
        strain = None
        if stress:
            strain = torch.zeros(3, 3, dtype=work, device=device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(0, 1))
            eye = torch.eye(3, dtype=work, device=device)
            pos_in = pos @ (eye + sym)
            cell_in = cell @ (eye + sym)
        else:
            pos_in, cell_in = pos, cell
        out: Dict[str, torch.Tensor] = self.outputs(pos_in, type_idx, cell_in)
        energy = out["energy"]
        inputs = [t for t, want in ((pos, forces), (strain, stress)) if want]
        if inputs:
            grads = torch.autograd.grad(energy, inputs, create_graph=create_graph)
            k = 0
            if forces:
                out["forces"] = -grads[k].to(dtype)
                k += 1
            if stress:
                volume = torch.det(cell)
                out["virial"] = -grads[k].to(dtype)
                out["stress"] = (grads[k] / volume).to(dtype)
        if not create_graph:
            out = {key: value.detach() for key, value in out.items()}
        return out


