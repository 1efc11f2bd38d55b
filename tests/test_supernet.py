"""Every elastic dimension, export equivalence, and function-preserving channel sorting."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ofa.nn import ops
from ofa.nn.static import count_macs, count_params
from ofa.space import SubnetConfig

EXPORT_CONFIGS = 24


def _x(cfg: SubnetConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, cfg.r, cfg.r, generator=torch.Generator().manual_seed(seed))


def test_only_the_largest_kernel_is_stored(supernet):
    dw = supernet.blocks[0].depthwise
    assert dw.weight.shape[-2:] == (7, 7)
    assert {k: tuple(v.shape) for k, v in dw.transforms.items()} == {"7to5": (25, 25), "5to3": (9, 9)}


def test_small_kernels_are_transformed_centres(space):
    from ofa.nn.supernet import OFAMobileNetV3

    dw = OFAMobileNetV3(space).blocks[0].depthwise  # identity transforms at init
    c = dw.weight.shape[0]
    torch.testing.assert_close(dw.kernel_weight(5, c), dw.weight[:, :, 1:6, 1:6])
    torch.testing.assert_close(dw.kernel_weight(3, c), dw.weight[:, :, 2:5, 2:5])
    with torch.no_grad():
        dw.transforms["7to5"].add_(0.1)
    assert not torch.allclose(dw.kernel_weight(3, c), dw.weight[:, :, 2:5, 2:5])
    assert torch.equal(dw.kernel_weight(7, c), dw.weight)


def test_depth_runs_the_first_blocks_only(supernet, space):
    supernet.eval()
    cfg = SubnetConfig(space.max_config().ks, space.max_config().e, (3, 2, 4, 4), 28)
    x = _x(cfg)
    with torch.no_grad():
        ref = supernet(x, cfg)
        supernet.blocks[3].project.weight.mul_(3)       # stage 0, 4th block: skipped
        supernet.blocks[space.max_depth + 2].project.weight.mul_(3)  # stage 1, 3rd: skipped
        torch.testing.assert_close(supernet(x, cfg), ref)
        supernet.blocks[2].project.weight.mul_(3)       # stage 0, 3rd block: active
        assert not torch.allclose(supernet(x, cfg), ref)


def test_skipped_blocks_get_no_gradient(supernet, space):
    cfg = space.min_config()
    supernet(_x(cfg), cfg).sum().backward()
    active = set(space.active_slots(cfg))
    for i, block in enumerate(supernet.blocks):
        has_grad = block.project.weight.grad is not None
        assert has_grad == (i in active), i


def test_width_uses_the_first_channels(supernet, space):
    supernet.eval()
    cfg = space.uniform(5, 3, 4, 28)
    x = _x(cfg)
    with torch.no_grad():
        ref = supernet(x, cfg)
        for block in supernet.blocks:
            mid = block.mid_channels(3)
            block.expand.weight[mid:].mul_(5)
            block.depthwise.weight[mid:].mul_(5)
        torch.testing.assert_close(supernet(x, cfg), ref)
        supernet.blocks[0].expand.weight[: supernet.blocks[0].mid_channels(3)].mul_(5)
        assert not torch.allclose(supernet(x, cfg), ref)


def test_every_resolution_runs(supernet, space, params):
    for r in params.space.resolutions:
        cfg = space.max_config(r)
        assert supernet(_x(cfg), cfg).shape == (2, params.space.num_classes)


@pytest.mark.parametrize("seed", range(EXPORT_CONFIGS))
def test_export_matches_supernet(supernet, space, seed):
    cfg = space.sample(random.Random(seed))
    supernet.eval()
    static = supernet.export(cfg).eval()
    x = _x(cfg, n=3, seed=seed)
    with torch.no_grad():
        torch.testing.assert_close(static(x), supernet(x, cfg))


def test_export_is_built_from_torchvision_ops(supernet, space):
    cfg = space.max_config()
    static = supernet.export(cfg)
    kinds = {type(m) for m in static.modules()}
    assert {InvertedResidual, Conv2dNormActivation, SqueezeExcitation} <= kinds
    elastic = (ops.ElasticPointwise, ops.ElasticDepthwise, ops.ElasticBatchNorm, ops.ElasticSE)
    assert not any(isinstance(m, elastic) for m in static.modules())
    assert sum(isinstance(m, InvertedResidual) for m in static.modules()) == 1 + space.n_slots


def test_export_counts_params_and_macs(supernet, space):
    small, big = supernet.export(space.min_config()), supernet.export(space.max_config())
    assert count_params(big) == sum(p.numel() for p in big.parameters())
    assert count_params(small) < count_params(big)
    macs_small = count_macs(small, space.min_config().r, 1)
    assert 0 < macs_small < count_macs(big, space.max_config().r, 1)
    # resolution only changes MACs, not parameters
    assert count_macs(big, 20, 1) < count_macs(big, 32, 1)


def test_export_refuses_configs_outside_the_space(supernet, space):
    from ofa.errors import OFAError

    cfg = space.max_config()
    with pytest.raises(OFAError, match="kernel size 9"):
        supernet.export(SubnetConfig((9,) * space.n_slots, cfg.e, cfg.d, cfg.r))


def test_sorting_channels_keeps_the_function(supernet, space):
    supernet.eval()
    x = _x(space.max_config(28), n=4)
    with torch.no_grad():
        before = supernet(x, space.max_config(28))
        supernet.sort_channels()
        torch.testing.assert_close(supernet(x, space.max_config(28)), before, rtol=1e-4, atol=1e-4)
    for block in supernet.blocks:
        importance = block.project.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:])
