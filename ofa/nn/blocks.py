"""The elastic inverted-bottleneck block: run any (kernel, expand) choice, export it, sort it."""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig

from ofa.nn.ops import (ACTIVATIONS, ElasticBatchNorm, ElasticDepthwise, ElasticPointwise,
                        ElasticSE, make_divisible, squeeze_channels)


def norm_factory(eps: float, momentum: float) -> Callable[..., nn.BatchNorm2d]:
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


def static_block(in_c: int, kernel: int, mid: int, out_c: int, se: bool, act: str, stride: int,
                 norm: Callable[..., nn.Module]) -> InvertedResidual:
    """torchvision's MobileNetV3 block for one fixed choice (what exported subnets are made of)."""
    cnf = InvertedResidualConfig(in_c, kernel, mid, out_c, se, "HS" if act == "hswish" else "RE",
                                 stride, 1, 1.0)
    return InvertedResidual(cnf, norm)


class ElasticMBConv(nn.Module):
    """expand 1x1 -> depthwise kxk -> [SE] -> project 1x1, with elastic kernel and width."""

    def __init__(self, in_c: int, out_c: int, stride: int, act: str, se: bool,
                 kernel_choices: Sequence[int], expand_choices: Sequence[int],
                 eps: float, momentum: float, native_kernel: bool = True) -> None:
        super().__init__()
        self.in_c, self.out_c, self.stride, self.act_name = in_c, out_c, stride, act
        self.residual = stride == 1 and in_c == out_c
        max_mid = self.mid_channels(max(expand_choices))
        bn = partial(ElasticBatchNorm, eps=eps, momentum=momentum)
        self.expand = ElasticPointwise(in_c, max_mid)
        self.expand_bn = bn(max_mid)
        self.depthwise = ElasticDepthwise(max_mid, kernel_choices, stride, native_kernel)
        self.depthwise_bn = bn(max_mid)
        self.se = ElasticSE(max_mid) if se else None
        self.project = ElasticPointwise(max_mid, out_c)
        self.project_bn = bn(out_c)
        self.act = ACTIVATIONS[act](inplace=True)

    def mid_channels(self, expand: int) -> int:
        return make_divisible(round(self.in_c * expand), 8)

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        h = self.act(self.expand_bn(self.expand(x, self.mid_channels(expand))))
        h = self.act(self.depthwise_bn(self.depthwise(h, kernel)))
        if self.se is not None:
            h = self.se(h)
        h = self.project_bn(self.project(h, self.out_c))
        return x + h if self.residual else h

    @torch.no_grad()
    def export(self, kernel: int, expand: int, norm: Callable[..., nn.Module]) -> InvertedResidual:
        """A torchvision block computing exactly what forward(kernel, expand) computes."""
        mid = self.mid_channels(expand)
        blk = static_block(self.in_c, kernel, mid, self.out_c, self.se is not None, self.act_name,
                           self.stride, norm)
        layers = list(blk.block)
        _copy_conv_bn(layers[0], self.expand.weight[:mid, :], self.expand_bn, mid)
        _copy_conv_bn(layers[1], self.depthwise.kernel_weight(kernel, mid), self.depthwise_bn, mid)
        if self.se is not None:
            se = layers[2]
            sq = se.fc1.out_channels
            se.fc1.weight.copy_(self.se.fc1.weight[:sq, :mid])
            se.fc1.bias.copy_(self.se.fc1.bias[:sq])
            se.fc2.weight.copy_(self.se.fc2.weight[:mid, :sq])
            se.fc2.bias.copy_(self.se.fc2.bias[:mid])
        _copy_conv_bn(layers[-1], self.project.weight[:, :mid], self.project_bn, self.out_c)
        return blk

    @torch.no_grad()
    def sort_channels(self, keep_expand: int | None = None) -> None:
        """Reorder middle channels by importance (L1 of the projection weights), keeping the
        block's function: every layer touching the middle channels is permuted alike.

        With `keep_expand` (the paper authors' nested re-sort before a second width phase) the
        channels of that narrower width keep their set and reorder only among themselves, as
        do the rest: what the previous phase trained as a subnet's width stays one."""
        mid = self.project.weight.shape[1]
        keep = mid if keep_expand is None else self.mid_channels(keep_expand)
        order = _nested_order(self.project.weight.abs().sum(dim=(0, 2, 3)), keep)
        self.expand.weight.copy_(self.expand.weight[order])
        _permute_bn(self.expand_bn, order)
        self.depthwise.weight.copy_(self.depthwise.weight[order])
        _permute_bn(self.depthwise_bn, order)
        if self.se is not None:
            se = self.se
            se.fc1.weight.copy_(se.fc1.weight[:, order])
            se.fc2.weight.copy_(se.fc2.weight[order])
            se.fc2.bias.copy_(se.fc2.bias[order])
            sq_keep = se.fc1.weight.shape[0] if keep_expand is None else squeeze_channels(keep)
            sq_order = _nested_order(se.fc2.weight.abs().sum(dim=(0, 2, 3)), sq_keep)
            se.fc1.weight.copy_(se.fc1.weight[sq_order])
            se.fc1.bias.copy_(se.fc1.bias[sq_order])
            se.fc2.weight.copy_(se.fc2.weight[:, sq_order])
        self.project.weight.copy_(self.project.weight[:, order])


def _nested_order(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Channels by descending importance, the first `keep` and the rest sorted apart."""
    head = torch.argsort(importance[:keep], descending=True)
    tail = keep + torch.argsort(importance[keep:], descending=True)
    return torch.cat([head, tail])


def _copy_conv_bn(layer: nn.Sequential, weight: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> None:
    conv, norm = layer[0], layer[1]
    conv.weight.copy_(weight)
    norm.weight.copy_(bn.weight[:c])
    norm.bias.copy_(bn.bias[:c])
    norm.running_mean.copy_(bn.running_mean[:c])
    norm.running_var.copy_(bn.running_var[:c])
    norm.num_batches_tracked.copy_(bn.num_batches_tracked)


def _permute_bn(bn: nn.BatchNorm2d, order: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[order])
