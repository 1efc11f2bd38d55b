"""The Once-for-All MobileNetV3 supernet.

The active subnet is an argument of `forward`, never module state, so one supernet can run
different subnets in the same step (and under DDP) without switches to set and reset.
"""

from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from ofa.device import module_device
from ofa.nn.blocks import ElasticMBConv, norm_factory, static_block
from ofa.nn.ops import ACTIVATIONS, init_weights
from ofa.nn.static import StaticSubnet
from ofa.space import SearchSpace, SubnetConfig


class OFAMobileNetV3(nn.Module):
    """native_kernel=False trains with torch's ops only (ofa/nn/depthwise.py says what changes)."""

    def __init__(self, space: SearchSpace, native_kernel: bool = True) -> None:
        super().__init__()
        self.space = space
        c = space.cfg
        norm = norm_factory(c.bn_eps, c.bn_momentum)
        self.stem = Conv2dNormActivation(c.in_channels, c.stem.width, 3, c.stem.stride,
                                         norm_layer=norm, activation_layer=ACTIVATIONS[c.stem.act])
        fb = c.first_block
        self.first_block = static_block(c.stem.width, 3, c.stem.width, fb.width, fb.se, fb.act,
                                        fb.stride, norm)
        blocks, in_c = [], fb.width
        for stage in c.stages:
            for i in range(space.max_depth):
                blocks.append(ElasticMBConv(in_c, stage.width, stage.stride if i == 0 else 1,
                                            stage.act, stage.se, c.kernel_choices, c.expand_choices,
                                            c.bn_eps, c.bn_momentum, native_kernel))
                in_c = stage.width
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = Conv2dNormActivation(in_c, c.final_expand_width, 1, norm_layer=norm,
                                                 activation_layer=nn.Hardswish)
        self.classifier = nn.Sequential(
            nn.Linear(c.final_expand_width, c.feature_width, bias=c.feature_bias),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=c.dropout, inplace=True), nn.Linear(c.feature_width, c.num_classes))
        init_weights(self)

    def active_blocks(self, cfg: SubnetConfig) -> Iterator[tuple[ElasticMBConv, int, int]]:
        """The one place that maps a config onto blocks: (block, kernel, expand) in order."""
        for slot in self.space.active_slots(cfg):
            yield self.blocks[slot], cfg.ks[slot], cfg.e[slot]

    def forward(self, x: torch.Tensor, cfg: SubnetConfig) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for block, k, e in self.active_blocks(cfg):
            x = block(x, k, e)
        x = self.final_expand(x)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @torch.no_grad()
    def export(self, cfg: SubnetConfig) -> StaticSubnet:
        """A standalone copy of one subnet (transforms applied, channels sliced)."""
        self.space.validate(cfg)
        c = self.space.cfg
        norm = norm_factory(c.bn_eps, c.bn_momentum)
        layers = [copy.deepcopy(self.stem), copy.deepcopy(self.first_block)]
        layers += [blk.export(k, e, norm) for blk, k, e in self.active_blocks(cfg)]
        layers.append(copy.deepcopy(self.final_expand))
        net = StaticSubnet(nn.Sequential(*layers), copy.deepcopy(self.classifier), cfg,
                           c.in_channels)
        # the copied stem and head live where the supernet does, the new blocks on the CPU
        return net.to(module_device(self)).train(self.training)

    @torch.no_grad()
    def sort_channels(self, keep_expand: int | None = None) -> None:
        """Importance-sort every elastic block before a width phase (nested within the
        `keep_expand` width before a second one: `ElasticBlock.sort_channels`)."""
        for block in self.blocks:
            block.sort_channels(keep_expand)
