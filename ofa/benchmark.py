"""Training throughput of the supernet against the exported static subnet, side by side.

All sides train on the same batches in alternating rounds; the figure reported is the median
over rounds, so a noisy shared machine affects them alike. The supernet runs twice: as training
runs it (the compiled depthwise weight-gradient kernel on CPU, ofa/nn/native.py) and with
torch's ops only, which isolates the cost of the dynamic ops from the kernel's gain.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ofa.config import Params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace, SubnetConfig


def _timed_steps(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def _train_step(forward: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer,
                x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        opt.step()
    return step


def benchmark_training(params: Params, supernet: OFAMobileNetV3 | None = None,
                       batch_size: int | None = None, steps: int = 5, rounds: int = 5,
                       configs: dict[str, SubnetConfig] | None = None) -> list[dict]:
    space = SearchSpace(params.space)
    net = supernet or OFAMobileNetV3(space)
    fmt = torch.channels_last if params.train.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train()
    torch_net = OFAMobileNetV3(space, native_kernel=False).to(memory_format=fmt).train()
    torch_net.load_state_dict(net.state_dict())
    bs = batch_size or params.train.batch_size
    configs = configs or {"max": space.max_config(), "min": space.min_config()}
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, cfg in configs.items():
        static = net.export(cfg).to(memory_format=fmt).train()
        x = torch.randn(bs, params.space.in_channels, cfg.r, cfg.r, generator=gen).to(memory_format=fmt)
        y = torch.randint(0, params.space.num_classes, (bs,), generator=gen)
        sides: dict[str, tuple[nn.Module, Callable[[], None]]] = {
            "supernet": (net, _train_step(lambda t: net(t, cfg), torch.optim.SGD(net.parameters(), lr=1e-4), x, y)),
            "supernet_torch": (torch_net, _train_step(lambda t: torch_net(t, cfg),
                                                      torch.optim.SGD(torch_net.parameters(), lr=1e-4), x, y)),
            "static": (static, _train_step(static, torch.optim.SGD(static.parameters(), lr=1e-4), x, y)),
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _, step in sides.values():
            _timed_steps(step, 2)  # warm-up
        for _ in range(rounds):
            for k, (_, step) in sides.items():
                times[k].append(_timed_steps(step, steps))
        ips = {k: steps * bs / statistics.median(v) for k, v in times.items()}
        rows.append({"subnet": name, "config": str(cfg), "batch_size": bs,
                     "supernet_img_s": ips["supernet"], "static_img_s": ips["static"],
                     "slowdown": ips["static"] / ips["supernet"],
                     "supernet_torch_ops_img_s": ips["supernet_torch"],
                     "slowdown_torch_ops": ips["static"] / ips["supernet_torch"]})
    return rows
