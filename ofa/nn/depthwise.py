"""Depthwise convolution whose weight gradient stays fast when the kernel outgrows the map.

The elastic stages run 5x5 and 7x7 depthwise kernels on 3x3 and 4x4 feature maps. oneDNN's
direct depthwise kernels do not take a kernel larger than the map, so its weight gradient
falls back to an im2col GEMM there: on a 2-core AVX2 CPU, 7x7 on 4x4 (576 channels, batch
128) costs ~115 ms against ~2 ms for the forward pass. On such small maps the weight
gradient is cheaper as what it is: per channel, the (out pixels x in pixels) matrix of
products of output gradients and inputs summed over the batch (one batched matmul), then
summed onto the k x k taps each pixel pair falls on (one small matmul). The forward pass and
the input gradient stay with oneDNN; only the weight gradient's route changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def needs_dense_grad(kernel: int, height: int, width: int) -> bool:
    """True where oneDNN would take its slow GEMM route: a kernel larger than the map."""
    return kernel > min(height, width)


def tap_matrix(height: int, width: int, kernel: int, stride: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(out pixels * in pixels, k*k) 0/1 matrix: which kernel tap joins each pixel pair."""
    pad = kernel // 2
    ho = (height + 2 * pad - kernel) // stride + 1
    wo = (width + 2 * pad - kernel) // stride + 1
    di = torch.arange(height).view(1, 1, -1, 1) - (torch.arange(ho) * stride - pad).view(-1, 1, 1, 1)
    dj = torch.arange(width).view(1, 1, 1, -1) - (torch.arange(wo) * stride - pad).view(1, -1, 1, 1)
    inside = (di >= 0) & (di < kernel) & (dj >= 0) & (dj < kernel)
    tap = torch.where(inside, di * kernel + dj, kernel * kernel).reshape(-1)
    return F.one_hot(tap, kernel * kernel + 1)[:, :kernel * kernel].to(dtype)


def dense_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int,
                      stride: int) -> torch.Tensor:
    """d loss / d weight of a depthwise conv (padding k // 2), as (C, 1, k, k)."""
    n, c, h, w = x.shape
    ho, wo = grad_out.shape[-2:]
    xs = x.permute(1, 0, 2, 3).reshape(c, n, h * w).contiguous()
    gs = grad_out.permute(1, 2, 3, 0).reshape(c, ho * wo, n).contiguous()
    pairs = torch.bmm(gs, xs).reshape(c, ho * wo * h * w)
    return (pairs @ tap_matrix(h, w, kernel, stride, x.dtype)).reshape(c, 1, kernel, kernel)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        k, s = weight.shape[-1], ctx.stride
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dense = want_w and needs_dense_grad(k, x.shape[-2], x.shape[-1])
        gx = gw = None
        if want_x or (want_w and not dense):
            gx, _, gw = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [k // 2, k // 2], [1, 1], False, [0, 0],
                x.shape[1], [want_x, False, want_w and not dense])
        if dense:
            gw = dense_weight_grad(x, grad_out, k, s)
        return gx, gw, None


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """F.conv2d(x, weight, stride=stride, padding=k // 2, groups=C), faster to train on
    small maps; falls through to F.conv2d where no weight gradient is needed."""
    if not (torch.is_grad_enabled() and weight.requires_grad) or \
            not needs_dense_grad(weight.shape[-1], x.shape[-2], x.shape[-1]):
        return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, x.shape[1])
    return _DepthwiseConv.apply(x, weight, stride)
