"""Process-group set-up for multi-GPU (or multi-process CPU) training.

``rest2visual train`` run under ``torchrun --nproc_per_node N`` finds
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in its environment and joins a process
group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU (the
tests use it). Without those variables it is a single process and nothing
is initialised, so the same code path serves the demo, one GPU and many.
:class:`EpochSampler` gives each rank its share of every global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistContext:
    """Where this process trains: its ``rank`` of ``world_size`` and its ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes checkpoints and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    preference = str(preference)
    if preference not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be auto, cpu or cuda, got {preference!r}")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use device: auto or cpu")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def setup_distributed(device_preference: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one; return this process's context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over all ranks (returns a new tensor; identity on one process)."""
    out = values.clone()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


class EpochSampler(DistributedSampler):
    """This rank's share of an epoch: full global batches of a seed+epoch permutation.

    Rank r takes every world_size-th index, so step s of all ranks together
    covers exactly the samples of step s of one process with the global batch.
    ``skip_batches`` drops the first batches of the epoch (resume mid-epoch).
    """

    def __init__(self, dataset, *, batch_size: int, ctx: DistContext, seed: int):
        super().__init__(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                         seed=seed, drop_last=True)
        self.batch_size = batch_size
        self.steps_per_epoch = len(dataset) // (batch_size * ctx.world_size)
        self.skip_batches = 0

    def __iter__(self):
        indices = list(super().__iter__())[: self.steps_per_epoch * self.batch_size]
        return iter(indices[self.skip_batches * self.batch_size:])

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.skip_batches) * self.batch_size
