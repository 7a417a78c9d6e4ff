"""Multi-process runs with torch.distributed, launched by `torchrun` (and SLURM through it).

`torchrun --nproc_per_node N -m core.cli decompose CONFIG` sets RANK / WORLD_SIZE / LOCAL_RANK; the
engine then joins the process group (NCCL on GPUs, Gloo on CPU), trains with DistributedDataParallel,
splits every global batch across the ranks (each rank keeps a mixed-task, task-sorted share),
scores a share of the validation and test cases on each rank and gathers the results (`shared_map`: in case
order, so the numbers are those of one process), and lets only rank 0 write the run folder. Without these variables
every helper here is a no-op and the run is a plain single process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> Dist:
    """The process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: torch.device) -> Dist:
    """Join the process group of a torchrun launch (idempotent); returns SINGLE otherwise."""
    info = from_env()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return info


def device_for(name: str, info: Dist) -> str:
    """`auto`/`cuda` become this process's own GPU (cuda:LOCAL_RANK) under torchrun."""
    if info.enabled and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return name


def barrier(info: Dist) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: Dist, device: torch.device) -> list[float]:
    """Element-wise sum over the ranks (one small collective)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any, info: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shared_map(fn: Callable[[int], T], count: int, info: Dist) -> list[T]:
    """`[fn(0), ..., fn(count - 1)]`, the items split across the ranks (rank r computes items r, r + world_size,
    ...) and gathered on every rank in item order: the list one process computing them all gets (each item is
    computed alone, so the split changes no number). Every rank must call it with the same `count`."""
    if not info.enabled:
        return [fn(i) for i in range(count)]
    mine = {i: fn(i) for i in range(info.rank, count, info.world_size)}
    out: list[Any] = [None] * count
    for share in gather_objects(mine, info):
        for i, value in share.items():
            out[i] = value
    return out


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
