"""BN recalibration: exact statistics of the calibration images, nothing leaked back."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ofa.bn import recalibrate


def _batches(cfg, sizes, seed=0, shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    # batches drawn around different means, so per-batch and pooled statistics disagree
    return [torch.randn(n, 1, cfg.r, cfg.r, generator=gen) * (1 + i) + shift * i
            for i, n in enumerate(sizes)]


def _record_first_bn_input(static):
    """The input of the first BN layer (the stem conv's output), batch by batch."""
    seen = []
    handle = static.features[0][0].register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    return seen, handle


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_recalibration_estimates_exact_statistics(supernet, space, mode):
    cfg = space.mid_config(24)
    static = supernet.export(cfg)
    static.train(mode == "train")
    first_bn = static.features[0][1]
    assert isinstance(first_bn, nn.BatchNorm2d)
    old_mean = first_bn.running_mean.clone()
    seen, handle = _record_first_bn_input(static)
    batches = _batches(cfg, [4, 4, 4], shift=0.5)
    recalibrate(static, batches)
    handle.remove()
    assert len(seen) == 3
    feats = torch.cat(seen)
    # the mean over all calibration images combined (equal batch sizes)
    torch.testing.assert_close(first_bn.running_mean, feats.mean(dim=(0, 2, 3)))
    assert not torch.allclose(first_bn.running_mean, old_mean)
    # the variance: the exact average of the batches' unbiased variances
    per_batch_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in seen]).mean(0)
    torch.testing.assert_close(first_bn.running_var, per_batch_var)
    assert int(first_bn.num_batches_tracked) == 3
    # momentum and mode are restored
    assert all(m.momentum == space.cfg.bn_momentum
               for m in static.modules() if isinstance(m, nn.BatchNorm2d))
    assert static.training == (mode == "train")


def test_single_batch_gives_the_unbiased_variance(supernet, space):
    cfg = space.min_config()
    static = supernet.export(cfg).eval()
    seen, handle = _record_first_bn_input(static)
    recalibrate(static, _batches(cfg, [6]))
    handle.remove()
    bn = static.features[0][1]
    torch.testing.assert_close(bn.running_mean, seen[0].mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn.running_var, seen[0].var(dim=(0, 2, 3), unbiased=True))


def test_every_bn_layer_is_recalibrated(supernet, space):
    cfg = space.max_config()
    static = supernet.export(cfg).eval()
    norms = [m for m in static.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_var.clone() for m in norms]
    recalibrate(static, _batches(cfg, [3, 3], seed=1, shift=2.0))
    for i, (m, old) in enumerate(zip(norms, before)):
        assert int(m.num_batches_tracked) == 2, i
        # (the variance: a BN fed by a linear map of a train-mode BN output has an input-independent
        # mean, beta through the conv, so the mean alone would not show the re-estimation)
        assert not torch.allclose(m.running_var, old), i


def test_unequal_batches_are_weighted_by_size(supernet, space):
    cfg = space.min_config()
    static = supernet.export(cfg).eval()
    seen, handle = _record_first_bn_input(static)
    recalibrate(static, _batches(cfg, [8, 2], shift=1.0))
    handle.remove()
    torch.testing.assert_close(static.features[0][1].running_mean, torch.cat(seen).mean(dim=(0, 2, 3)))


def test_recalibrating_a_subnet_leaks_nothing_into_the_supernet(supernet, space):
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    for cfg in (space.min_config(), space.mid_config(), space.max_config()):
        static = supernet.export(cfg)
        recalibrate(static, _batches(cfg, [4], shift=3.0))
        assert not torch.equal(static.features[0][1].running_mean,
                               supernet.stem[1].running_mean)
    after = supernet.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k


def test_no_batches_is_an_error_and_restores_state(supernet, space):
    static = supernet.export(space.min_config()).eval()
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate(static, [])
    assert not static.training
    assert all(m.momentum == space.cfg.bn_momentum
               for m in static.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("seed", range(4))
def test_folding_bn_keeps_the_function(supernet, space, seed):
    import random

    from ofa.inference import fold_bn

    cfg = space.sample(random.Random(seed))
    net = supernet.export(cfg).eval()
    x = torch.randn(8, space.cfg.in_channels, cfg.r, cfg.r, generator=torch.Generator().manual_seed(seed))
    folded = fold_bn(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # original untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)
