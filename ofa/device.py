"""Where a process computes: `train.device` (auto | cpu | cuda) resolved once, in one place.

Training, BN recalibration and torch evaluation passes run where the model is (inputs are
moved to it); ONNX Runtime passes and every exported artifact stay on the CPU, since the
shipped subnets are built for the device registry's targets, not for the training machine.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ofa.errors import OFAError

DevicePref = Literal["auto", "cpu", "cuda"]


def resolve_device(pref: DevicePref, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU where CUDA is available, else the CPU. `cuda` without a GPU
    (or without one for this local rank) is refused in one line naming the key."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if pref == "cpu" or (pref == "auto" and have == 0):
        return torch.device("cpu")
    if have == 0:
        raise OFAError("params: train.device: cuda, but no CUDA GPU is available here "
                       "(use auto or cpu)")
    if local_rank >= have:
        raise OFAError(f"params: train.device: local rank {local_rank} has no GPU of its own "
                       f"({have} here); set train.processes to at most {have}")
    return torch.device("cuda", local_rank)


def local_workers(processes: int, pref: DevicePref) -> int:
    """Local data-parallel workers for `train.processes`: on CUDA one per GPU at most (NCCL
    gives each rank a GPU of its own), on the CPU as many as asked."""
    device = resolve_device(pref)
    if device.type == "cuda":
        return max(1, min(processes, torch.cuda.device_count()))
    return processes


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for an empty module)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def eval_device(pref: DevicePref, backend: str) -> torch.device:
    """Where evaluation passes run: ONNX Runtime's on the CPU, torch's on `train.device`."""
    return torch.device("cpu") if backend == "onnxruntime" else resolve_device(pref)
