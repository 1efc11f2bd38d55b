"""BN recalibration: exact statistics of the calibration images, nothing leaked back."""

from __future__ import annotations

import torch

from ofa.bn import recalibrate


def test_recalibration_estimates_exact_statistics(supernet, space):
    cfg = space.mid_config(24)
    static = supernet.export(cfg)
    first_bn = static.features[0][1]
    seen = []
    handle = static.features[0][0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, 1, 24, 24, generator=gen) for _ in range(3)]
    static.eval()
    recalibrate(static, batches)
    handle.remove()
    feats = torch.cat(seen)
    # the cumulative average of per-batch statistics of equal-sized batches
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in seen]).mean(0)
    vars_ = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in seen]).mean(0)
    torch.testing.assert_close(first_bn.running_mean, means)
    torch.testing.assert_close(first_bn.running_var, vars_)
    assert feats.shape[0] == 24
    assert first_bn.momentum == space.cfg.bn_momentum  # restored
    assert not static.training  # mode restored


def test_recalibrating_a_subnet_leaks_nothing_into_the_supernet(supernet, space):
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    for cfg in (space.min_config(), space.max_config()):
        recalibrate(supernet.export(cfg), [torch.randn(4, 1, cfg.r, cfg.r)])
    after = supernet.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_recalibration_changes_the_statistics(supernet, space):
    cfg = space.min_config()
    static = supernet.export(cfg)
    old = static.features[0][1].running_mean.clone()
    recalibrate(static, [torch.randn(4, 1, cfg.r, cfg.r) * 3 + 1])
    assert not torch.allclose(static.features[0][1].running_mean, old)
