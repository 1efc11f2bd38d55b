"""Every elastic dimension, export equivalence, and function-preserving channel sorting."""

from __future__ import annotations

import random

import pytest
import torch
from torchvision.models.mobilenetv3 import InvertedResidual
from torchvision.ops import Conv2dNormActivation, SqueezeExcitation

from ofa.errors import OFAError
from ofa.nn import ops
from ofa.nn.static import count_macs, count_params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace, SubnetConfig

EXPORT_SEEDS = range(24)
SEEDS = range(4)


def _x(cfg: SubnetConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, cfg.r, cfg.r, generator=torch.Generator().manual_seed(seed))


def _sample(space: SearchSpace, seed: int) -> SubnetConfig:
    """A random subnet whose stage `seed % n_stages` runs the minimum depth and whose first block
    runs a width below the maximum (so every elastic dimension is exercised)."""
    cfg = space.sample(random.Random(1000 + seed))
    d = list(cfg.d)
    d[seed % space.n_stages] = min(space.cfg.depth_choices)
    e = list(cfg.e)
    e[0] = min(space.cfg.expand_choices)
    return SubnetConfig(cfg.ks, tuple(e), tuple(d), cfg.r)


# -- elastic kernel ----------------------------------------------------------------------------
def test_only_the_largest_kernel_is_stored(supernet, space):
    for i, block in enumerate(supernet.blocks):
        dw = block.depthwise
        assert dw.weight.shape == (block.mid_channels(6), 1, 7, 7), i
        assert {k: tuple(v.shape) for k, v in dw.transforms.items()} == {"7to5": (25, 25),
                                                                         "5to3": (9, 9)}
        kernel_params = [n for n, _ in dw.named_parameters()]
        assert sorted(kernel_params) == ["transforms.5to3", "transforms.7to5", "weight"]


@pytest.mark.parametrize("slot", [0, 5, 15])
def test_small_kernels_are_transformed_centres(space, slot):
    torch.manual_seed(slot)
    dw = OFAMobileNetV3(space).blocks[slot].depthwise  # identity transforms at init
    c = dw.weight.shape[0]
    assert torch.equal(dw.kernel_weight(7, c), dw.weight)
    torch.testing.assert_close(dw.kernel_weight(5, c), dw.weight[:, :, 1:6, 1:6])
    torch.testing.assert_close(dw.kernel_weight(3, c), dw.weight[:, :, 2:5, 2:5])
    torch.testing.assert_close(dw.kernel_weight(3, 8), dw.weight[:8, :, 2:5, 2:5])
    with torch.no_grad():
        dw.transforms["7to5"].add_(0.05 * torch.randn(25, 25))
    assert not torch.allclose(dw.kernel_weight(5, c), dw.weight[:, :, 1:6, 1:6])
    assert not torch.allclose(dw.kernel_weight(3, c), dw.weight[:, :, 2:5, 2:5])
    # the 3x3 kernel is the transformed centre of the (transformed) 5x5 kernel
    w5 = dw.kernel_weight(5, c)
    expect3 = (w5[:, :, 1:4, 1:4].reshape(c, 9) @ dw.transforms["5to3"].T).reshape(c, 1, 3, 3)
    torch.testing.assert_close(dw.kernel_weight(3, c), expect3)
    assert torch.equal(dw.kernel_weight(7, c), dw.weight)


# -- elastic depth ---------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_depth_runs_the_first_blocks_only(supernet, space, seed):
    supernet.eval()
    cfg = _sample(space, seed)
    stage = seed % space.n_stages
    active = set(space.active_slots(cfg))
    x = _x(cfg, seed=seed)
    with torch.no_grad():
        ref = supernet(x, cfg)
        # the skipped slots' genes do not matter
        assert torch.equal(supernet(x, space.canonical(cfg)), ref)
        for i, block in enumerate(supernet.blocks):
            if i not in active:
                for t in list(block.parameters()) + [block.expand_bn.running_mean]:
                    t.mul_(-3).add_(0.5)
        torch.testing.assert_close(supernet(x, cfg), ref, rtol=0, atol=0)
        last = stage * space.max_depth + cfg.d[stage] - 1  # the stage's last active block
        supernet.blocks[last].project.weight.mul_(3)
        assert not torch.allclose(supernet(x, cfg), ref)


@pytest.mark.parametrize("seed", SEEDS)
def test_skipped_blocks_get_no_gradient(supernet, space, seed):
    cfg = _sample(space, seed)
    supernet.train()
    supernet(_x(cfg, seed=seed), cfg).square().sum().backward()
    active = set(space.active_slots(cfg))
    for i, block in enumerate(supernet.blocks):
        if i not in active:
            assert all(p.grad is None for p in block.parameters()), i
            continue
        for p in (block.expand.weight, block.depthwise.weight, block.project.weight):
            assert p.grad is not None and p.grad.abs().sum() > 0, i
        # a kernel transform is trained only by the subnets whose kernel passes through it
        k = cfg.ks[i]
        assert (block.depthwise.transforms["7to5"].grad is not None) == (k < 7), i
        assert (block.depthwise.transforms["5to3"].grad is not None) == (k < 5), i


# -- elastic width ---------------------------------------------------------------------------
def _perturb_beyond(block, mid: int) -> None:
    """Scramble everything a block holds for middle channels mid and beyond."""
    for t in (block.expand.weight[mid:], block.depthwise.weight[mid:],
              block.project.weight[:, mid:]):
        t.mul_(-4).add_(0.3)
    for bn in (block.expand_bn, block.depthwise_bn):
        for t in (bn.weight, bn.bias, bn.running_mean):
            t[mid:].add_(1.7)
    if block.se is not None:
        block.se.fc1.weight[:, mid:].mul_(5)
        block.se.fc1.weight[ops.squeeze_channels(mid):].mul_(5)
        block.se.fc1.bias[ops.squeeze_channels(mid):].add_(1)
        block.se.fc2.weight[mid:].mul_(5)
        block.se.fc2.bias[mid:].add_(1)


@pytest.mark.parametrize("seed", SEEDS)
def test_width_uses_the_first_channels(supernet, space, seed):
    supernet.eval()
    cfg = _sample(space, seed)
    x = _x(cfg, seed=seed)
    with torch.no_grad():
        ref = supernet(x, cfg)
        for block, _, e in supernet.active_blocks(cfg):
            _perturb_beyond(block, block.mid_channels(e))
        torch.testing.assert_close(supernet(x, cfg), ref, rtol=0, atol=0)
        first = supernet.blocks[0]  # runs the smallest expand ratio (see _sample)
        assert first.mid_channels(cfg.e[0]) < first.expand.weight.shape[0]
        first.expand.weight[first.mid_channels(cfg.e[0]) - 1].mul_(5)
        assert not torch.allclose(supernet(x, cfg), ref)


def test_expand_ratio_sets_the_middle_width(supernet, space):
    block = supernet.blocks[0]
    in_c = space.cfg.first_block.width
    seen = []
    handle = block.depthwise.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        for e in space.cfg.expand_choices:
            cfg = space.uniform(3, e, 2, 20)
            supernet(_x(cfg), cfg)
    handle.remove()
    assert seen == [in_c * e for e in space.cfg.expand_choices]


# -- elastic resolution ----------------------------------------------------------------------
def test_every_resolution_runs(supernet, space, params):
    supernet.eval()
    with torch.no_grad():
        for r in params.space.resolutions:
            for cfg in (space.max_config(r), space.min_config(r)):
                out = supernet(_x(cfg), cfg)
                assert out.shape == (2, params.space.num_classes) and torch.isfinite(out).all()


# -- export ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", EXPORT_SEEDS)
def test_export_matches_supernet(supernet, space, seed):
    cfg = space.sample(random.Random(seed))
    supernet.eval()
    static = supernet.export(cfg).eval()
    assert static.config == cfg
    x = _x(cfg, n=3, seed=seed)
    with torch.no_grad():
        torch.testing.assert_close(static(x), supernet(x, cfg))
    n_blocks = sum(isinstance(m, InvertedResidual) for m in static.modules())
    assert n_blocks == 1 + sum(cfg.d)  # first block + the active elastic blocks


def test_feature_bias_off_drops_that_bias_and_exports_the_same_function(params):
    """space.feature_bias: false (the paper authors' feature-mix layer, the imagenet presets)."""
    from dataclasses import replace

    from tests.conftest import perturb

    space = SearchSpace(replace(params.space, feature_bias=False))
    torch.manual_seed(0)
    net = perturb(OFAMobileNetV3(space)).eval()
    assert net.classifier[0].bias is None and net.classifier[3].bias is not None
    with_bias = OFAMobileNetV3(SearchSpace(params.space))
    assert count_params(with_bias) - count_params(net) == params.space.feature_width
    for seed in SEEDS:
        cfg = space.sample(random.Random(seed))
        static = net.export(cfg).eval()
        assert static.classifier[0].bias is None
        x = _x(cfg, n=3, seed=seed)
        with torch.no_grad():
            torch.testing.assert_close(static(x), net(x, cfg))


def test_export_follows_training_mode(supernet, space):
    supernet.train()
    assert supernet.export(space.min_config()).training
    supernet.eval()
    assert not supernet.export(space.min_config()).training


def test_export_is_built_from_torchvision_ops(supernet, space):
    static = supernet.export(space.max_config())
    kinds = {type(m) for m in static.modules()}
    assert {InvertedResidual, Conv2dNormActivation, SqueezeExcitation} <= kinds
    elastic = (ops.ElasticPointwise, ops.ElasticDepthwise, ops.ElasticBatchNorm, ops.ElasticSE)
    assert not any(isinstance(m, elastic) for m in static.modules())
    assert not any("transforms" in name for name, _ in static.named_parameters())
    n_se = sum(isinstance(m, SqueezeExcitation) for m in static.modules())
    assert n_se == space.max_depth * sum(st.se for st in space.cfg.stages)


def test_export_is_independent_of_the_supernet(supernet, space):
    supernet.eval()
    cfg = space.mid_config()
    static = supernet.export(cfg).eval()
    x = _x(cfg)
    with torch.no_grad():
        ref = static(x)
        for p in supernet.parameters():
            p.mul_(2)
        torch.testing.assert_close(static(x), ref, rtol=0, atol=0)


def test_export_counts_params_and_macs(supernet, space):
    small, big = supernet.export(space.min_config()), supernet.export(space.max_config())
    assert count_params(big) == sum(p.numel() for p in big.parameters())
    # the max subnet holds every supernet weight except the kernel transforms
    transforms = sum(p.numel() for n, p in supernet.named_parameters() if "transforms" in n)
    assert count_params(big) == count_params(supernet) - transforms
    assert count_params(small) < count_params(big)
    macs_small = count_macs(small, space.min_config().r, 1)
    macs_big = count_macs(big, space.max_config().r, 1)
    assert 0 < macs_small < macs_big
    # resolution only changes MACs, not parameters; the stem's MACs alone are 16*9*(r/2)^2
    assert count_macs(big, 20, 1) < count_macs(big, 32, 1)
    assert macs_small > 16 * 9 * (space.min_config().r // 2) ** 2


def test_export_refuses_configs_outside_the_space(supernet, space):
    cfg = space.max_config()
    with pytest.raises(OFAError, match="kernel size 9"):
        supernet.export(SubnetConfig((9,) * space.n_slots, cfg.e, cfg.d, cfg.r))
    with pytest.raises(OFAError, match="resolution 30"):
        supernet.export(SubnetConfig(cfg.ks, cfg.e, cfg.d, 30))


# -- channel sorting -------------------------------------------------------------------------
def test_sorting_channels_keeps_the_function(supernet, space):
    supernet.eval()
    full = space.max_config(28)
    rng = random.Random(7)
    # any subnet at the largest expand ratio uses every middle channel: sorting cannot change it
    cfgs = [full] + [SubnetConfig(c.ks, full.e, c.d, c.r) for c in (space.sample(rng) for _ in range(3))]
    xs = [_x(cfg, n=4, seed=i) for i, cfg in enumerate(cfgs)]
    before_w = supernet.blocks[0].expand.weight.clone()
    with torch.no_grad():
        before = [supernet(x, cfg) for x, cfg in zip(xs, cfgs)]
        supernet.sort_channels()
        for x, cfg, ref in zip(xs, cfgs, before):
            torch.testing.assert_close(supernet(x, cfg), ref, rtol=1e-4, atol=1e-4)
    assert not torch.equal(supernet.blocks[0].expand.weight, before_w)  # sorting did reorder
    # ... but only permuted the middle channels (rows of the expand conv)
    torch.testing.assert_close(supernet.blocks[0].expand.weight.sum(0), before_w.sum(0))
    for i, block in enumerate(supernet.blocks):
        importance = block.project.weight.abs().sum(dim=(0, 2, 3))
        assert torch.all(importance[:-1] >= importance[1:]), i
        if block.se is not None:
            sq_importance = block.se.fc2.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(sq_importance[:-1] >= sq_importance[1:]), i


def test_sorting_changes_smaller_widths(supernet, space):
    """Sorting is not a no-op: a narrower subnet now runs the most important channels."""
    supernet.eval()
    cfg = space.min_config()
    x = _x(cfg)
    with torch.no_grad():
        before = supernet(x, cfg)
        supernet.sort_channels()
        assert not torch.allclose(supernet(x, cfg), before)


def test_expand_ratio_one_is_refused_or_exported(params):
    import dataclasses

    from ofa.config import SpaceConfig

    try:
        cfg = dataclasses.replace(params.space, expand_choices=(1, 3, 6))
    except OFAError as exc:  # refusing it up front is a fine fix
        assert "space.expand_choices" in str(exc)
        return
    assert isinstance(cfg, SpaceConfig)
    space = SearchSpace(cfg)
    torch.manual_seed(0)
    net = OFAMobileNetV3(space).eval()
    sub = space.uniform(3, 1, 2, 20)
    x = _x(sub)
    with torch.no_grad():
        torch.testing.assert_close(net.export(sub).eval()(x), net(x, sub))


def test_make_divisible_is_torchvisions_rule():
    from torchvision.models._utils import _make_divisible

    from ofa.nn.ops import make_divisible

    for value in [v / 4 for v in range(1, 2000)]:
        assert make_divisible(value, 8) == int(_make_divisible(value, 8)), value
