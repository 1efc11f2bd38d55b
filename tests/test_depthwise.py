"""The depthwise conv with the dense weight gradient computes exactly what F.conv2d does."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofa.nn.depthwise import depthwise_conv, needs_dense_grad, tap_matrix

# (channels, map size, kernel, stride): maps smaller than the kernel (the dense route), one
# equal and one larger (oneDNN's route), odd sizes, stride 2, both memory formats
CASES = [(24, 4, 7, 1), (16, 3, 5, 1), (8, 5, 7, 2), (16, 4, 5, 2), (8, 7, 7, 1), (8, 9, 3, 2),
         (12, 2, 3, 1)]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("c,h,k,s", CASES)
def test_gradients_match_conv2d(c, h, k, s, channels_last):
    g = torch.Generator().manual_seed(c * h * k * s)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(6, c, h, h + 1, generator=g).contiguous(memory_format=fmt)
    w = torch.randn(c, 1, k, k, generator=g)
    outs, grads = [], []
    for fn in (depthwise_conv, lambda a, b, st: F.conv2d(a, b, None, st, k // 2, 1, c)):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fn(xi, wi, s)
        y.backward(torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape))
        outs.append(y)
        grads.append((xi.grad, wi.grad))
    torch.testing.assert_close(outs[0], outs[1])
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
