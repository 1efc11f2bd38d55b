"""A compiled CPU kernel for the depthwise weight gradient, built on first use.

oneDNN's depthwise weight gradient is the slowest op of a CPU training step, many times its
forward pass for large kernels. The gradient here is a plain loop (each output pixel's
gradient times the input pixels under each tap, summed over the batch), vectorized over
channels in NHWC: faster than oneDNN and than the batched-matmul route depthwise.py uses on
maps smaller than the kernel (figures: reports/RESULTS.md). With several torch threads, large
gradients split the batch over Python threads; one thread gives the same bits as a single call.

The C source below is compiled with the system's C compiler into a cache folder
(`$OFA_CACHE_DIR`, default `~/.cache/ofa`), named by a hash of source, compiler and flags;
CPU-specific code is picked at load time (`target_clones`), so the file is safe on any x86
machine sharing the cache. Without a compiler, or if the build fails, training keeps torch's
own ops (one warning): same results up to float rounding, only slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import torch

SOURCE = r"""
#if defined(__x86_64__) && !defined(OFA_NO_CLONES)
#define OFA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OFA_CLONES
#endif
/* out[i][j][q] = sum over b in [b0, b1), y, x of in[b][y*s-p+i][x*s-p+j][q] * g[b][y][x][q],
   p = k / 2. Threads take disjoint batch ranges into their own out; the caller adds them. */
OFA_CLONES
void dw_weight_grad_nhwc(const float *restrict in, const float *restrict g, float *restrict out,
                         long n, long h, long w, long c, long k, long s, long oh, long ow,
                         long b0, long b1)
{
    long p = k / 2;
    for (long t = 0; t < k * k * c; ++t) out[t] = 0.0f;
    for (long b = b0; b < b1; ++b)
        for (long y = 0; y < oh; ++y)
            for (long i = 0; i < k; ++i) {
                long iy = y * s - p + i;
                if (iy < 0 || iy >= h) continue;
                for (long x = 0; x < ow; ++x) {
                    const float *gr = g + ((b * oh + y) * ow + x) * c;
                    for (long j = 0; j < k; ++j) {
                        long ix = x * s - p + j;
                        if (ix < 0 || ix >= w) continue;
                        const float *xr = in + ((b * h + iy) * w + ix) * c;
                        float *acc = out + (i * k + j) * c;
                        for (long q = 0; q < c; ++q) acc[q] += xr[q] * gr[q];
                    }
                }
            }
}
"""
# Tried in order; the second covers compilers without target_clones (bounded: two builds).
FLAG_SETS = (["-O3", "-shared", "-fPIC"], ["-O3", "-shared", "-fPIC", "-DOFA_NO_CLONES"])
BUILD_TIMEOUT_S = 120
# Below this many multiply-adds per thread, starting a thread costs more than it saves
# (reports/RESULTS.md).
MIN_MACS_PER_THREAD = 32_000_000


def cache_dir() -> Path:
    return Path(os.environ.get("OFA_CACHE_DIR") or Path.home() / ".cache" / "ofa")


def _build(cc: str, flags: list[str]) -> Path:
    key = hashlib.sha256("\0".join([SOURCE, cc, *flags]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"dwgrad-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    src = lib.with_suffix(f".{os.getpid()}.c")
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    try:
        src.write_text(SOURCE)
        subprocess.run([cc, *flags, str(src), "-o", str(tmp)], check=True, capture_output=True,
                       timeout=BUILD_TIMEOUT_S)
        os.replace(tmp, lib)  # atomic: concurrent DDP workers may build the same file
    finally:
        src.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None (with one warning) where it cannot be built here."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        warnings.warn("no C compiler found: depthwise weight gradients use torch's slower ops")
        return None
    errors = []
    for flags in FLAG_SETS:
        try:
            lib = ctypes.CDLL(str(_build(cc, flags)))
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(str(err))
            continue
        fn = lib.dw_weight_grad_nhwc
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 10
        return lib
    warnings.warn(f"could not build the depthwise weight-gradient kernel with {cc} "
                  f"({errors[-1]}): torch's slower ops are used")
    return None


def usable(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and library() is not None


def batch_ranges(n: int, threads: int, macs: int = MIN_MACS_PER_THREAD * 1024
                 ) -> list[tuple[int, int]]:
    """Split n images into at most `threads` contiguous, non-empty ranges, each with at least
    MIN_MACS_PER_THREAD of the `macs` to do."""
    parts = max(1, min(threads, n, macs // MIN_MACS_PER_THREAD))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int,
                threads: int | None = None) -> torch.Tensor:
    """d loss / d weight of a depthwise conv (padding k // 2) as (C, 1, k, k); call where
    `usable(x)`. Runs on torch's intra-op thread count unless `threads` is given: Python
    threads over batch ranges (ctypes releases the GIL), partial sums added in a fixed order,
    so a given thread count always gives the same result."""
    lib = library()
    assert lib is not None
    n, c, h, w = x.shape
    oh, ow = grad_out.shape[-2:]
    xs = x.detach().permute(0, 2, 3, 1).contiguous()  # NHWC: no copy for channels_last
    gs = grad_out.permute(0, 2, 3, 1).contiguous()
    macs = n * oh * ow * kernel * kernel * c
    ranges = batch_ranges(n, threads or torch.get_num_threads(), macs)
    out = torch.empty(len(ranges), kernel, kernel, c, dtype=torch.float32)

    def run(part: int) -> None:
        lib.dw_weight_grad_nhwc(xs.data_ptr(), gs.data_ptr(), out[part].data_ptr(),
                                n, h, w, c, kernel, stride, oh, ow, *ranges[part])

    workers = [threading.Thread(target=run, args=(part,)) for part in range(1, len(ranges))]
    for t in workers:
        t.start()
    run(0)
    for t in workers:
        t.join()
    total = out[0] if len(ranges) == 1 else out.sum(0)
    return total.permute(2, 0, 1).contiguous().unsqueeze(1)
