"""BN recalibration: a subnet's own statistics, re-estimated before it is evaluated.

The supernet's running statistics mix every subnet trained; the paper resets them and
re-estimates them per subnet on ~2000 training images. Recalibration works on an exported
static copy, so no statistics leak back into the supernet or into other subnets. Two ways
(`data.bn_recal`): `exact`, PyTorch's own running update with a cumulative momentum (the
average of the batches' means and unbiased variances), and `authors`, the paper authors'
`set_running_statistics` (the average of the batches' means and *biased* variances), which an
imported supernet needs to reproduce their accuracies to the last digit.
"""

from __future__ import annotations

from typing import Iterable, Literal

import torch
from torch import nn

from ofa.device import module_device


BnRecal = Literal["exact", "authors"]


@torch.no_grad()
def recalibrate(model: nn.Module, inputs: Iterable[torch.Tensor], mode: BnRecal = "exact"
                ) -> nn.Module:
    """Reset every BN layer and re-estimate it as the average over all `inputs` images.

    Each batch is weighted by its size, so a short last batch does not skew the statistics.
    The forward passes normalise with each batch's own statistics in both modes.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    sums = {id(m): [0.0, 0.0] for m in norms}   # authors: weighted sums of batch mean, var
    hooks = [m.register_forward_pre_hook(_accumulate(sums[id(m)])) for m in norms] \
        if mode == "authors" else []
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    device = module_device(model)
    model.train()
    try:
        seen = 0
        for x in inputs:
            n = int(x.shape[0])
            for m in norms:
                m.momentum = n / (seen + n)
            model(x.to(device, non_blocking=True))  # where the model is (ofa/device.py)
            seen += n
        if seen == 0:
            raise ValueError("BN recalibration needs at least one batch")
        for m in norms if hooks else []:
            mean, var = sums[id(m)]
            m.running_mean.copy_(mean / seen)
            m.running_var.copy_(var / seen)
    finally:
        for h in hooks:
            h.remove()
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.train(was_training)
    return model


def _accumulate(acc: list):
    """A BN pre-hook adding n x (batch mean, biased batch variance) of its input to `acc`, as
    the authors' `set_running_statistics` computes them (per channel over N, H, W)."""
    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims, keepdim=True)
        var = ((x - mean) * (x - mean)).mean(dim=dims)
        acc[0] = acc[0] + mean.flatten() * x.shape[0]
        acc[1] = acc[1] + var * x.shape[0]
    return hook
