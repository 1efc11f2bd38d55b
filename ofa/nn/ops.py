"""Dynamic ops: layers that store the largest shape and run any smaller one by slicing.

Only the supernet uses these; exported subnets are plain torchvision modules.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ofa.nn.depthwise import depthwise_conv

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hswish": nn.Hardswish}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of divisor, never 10% below value: the MobileNet rule torchvision's
    blocks use (its `_make_divisible`, private API, so restated here; a test compares them)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def squeeze_channels(channels: int) -> int:
    """SE bottleneck width, the same rule torchvision's MobileNetV3 uses."""
    return make_divisible(channels // 4, 8)


class ElasticPointwise(nn.Module):
    """1x1 convolution whose input and output widths can shrink to a prefix."""

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return F.conv2d(x, self.weight[:out_channels, : x.shape[1]])


class ElasticDepthwise(nn.Module):
    """Depthwise conv storing only the largest kernel.

    A smaller kernel is the centre of the next larger one passed through a learned
    (k*k x k*k) matrix shared across channels, initialised to identity (paper, Sec. 3.3).
    native_kernel: train with the compiled weight-gradient kernel on CPU (depthwise.py).
    """

    def __init__(self, max_channels: int, kernel_choices: Sequence[int], stride: int,
                 native_kernel: bool = True) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernel_choices, reverse=True))
        self.stride, self.native_kernel = stride, native_kernel
        k = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.transforms = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for big, small in zip(self.kernels, self.kernels[1:])
        })

    def kernel_weight(self, kernel: int, channels: int) -> torch.Tensor:
        w = self.weight[:channels]
        for big, small in zip(self.kernels, self.kernels[1:]):
            if big <= kernel:
                break
            start = (big - small) // 2
            centre = w[:, :, start:start + small, start:start + small].reshape(channels, small * small)
            w = F.linear(centre, self.transforms[f"{big}to{small}"]).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        return depthwise_conv(x, self.kernel_weight(kernel, x.shape[1]), self.stride,
                              self.native_kernel)


class ElasticBatchNorm(nn.BatchNorm2d):
    """BatchNorm over a channel prefix; running statistics of the prefix are updated in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        use_batch = self.training or self.running_mean is None
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.momentum is None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c],
                            self.bias[:c], use_batch, momentum, self.eps)


class ElasticSE(nn.Module):
    """Squeeze-and-excitation matching torchvision's layout, sliced to the active width."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        sq = squeeze_channels(max_channels)
        self.fc1 = nn.Conv2d(max_channels, sq, 1)
        self.fc2 = nn.Conv2d(sq, max_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        sq = squeeze_channels(c)
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.relu(F.conv2d(s, self.fc1.weight[:sq, :c], self.fc1.bias[:sq]))
        s = F.hardsigmoid(F.conv2d(s, self.fc2.weight[:c, :sq], self.fc2.bias[:c]))
        return x * s


def init_weights(module: nn.Module) -> None:
    """torchvision MobileNetV3's initialisation for the fixed layers."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:  # the feature-mix layer has none with space.feature_bias off
                nn.init.zeros_(m.bias)


def conv_macs(module: nn.Conv2d | nn.Linear, out: torch.Tensor) -> int:
    """Multiply-accumulates of one conv/linear call, from its output shape."""
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features * math.prod(out.shape[:-1])
    k = module.kernel_size[0] * module.kernel_size[1]
    return out.numel() * (module.in_channels // module.groups) * k
