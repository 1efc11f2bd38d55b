"""The exported subnet: a plain torchvision-ops network, plus parameter and MAC counts."""

from __future__ import annotations

import torch
from torch import nn

from ofa.device import module_device

from ofa.nn.ops import conv_macs
from ofa.space import SubnetConfig


class StaticSubnet(nn.Module):
    """features -> global pool -> classifier, the layout of torchvision's MobileNetV3."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential,
                 config: SubnetConfig, in_channels: int) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.config = config
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int, in_channels: int) -> int:
    """Multiply-accumulates of one image's forward pass (convs and linears; the paper's FLOPs)."""
    total = 0

    def hook(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += conv_macs(module, out)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        device = module_device(model)
        model(torch.zeros(1, in_channels, resolution, resolution, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
