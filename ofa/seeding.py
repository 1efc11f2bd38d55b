"""Seeds derived from names, and seeded blocks that leave the caller's global RNG untouched.

Modules initialise their weights (and dropout draws its masks) from torch's global generator,
which has no per-call generator argument; every such use runs inside `torch_seed` so that
results never depend on what ran before and nothing after depends on us."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import torch


def derive_seed(*parts: object) -> int:
    """A stable 60-bit seed from a path of names and numbers (same on every machine and rank)."""
    return int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


@contextmanager
def torch_seed(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Global torch RNG seeded inside the block, restored after it (CPU, plus `device` if CUDA)."""
    dev = torch.device(device)
    cuda = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
