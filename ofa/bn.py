"""BN recalibration: a subnet's own statistics, re-estimated before it is evaluated.

The supernet's running statistics mix every subnet trained; the paper resets them and
re-estimates them per subnet on ~2000 training images. Recalibration works on an exported
static copy, so no statistics leak back into the supernet or into other subnets.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Reset every BN layer and re-estimate it as the exact average over all `inputs` images.

    Each batch is weighted by its size (momentum n / (seen + n)), so a short last batch does
    not skew the statistics.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    try:
        seen = 0
        for x in inputs:
            n = int(x.shape[0])
            for m in norms:
                m.momentum = n / (seen + n)
            model(x)
            seen += n
        if seen == 0:
            raise ValueError("BN recalibration needs at least one batch")
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.train(was_training)
    return model
