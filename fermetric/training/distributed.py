"""Multi-process training under `torchrun --nproc_per_node=N fermetric train-...`.

torchrun sets RANK / LOCAL_RANK / WORLD_SIZE; fermetric then joins a process group (gloo on
CPU, NCCL on GPU), shards every epoch's batches across ranks (BatchLoader rank/world_size, which
also shards the m-per-class batches of the metric family), wraps the model in
DistributedDataParallel and the pml loss and miner in pml's distributed wrappers, so triplets
and pairs are mined across all processes' batches. Rank 0 alone writes the run directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun prepared (no-op in a single process)."""
    info = dist_info_from_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running statistics) across ranks.

    DDP broadcasts rank 0's buffers before each forward, but each rank then updates them from its
    own batch; averaging at the end of an epoch gives every rank the same model, with statistics
    from all ranks' data, before validation and checkpointing.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(world)
