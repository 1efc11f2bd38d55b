"""Latency lookup tables: time every layer once per device, then predict any subnet by a sum.

A table is a parquet file, one row per layer key, with metadata: the format version, the
search space's fingerprint, the device entry and a per-network `overhead_ms` (see
docs/latency_table.md). A subnet's latency is the sum of its layers' entries plus the overhead.
Entries are the layers' medians timed alone times a scale per stage (or one scale plus a term
in the layer's input size); scales, that term and the overhead absorb what layers timed alone
cannot see (per-call costs, layout conversions, caches shared along a network) and are fitted
on calibration subnets timed end to end in the same interleaved rounds as the layers, never
on the subnets that check the table. A device that cannot run this code (a phone) registers
a table measured there with `table:`; it is validated and copied here.
"""


from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ofa import paths
from ofa.config import Params, to_dict
from ofa.latency.calibrate import calibration_group, fit_table_calibration, input_values
from ofa.latency.layers import enumerate_layers, input_shape, layer_cost, layer_modules, subnet_layers
from ofa.latency.measure import channels_last, summarize, time_modules
from ofa.latency.table_io import TABLE_FORMAT, import_table, write_table
from ofa.nn.supernet import OFAMobileNetV3
from ofa.progress import make_progress
from ofa.seeding import torch_seed
from ofa.space import SearchSpace, SubnetConfig

CALIBRATION_SUBNETS = 24


def calibration_configs(space: SearchSpace, seed: int, n: int = CALIBRATION_SUBNETS) -> list[SubnetConfig]:
    """Smallest, largest and random subnets; a seed stream of their own, apart from the check's."""
    rng = random.Random(f"latency-calibration:{seed}")
    return [space.min_config(), space.max_config()] + [space.sample(rng) for _ in range(n - 2)]


def build_table(params: Params, device: str, show_progress: bool = True) -> Path:
    """Time every layer (and the calibration subnets) on the device, or import its registered
    table; writes data/latency/<device>.parquet atomically."""
    import pandas as pd
    from torch import nn

    dev = params.device(device)
    if dev.table is not None:
        return import_table(params, device, Path(dev.table))
    space, lat = SearchSpace(params.space), params.latency
    specs = enumerate_layers(space)
    modules = layer_modules(space, specs, seed=lat.seed)
    with torch_seed(lat.seed):
        net = OFAMobileNetV3(space).eval()
    cal = calibration_configs(space, lat.seed, lat.calibration_subnets)
    image = (dev.batch_size, space.cfg.in_channels)
    items = [(nn.Identity(), image + (min(space.cfg.resolutions),) * 2)]   # an empty call
    items += [(modules[s.key], input_shape(s, dev.batch_size)) for s in specs]
    items += [(net.export(c).eval(), image + (c.r, c.r)) for c in cal]
    with make_progress(show_progress) as bar:
        task = bar.add_task(f"latency {device}", total=len(items) + lat.warmup + lat.repeats,
                            info="")
        # layers and calibration subnets shuffled together: both see the same machine state
        def advance(what: str) -> None:
            if what.startswith("round "):   # "round i/n": n grows when fast layers get more
                done, planned = (int(v) for v in what.split()[1].split("/"))
                bar.update(task, total=len(items) + planned, completed=len(items) + done,
                           info=what)
            else:
                bar.update(task, advance=1, info=what)

        ms = time_modules(items, dev, lat, seed=lat.seed, progress=advance)
    # The empty call's median is kept for the record; the fit below prices per-call costs.
    call_ms = float(np.median(ms[0]))
    rows = []
    for spec, t in zip(specs, ms[1:]):
        macs, n_params = layer_cost(space, spec)
        stats = summarize(t)
        rows.append(spec.to_row() | {"macs": macs, "params": n_params} | stats
                    | {"raw_median_ms": stats["median_ms"]})
    df = pd.DataFrame(rows)
    raw = dict(zip(df["key"], df["raw_median_ms"]))
    layers = [subnet_layers(space, c) for c in cal]
    measured = np.median(ms[1 + len(specs):], axis=1)
    scales, input_ms, overhead, model = fit_table_calibration(specs, layers, raw, measured)
    # entries stay positive whatever the fit: at least 5% of the scaled raw median
    raw_ms = df["raw_median_ms"].to_numpy()
    scale = np.array([scales[calibration_group(s)] for s in specs])
    inputs = np.array([input_values(s) for s in specs])
    df["median_ms"] = np.maximum(scale * raw_ms + input_ms * inputs, 0.05 * scale * raw_ms)
    entry = dict(zip(df["key"], df["median_ms"]))
    meta = {"format": TABLE_FORMAT, "space": space.fingerprint(), "device": device,
            "device_entry": to_dict(dev), "overhead_ms": overhead, "calibration_model": model,
            "scales": scales, "input_ms_per_m": input_ms, "call_ms": call_ms,
            "channels_last": channels_last(dev),
            "warmup": lat.warmup, "repeats": lat.repeats, "rounds": int(ms.shape[1]),
            "versions": _versions(dev.backend),
            "calibration": [{"config": str(c), "sum_ms": float(sum(entry[s.key] for s in ls)),
                             "measured_ms": float(m)}
                            for c, ls, m in zip(cal, layers, measured)]}
    out = paths.latency_table(params, device)
    write_table(df, meta, out, space)
    return out


def _versions(backend: str) -> dict:
    import torch

    out = {"torch": torch.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out
