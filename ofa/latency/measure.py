"""Run a module the way a device runs it and time it: torch eager, TorchScript, onnxruntime, CUDA.

The same runner times single layers (for the table) and whole subnets (to calibrate and check
the table, and to measure exported models), so both see the same per-call costs. Latency here
means steady state, as when a device serves one model call after call: every timed call comes
right after `WARM_CALLS` untimed calls of the same module. Many modules are timed interleaved
(round-robin, a fresh seeded order every round), so a burst of load on the shared machine hits
every module a little instead of a few modules entirely. Tables keep median and p90-p10 spread.

Why `WARM_CALLS` warm calls: with fewer, caches are still cold from the other modules, so
subnets read slower than back to back and layers mis-price ONNX Runtime subnets
(reports/RESULTS.md, latency tables).
"""

from __future__ import annotations

import copy
import io
import math
import random
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ofa.config_specialize import DeviceConfig, LatencyConfig
from ofa.distributed import torch_threads  # noqa: F401 - used here and by callers
from ofa.errors import OFAError

Runner = Callable[[], object]
Progress = Callable[[str], None]
WARM_CALLS = 3   # untimed calls right before every timed one (steady-state latency)
MAX_REPEAT_FACTOR = 8   # time_interleaved's bound on rounds: 8 x latency.repeats


def _target(dev: DeviceConfig) -> torch.device:
    if dev.device == "cuda":
        if not torch.cuda.is_available():
            raise OFAError("the device asks for cuda, but no CUDA GPU is available here")
        return torch.device("cuda")
    return torch.device("cpu")


def channels_last(dev: DeviceConfig) -> bool:
    """Torch backends on the CPU run channels_last: never slower and often faster for whole
    subnets (reports/RESULTS.md); ONNX Runtime and CUDA keep the default layout."""
    return dev.backend in ("torch", "torchscript") and dev.device == "cpu"


def make_runner(module: nn.Module, shape: tuple[int, ...], dev: DeviceConfig) -> Runner:
    """A zero-argument call that runs one batch on the device's backend (a private copy of
    `module` is converted, so the caller's module is left as it was)."""
    module = copy.deepcopy(module).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    if dev.backend == "onnxruntime":
        return _ort_runner(module, x, dev)
    target = _target(dev)
    fmt = torch.channels_last if channels_last(dev) and x.dim() == 4 else torch.contiguous_format
    module = module.to(target, memory_format=fmt)
    x = x.to(target).contiguous(memory_format=fmt)
    if dev.backend == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # jit is deprecated upstream, still shipped
            # no check_trace: it traces everything twice to compare (half of a table's build)
            module = torch.jit.freeze(torch.jit.trace(module, x, check_trace=False))
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)

    def run() -> object:
        with torch.inference_mode():
            out = module(x)
        sync()
        return out

    return run


def _ort_runner(module: nn.Module, x: torch.Tensor, dev: DeviceConfig) -> Runner:
    import onnxruntime as ort

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = dev.threads
    opts.inter_op_num_threads = 1
    # Every timed module has its own session and thread pool; spinning idle workers of the
    # other sessions would steal the cores (2-thread layers then read far slower)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    providers = ["CUDAExecutionProvider"] if dev.device == "cuda" else ["CPUExecutionProvider"]
    if providers[0] not in ort.get_available_providers():
        raise OFAError(f"onnxruntime here lacks the {providers[0]}")
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=providers)
    feed = {"x": x.numpy()}
    return lambda: sess.run(None, feed)


def time_runner(run: Runner, warmup: int, repeats: int, min_seconds: float = 0.0) -> np.ndarray:
    """Milliseconds of each of `repeats` calls after `warmup` untimed ones; more calls while
    they have taken less than `min_seconds` (at most MAX_REPEAT_FACTOR x repeats)."""
    for _ in range(warmup):
        run()
    cap = MAX_REPEAT_FACTOR * repeats if min_seconds > 0 else repeats
    out = np.empty(cap)
    n, start = 0, time.perf_counter()
    while n < repeats or (n < cap and time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        run()
        out[n] = (time.perf_counter() - t0) * 1e3
        n += 1
    return out[:n]


def time_interleaved(runners: Sequence[Runner], warmup: int, repeats: int, seed: int = 0,
                     progress: Progress | None = None, min_seconds: float = 0.0) -> np.ndarray:
    """(len(runners), rounds) milliseconds: rounds visiting every runner once in a freshly
    shuffled order (WARM_CALLS untimed calls, then one timed), after `warmup` untimed rounds.
    What runs before a module does not matter after the warm calls (reports/RESULTS.md).

    At least `repeats` rounds; more while the timed rounds have taken less than `min_seconds`
    (at most MAX_REPEAT_FACTOR x repeats): sub-millisecond modules, whose single timings
    spread widely, get the samples their noise needs (reports/RESULTS.md) for seconds of
    extra time, while slow ones keep `repeats`.
    """
    rng = random.Random(seed)
    order = list(range(len(runners)))
    cap = MAX_REPEAT_FACTOR * repeats if min_seconds > 0 else repeats
    out = np.empty((len(runners), cap))
    rounds, rnd, start = repeats, 0, 0.0
    while rnd < warmup + rounds:
        if rnd == warmup:
            start = time.perf_counter()   # timed rounds only
        rng.shuffle(order)
        for i in order:
            for _ in range(WARM_CALLS):
                runners[i]()
            t0 = time.perf_counter()
            runners[i]()
            if rnd >= warmup:
                out[i, rnd - warmup] = (time.perf_counter() - t0) * 1e3
        rnd += 1
        if rnd == warmup + repeats and min_seconds > 0:   # the minimum is done: extend once
            per_round = (time.perf_counter() - start) / repeats
            rounds = min(cap, max(repeats, math.ceil(min_seconds / max(per_round, 1e-9))))
        if progress is not None:
            progress(f"round {rnd}/{warmup + rounds}")
    return out[:, :rounds]


def summarize(ms: np.ndarray) -> dict:
    """median, p90-p10 spread and count of one module's timings."""
    q10, q50, q90 = np.percentile(ms, [10, 50, 90])
    return {"median_ms": float(q50), "spread_ms": float(q90 - q10), "count": int(len(ms))}


def make_runners(items: Sequence[tuple[nn.Module, tuple[int, ...]]], dev: DeviceConfig,
                 progress: Progress | None = None) -> list[Runner]:
    """Runners of (module, input shape) pairs; call them under torch_threads(dev.threads)."""
    runners = []
    for m, shape in items:
        runners.append(make_runner(m, shape, dev))
        if progress is not None:
            progress(f"prepared {len(runners)}/{len(items)}")
    return runners


def time_modules(items: Sequence[tuple[nn.Module, tuple[int, ...]]], dev: DeviceConfig,
                 settings: LatencyConfig, seed: int = 0,
                 progress: Progress | None = None) -> np.ndarray:
    """Interleaved timings of (module, input shape) pairs on the device: (n, repeats) ms.
    `progress` hears of every runner built and every round."""
    with torch_threads(dev.threads):
        runners = make_runners(items, dev, progress)
        return time_interleaved(runners, settings.warmup, settings.repeats, seed, progress,
                                settings.min_seconds)


def end_to_end_ms(module: nn.Module, dev: DeviceConfig, resolution: int, in_channels: int,
                  settings: LatencyConfig) -> float:
    """Median latency (ms) of a whole network on the device: one batch of dev.batch_size images,
    the device's backend and threads, `settings.warmup` + `settings.repeats` calls (more for a
    fast network, up to `settings.min_seconds` of timed calls)."""
    shape = (dev.batch_size, in_channels, resolution, resolution)
    with torch_threads(dev.threads):
        run = make_runner(module, shape, dev)
        return float(np.median(time_runner(run, settings.warmup, settings.repeats,
                                           settings.min_seconds)))
