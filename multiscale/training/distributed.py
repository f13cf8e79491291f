"""Multi-process data-parallel training (``torchrun``): gloo on CPU, nccl on GPU.

Each process takes a share of every mini-batch and computes its part of the *global* batch mean
loss (each term divided by the weight sum over all processes); the gradients are then summed
with ``all_reduce`` before the optimiser step, so all processes keep identical weights (and
identical EMA weights), equal to single-process training up to summation order. We average gradients by hand
rather than wrapping the model in DistributedDataParallel: force training differentiates the
forces (a double backward through ``autograd.grad(create_graph=True)``), which DDP's gradient
hooks do not support.

This holds for any split of the batch, since the normalisation is global (tested).
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_environment(device: str = "cpu") -> bool:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR/PORT in the
    environment). Returns True when running with more than one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_world_size() > 1


def shard(items: Sequence[T]) -> Sequence[T]:
    """This process's share of a mini-batch (round-robin)."""
    if not is_distributed():
        return items
    return items[rank() :: world_size()]


def sum_gradients(parameters) -> None:
    """All-reduce (sum) every gradient. Each process's loss is its share of the global mean
    (see ``EnergyForceLoss(..., denominators=...)``), so the sum is the full-batch gradient."""
    if not is_distributed():
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (identity when not distributed)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
