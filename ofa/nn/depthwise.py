"""Depthwise convolution with faster gradients; the forward pass stays torch's.

oneDNN's depthwise weight gradient is slow on a CPU, worst where the kernel outgrows the map
(the elastic stages run 5x5 and 7x7 kernels on 3x3 and 4x4 maps): there it falls back to an
im2col GEMM. On the CPU the weight gradient comes from a compiled loop (ofa/nn/native.py:
much faster than oneDNN for 5x5 and 7x7 kernels, about even for 3x3). Where that kernel
is unavailable (no C compiler, a GPU tensor), maps smaller than the kernel still avoid the
GEMM: per channel, the (out pixels x in pixels) matrix of products of output gradients and
inputs summed over the batch (one batched matmul), summed onto the k x k taps each pixel pair
falls on (one small matmul). With stride 1 the input gradient is the forward conv with the
kernel flipped, faster than oneDNN's backward on this machine. Figures: reports/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ofa.nn import native


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
    taps = tap_matrix(h, w, kernel, stride, x.dtype).to(x.device)
    return (pairs @ taps).reshape(c, 1, kernel, kernel)


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int,
                use_native: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.use_native = stride, use_native
        return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        k, s = weight.shape[-1], ctx.stride
        want_x, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = None
        if want_w and ctx.use_native:
            gw = native.weight_grad(x, grad_out, k, s)
        elif want_w and needs_dense_grad(k, x.shape[-2], x.shape[-1]):
            gw = dense_weight_grad(x, grad_out, k, s)
        if want_x and s == 1:  # the forward conv with the kernel flipped: faster than oneDNN's
            gx = F.conv2d(grad_out, weight.flip(-1, -2), None, 1, k // 2, 1, x.shape[1])
        if (want_x and gx is None) or (want_w and gw is None):
            gx_torch, gw_torch, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [s, s], [k // 2, k // 2], [1, 1], False, [0, 0],
                x.shape[1], [want_x and gx is None, want_w and gw is None, False])
            gx = gx if gx is not None else gx_torch
            gw = gw if gw is not None else gw_torch
        return gx, gw, None, None


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int,
                   native_kernel: bool = True) -> torch.Tensor:
    """F.conv2d(x, weight, stride=stride, padding=k // 2, groups=C), faster to train; falls
    through to F.conv2d where no weight gradient is needed. native_kernel=False keeps torch's
    ops (plus the dense route on small maps), e.g. to measure what the kernel gains."""
    k = weight.shape[-1]
    if torch.is_grad_enabled() and weight.requires_grad:
        # 3x3 on several threads: oneDNN's own kernel is as fast (reports/RESULTS.md); the
        # dense route works around oneDNN, so a GPU keeps its own convolution
        use_native = native_kernel and native.usable(x) and (k > 3 or torch.get_num_threads() == 1)
        dense = x.device.type == "cpu" and needs_dense_grad(k, x.shape[-2], x.shape[-1])
        if use_native or dense:
            return _DepthwiseConv.apply(x, weight, stride, use_native)
    return F.conv2d(x, weight, None, stride, k // 2, 1, x.shape[1])
