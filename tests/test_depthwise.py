"""The depthwise conv's faster gradients (compiled kernel, dense route, flipped-kernel input
gradient) compute what F.conv2d does, and training still works without a C compiler."""

from __future__ import annotations

import random
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F

from ofa.nn import native
from ofa.nn.depthwise import depthwise_conv, needs_dense_grad, tap_matrix

# (channels, map size, kernel, stride): maps smaller than the kernel (the dense route), one
# equal and one larger (oneDNN's route), odd sizes, stride 2, both memory formats
CASES = [(24, 4, 7, 1), (16, 3, 5, 1), (8, 5, 7, 2), (16, 4, 5, 2), (8, 7, 7, 1), (8, 9, 3, 2),
         (12, 2, 3, 1)]


@pytest.mark.parametrize("native_kernel", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c,h,k,s", CASES)
def test_gradients_match_conv2d(c, h, k, s, channels_last, native_kernel):
    g = torch.Generator().manual_seed(c * h * k * s)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(6, c, h, h + 1, generator=g).contiguous(memory_format=fmt)
    w = torch.randn(c, 1, k, k, generator=g)
    outs, grads = [], []
    for fn in (lambda a, b, st: depthwise_conv(a, b, st, native_kernel),
               lambda a, b, st: F.conv2d(a, b, None, st, k // 2, 1, c)):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(xi, wi, s)
        y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape))
        outs.append(y)
        grads.append((xi.grad, wi.grad))
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,h,k,s", [(8, 9, 3, 2), (8, 7, 3, 1), (12, 8, 5, 1)])
def test_torch_weight_gradient_route_matches_conv2d(c, h, k, s):
    """The custom function without the compiled kernel, on a map at least the kernel's size:
    torch's own weight gradient (depthwise_conv does not pick this route today; a caller
    may)."""
    from ofa.nn.depthwise import _DepthwiseConv

    g = torch.Generator().manual_seed(c * h * k)
    x = torch.randn(4, c, h, h, generator=g)
    w = torch.randn(c, 1, k, k, generator=g)
    grads = []
    for fn in (lambda a, b: _DepthwiseConv.apply(a, b, s, False),
               lambda a, b: F.conv2d(a, b, None, s, k // 2, 1, c)):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(xi, wi)
        y.backward(torch.sin(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape))
        grads.append((xi.grad, wi.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-5, atol=1e-5)


def test_only_kernels_larger_than_the_map_take_the_dense_route():
    assert needs_dense_grad(7, 4, 4) and needs_dense_grad(5, 3, 8)
    assert not needs_dense_grad(7, 7, 7) and not needs_dense_grad(3, 4, 4)


def test_each_pixel_pair_falls_on_at_most_one_tap():
    m = tap_matrix(4, 4, 7, 1)
    assert m.shape == (16 * 16, 49) and set(m.sum(1).tolist()) == {1.0}  # 7x7 covers 4x4 whole
    m = tap_matrix(5, 5, 3, 2)  # outputs at 0, 2, 4 see 2, 3, 2 input rows (and columns)
    assert m.shape == (9 * 25, 9) and set(m.sum(1).tolist()) == {0.0, 1.0}
    assert int(m.sum()) == (2 + 3 + 2) ** 2


def test_gradient_flows_through_the_kernel_transforms(space):
    from ofa.nn.ops import ElasticDepthwise

    torch.manual_seed(0)
    dw = ElasticDepthwise(16, space.cfg.kernel_choices, 1)
    x = torch.randn(4, 16, 3, 3)
    dw(x, 3).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dw.transforms.values())


needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="no C compiler on this machine")


@needs_cc
def test_the_kernel_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_CACHE_DIR", str(tmp_path))
    first = native._build(shutil.which("cc") or shutil.which("gcc"), list(native.FLAG_SETS[0]))
    stamp = first.stat().st_mtime_ns
    again = native._build(shutil.which("cc") or shutil.which("gcc"), list(native.FLAG_SETS[0]))
    assert again == first and again.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp files left


@needs_cc
def test_training_on_cpu_uses_the_kernel():
    assert native.usable(torch.zeros(1, 1, 1, 1))
    assert not native.usable(torch.zeros(1, 1, 1, 1, dtype=torch.float64))


def test_without_a_compiler_training_falls_back_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="could not build"):
            assert native.library() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # cached: no second warning, no second build
            assert not native.usable(torch.zeros(1, 1, 1, 1))
            x = torch.randn(2, 8, 6, 6).requires_grad_()
            w = torch.randn(8, 1, 5, 5).requires_grad_()
            depthwise_conv(x, w, 1).sum().backward()
        x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        F.conv2d(x2, w2, None, 1, 2, 1, 8).sum().backward()
        torch.testing.assert_close(w.grad, w2.grad, rtol=1e-5, atol=1e-5)
        assert list(tmp_path.iterdir()) == []
    finally:
        native.library.cache_clear()


@pytest.mark.parametrize("seed", range(3))
def test_supernet_gradients_agree_with_and_without_the_kernel(space, seed):
    from ofa.nn.supernet import OFAMobileNetV3

    torch.manual_seed(seed)
    cfg = space.sample(random.Random(seed))
    nets = [OFAMobileNetV3(space), OFAMobileNetV3(space, native_kernel=False)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = torch.randn(4, space.cfg.in_channels, cfg.r, cfg.r).contiguous(memory_format=torch.channels_last)
    for net in nets:
        torch.manual_seed(seed)  # the same dropout mask
        net.to(memory_format=torch.channels_last).train()(x, cfg).square().sum().backward()
    grads = [{n: p.grad for n, p in net.named_parameters() if p.grad is not None} for net in nets]
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_batch_ranges_cover_the_batch_once():
    big = native.MIN_MACS_PER_THREAD * 100
    assert native.batch_ranges(64, 2, big) == [(0, 32), (32, 64)]
    assert native.batch_ranges(7, 3, big) == [(0, 2), (2, 4), (4, 7)]
    assert native.batch_ranges(2, 4, big) == [(0, 1), (1, 2)]  # never an empty range
    assert native.batch_ranges(64, 2, native.MIN_MACS_PER_THREAD - 1) == [(0, 64)]  # too small


@needs_cc
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_split_the_batch_and_agree_with_one(threads):
    g = torch.Generator().manual_seed(threads)
    x = torch.randn(9, 48, 14, 14, generator=g).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(9, 48, 14, 14, generator=g).contiguous(memory_format=torch.channels_last)
    one = native.weight_grad(x, grad, 7, 1, threads=1)
    assert len(native.batch_ranges(9, threads, 9 * 14 * 14 * 49 * 48)) == 1  # below the bar:
    several = native.weight_grad(x, grad, 7, 1, threads=threads)             # one thread
    torch.testing.assert_close(several, one, rtol=0, atol=0)
    n = 9 * max(1, -(-native.MIN_MACS_PER_THREAD * threads // (14 * 14 * 49 * 48 * 9)))
    x = torch.randn(n, 48, 14, 14, generator=g).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(n, 48, 14, 14, generator=g).contiguous(memory_format=torch.channels_last)
    assert len(native.batch_ranges(n, threads, n * 14 * 14 * 49 * 48)) == threads
    one = native.weight_grad(x, grad, 7, 1, threads=1)
    several = native.weight_grad(x, grad, 7, 1, threads=threads)  # other summation order only
    torch.testing.assert_close(several, one, rtol=0, atol=1e-5 * float(one.abs().max()))
    assert not torch.equal(several, one)  # the threads did run: another summation order


def test_benchmark_times_the_supernet_with_and_without_the_kernel(params):
    from ofa.benchmark import benchmark_training

    rows = benchmark_training(params, batch_size=4, steps=1, rounds=1)
    assert [r["subnet"] for r in rows] == ["max", "min"]
    for r in rows:
        for side in ("supernet_img_s", "static_img_s", "supernet_torch_ops_img_s"):
            assert r[side] > 0
        assert r["slowdown"] == pytest.approx(r["static_img_s"] / r["supernet_img_s"])
        assert r["slowdown_torch_ops"] == pytest.approx(r["static_img_s"] / r["supernet_torch_ops_img_s"])
