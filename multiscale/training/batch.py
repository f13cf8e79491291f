"""Batched graphs for training: precompute each configuration's neighbour list once, then
concatenate configurations into one disconnected graph per mini-batch.

Energies are per configuration (sum of per-particle energies over each graph), forces are
−∂E/∂r by autograd, and virials −∂E/∂ε by a per-configuration symmetric strain, exactly as in
:meth:`EquivariantPotential.compute` (tested to agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from multiscale.data.configuration import Configuration
from multiscale.models.base import BatchGraph
from multiscale.models.potential import check_separation, wrap_positions
from multiscale.neighbors import NeighborList


@dataclass
class Graph:
    """One configuration with its neighbour list (indices and integer cell shifts)."""

    types: torch.Tensor  # (N,) int64 type indices
    positions: torch.Tensor  # (N, 3) float64, nm
    box: torch.Tensor  # (3, 3) float64, nm (zeros when open)
    periodic: bool
    senders: torch.Tensor  # (E,) int64
    receivers: torch.Tensor  # (E,) int64
    shifts: torch.Tensor  # (E, 3) float64 cell shifts (integers)
    energy: Optional[float]
    forces: Optional[torch.Tensor]
    virial: Optional[torch.Tensor]
    weight: float = 1.0
    total_charge: float = 0.0
    charges: Optional[torch.Tensor] = None  # (N,) e
    dipole: Optional[torch.Tensor] = None  # (3,) e·nm, open boundaries

    @property
    def num_particles(self) -> int:
        return int(self.types.shape[0])


def build_graphs(
    configs: Sequence[Configuration], type_names: Sequence[str], cutoff: float, *, weights: Optional[Sequence[float]] = None
) -> List[Graph]:
    """Neighbour lists of every configuration within ``cutoff`` nm (computed once, reused)."""
    index = {t: k for k, t in enumerate(type_names)}
    nl = NeighborList(cutoff)
    graphs = []
    for k, config in enumerate(configs):
        unknown = sorted(set(config.types) - set(index))
        if unknown:
            raise ValueError(f"configuration {k} has type(s) {unknown} that the model does not know ({list(type_names)})")
        pos = torch.tensor(config.positions, dtype=torch.float64)
        box = torch.tensor(config.box, dtype=torch.float64) if config.periodic else None
        if box is not None:
            # into the cell in float64, before batches are cast to the model's dtype
            pos = wrap_positions(pos, box)
        i, j, shifts = nl.pairs(pos, box)
        vectors = pos.index_select(0, j) - pos.index_select(0, i)
        if box is not None:
            vectors = vectors + shifts @ box
        try:
            check_separation(j, i, vectors)
        except ValueError as err:
            raise ValueError(f"configuration {k}{_source(config)}: {err}") from None
        graphs.append(
            Graph(
                types=torch.tensor([index[t] for t in config.types], dtype=torch.long),
                positions=pos,
                box=box if box is not None else torch.zeros(3, 3, dtype=torch.float64),
                periodic=config.periodic,
                senders=j,
                receivers=i,
                shifts=shifts,
                energy=config.energy,
                forces=None if config.forces is None else torch.tensor(config.forces, dtype=torch.float64),
                virial=None if config.virial is None else torch.tensor(config.virial, dtype=torch.float64),
                weight=1.0 if weights is None else float(weights[k]),
                total_charge=float(config.total_charge),
                charges=None if config.charges is None else torch.tensor(config.charges, dtype=torch.float64),
                dipole=None if config.dipole is None else torch.tensor(config.dipole, dtype=torch.float64),
            )
        )
    return graphs


def _source(config: Configuration) -> str:
    """`` (from FILE, frame F)`` where the configuration's info records it."""
    where = [f"{key} {config.info[key]}" for key in ("source", "file", "frame") if key in config.info]
    return f" ({', '.join(where)})" if where else ""


@dataclass
class Batch:
    """Concatenation of graphs; ``batch[a]`` is the configuration index of particle a."""

    types: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor  # (B, 3, 3)
    batch: torch.Tensor  # (N,)
    senders: torch.Tensor
    receivers: torch.Tensor
    shifts: torch.Tensor
    edge_batch: torch.Tensor  # (E,)
    num_particles: torch.Tensor  # (B,)
    energy: torch.Tensor  # (B,), NaN where missing
    has_energy: torch.Tensor  # (B,) bool
    forces: torch.Tensor  # (N, 3), zeros where missing
    has_forces: torch.Tensor  # (N,) bool
    virial: torch.Tensor  # (B, 3, 3)
    has_virial: torch.Tensor  # (B,) bool
    weights: torch.Tensor  # (B,) per-configuration loss weights
    periodic: torch.Tensor  # (B,) bool
    total_charge: torch.Tensor  # (B,) e
    charges: torch.Tensor  # (N,) e, zeros where missing
    has_charges: torch.Tensor  # (N,) bool
    dipole: torch.Tensor  # (B, 3) e·nm, zeros where missing
    has_dipole: torch.Tensor  # (B,) bool

    @property
    def num_graphs(self) -> int:
        return int(self.boxes.shape[0])


def collate(graphs: Sequence[Graph], device="cpu", dtype=torch.float32) -> Batch:
    """One disconnected graph from many; particle indices are offset per configuration."""
    offsets = np.cumsum([0] + [g.num_particles for g in graphs[:-1]])
    cat = torch.cat
    batch = Batch(
        types=cat([g.types for g in graphs]),
        positions=cat([g.positions for g in graphs]),
        boxes=torch.stack([g.box for g in graphs]),
        batch=cat([torch.full((g.num_particles,), k, dtype=torch.long) for k, g in enumerate(graphs)]),
        senders=cat([g.senders + int(o) for g, o in zip(graphs, offsets)]),
        receivers=cat([g.receivers + int(o) for g, o in zip(graphs, offsets)]),
        shifts=cat([g.shifts for g in graphs]),
        edge_batch=cat([torch.full((g.senders.shape[0],), k, dtype=torch.long) for k, g in enumerate(graphs)]),
        num_particles=torch.tensor([g.num_particles for g in graphs], dtype=torch.long),
        energy=torch.tensor([np.nan if g.energy is None else g.energy for g in graphs], dtype=torch.float64),
        has_energy=torch.tensor([g.energy is not None for g in graphs]),
        forces=cat([g.forces if g.forces is not None else torch.zeros(g.num_particles, 3, dtype=torch.float64) for g in graphs]),
        has_forces=cat([torch.full((g.num_particles,), g.forces is not None) for g in graphs]),
        virial=torch.stack([g.virial if g.virial is not None else torch.zeros(3, 3, dtype=torch.float64) for g in graphs]),
        has_virial=torch.tensor([g.virial is not None for g in graphs]),
        weights=torch.tensor([g.weight for g in graphs], dtype=torch.float64),
        periodic=torch.tensor([g.periodic for g in graphs]),
        total_charge=torch.tensor([g.total_charge for g in graphs], dtype=torch.float64),
        charges=cat([g.charges if g.charges is not None else torch.zeros(g.num_particles, dtype=torch.float64) for g in graphs]),
        has_charges=cat([torch.full((g.num_particles,), g.charges is not None) for g in graphs]),
        dipole=torch.stack([g.dipole if g.dipole is not None else torch.zeros(3, dtype=torch.float64) for g in graphs]),
        has_dipole=torch.tensor([g.dipole is not None for g in graphs]),
    )
    for name, value in vars(batch).items():
        if value.is_floating_point():
            value = value.to(dtype)
        setattr(batch, name, value.to(device))
    return batch


def predict(
    model, batch: Batch, *, forces: bool = True, virial: bool = False, create_graph: bool = False
) -> Dict[str, torch.Tensor]:
    """Energies (B,) kJ/mol, forces (N, 3) kJ/mol/nm and virials (B, 3, 3) kJ/mol of a batch; for
    models that predict charges also ``charges`` (N,) e and ``dipole`` (B, 3) e·nm, Σ qᵢ rᵢ per
    configuration (meaningful for open boundaries)."""
    pos = batch.positions.detach().requires_grad_(forces)
    boxes = batch.boxes
    inputs = [pos] if forces else []
    strain = None
    if virial:
        strain = torch.zeros_like(boxes, requires_grad=True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        pos_in = pos + torch.bmm(pos.unsqueeze(1), sym.index_select(0, batch.batch)).squeeze(1)
        boxes_in = boxes + torch.bmm(boxes, sym)
        inputs.append(strain)
    else:
        pos_in, boxes_in = pos, boxes
    cell = boxes_in.index_select(0, batch.edge_batch)
    vectors = (
        pos_in.index_select(0, batch.senders)
        - pos_in.index_select(0, batch.receivers)
        + torch.bmm(batch.shifts.unsqueeze(1), cell).squeeze(1)
    )
    graph = BatchGraph(batch.types, batch.senders, batch.receivers, vectors, pos_in, boxes_in, batch.batch,
                       batch.periodic, batch.total_charge)
    out = dict(model.batch_outputs(graph))
    energy = out["energy"]
    if "charges" in out:
        q = out["charges"]
        out["dipole"] = q.new_zeros(batch.num_graphs, 3).index_add(0, batch.batch, q.unsqueeze(1) * pos_in.to(q.dtype))
    if inputs:
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
        if forces:
            out["forces"] = -grads[0]
        if virial:
            out["virial"] = -grads[-1]
    return out
