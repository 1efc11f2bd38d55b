"""torchrun support: the process group and the few collective helpers training needs."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from ofa.device import DevicePref, resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(pref: DevicePref = "auto") -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on GPU); else single
    process. `pref` is `train.device` (ofa/device.py)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = resolve_device(pref, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return DistContext(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(int(os.environ["RANK"]), world, device)


def barrier(ctx: DistContext) -> None:
    if ctx.world > 1:
        dist.barrier()


def all_sum(values: list[float], ctx: DistContext) -> list[float]:
    if ctx.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def set_threads(threads: int) -> None:
    """Intra-op threads from params (0 keeps torch's default, which honours OMP_NUM_THREADS).

    `threads` is what the machine gives a job: the N workers of one machine (torchrun's or
    `train.processes`) share it, max(1, threads // N) each."""
    if threads > 0:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, threads // local))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch intra-op threads for a block, restored afterwards (no lasting global change)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def average_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Make BN running statistics identical on every rank (their mean) at epoch ends."""
    if ctx.world == 1:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(ctx.world)
        else:
            dist.broadcast(buf, 0)
