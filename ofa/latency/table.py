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

import json
import random
from pathlib import Path

import numpy as np

from ofa import paths
from ofa.checkpoint import atomic_write
from ofa.config import Params, to_dict
from ofa.contracts import LatencyTable, validate
from ofa.errors import OFAError
from ofa.latency.calibrate import calibration_group, fit_table_calibration, input_values
from ofa.latency.layers import (LAYER_FIELDS, enumerate_layers, input_shape, layer_cost,
                                layer_modules, subnet_layers)
from ofa.latency.measure import channels_last, summarize, time_modules
from ofa.nn.supernet import OFAMobileNetV3
from ofa.progress import make_progress
from ofa.seeding import torch_seed
from ofa.space import SearchSpace, SubnetConfig

TABLE_FORMAT = "ofa-latency/1"
REQUIRED = ("key", "median_ms")
CALIBRATION_SUBNETS = 24


def calibration_configs(space: SearchSpace, seed: int, n: int = CALIBRATION_SUBNETS) -> list[SubnetConfig]:
    """Smallest, largest and random subnets; a seed stream of their own, apart from the check's."""
    rng = random.Random(f"latency-calibration:{seed}")
    return [space.min_config(), space.max_config()] + [space.sample(rng) for _ in range(n - 2)]


def _write(df, meta: dict, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = validate(df, LatencyTable, f"latency table {path}")
    tbl = pa.Table.from_pandas(df, preserve_index=False)
    tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}),
                                       b"ofa": json.dumps(meta).encode()})
    atomic_write(path, lambda p: pq.write_table(tbl, p))


def _validate_timings(df, where: str) -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise OFAError(f"{where} lacks the column {missing[0]!r}")
    ms = np.asarray(df["median_ms"], dtype=float)
    if not (np.all(np.isfinite(ms)) and np.all(ms > 0)):
        bad = df["key"].iloc[int(np.argmax(~(np.isfinite(ms) & (ms > 0))))]
        raise OFAError(f"{where} has a non-positive or non-finite timing (layer {bad})")
    if df["key"].duplicated().any():
        raise OFAError(f"{where} lists the layer {df['key'][df['key'].duplicated()].iloc[0]} twice")


def read_table(path: Path, own: bool = True):
    """(DataFrame, metadata) of a table; a missing, corrupt or foreign file is one clear error.
    `own`: a device's table written here, which must carry the format and the space's
    fingerprint (a table to import may be a bare parquet file)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise OFAError(f"latency table {path} does not exist: run `ofa-cli latency --device "
                       f"{path.stem}` (or register a table measured there with `table:`)")
    try:
        tbl = pq.read_table(path)
        raw = (tbl.schema.metadata or {}).get(b"ofa")
        meta = json.loads(raw) if raw else {}
        df = tbl.to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow/json raise several types for bad files
        raise OFAError(f"latency table {path} is not a parquet file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in ((TABLE_FORMAT,) if own
                                                                else (None, TABLE_FORMAT)):
        raise OFAError(f"latency table {path} has format {meta.get('format')!r}, expected "
                       f"{TABLE_FORMAT!r} (build it with `ofa-cli latency`)")
    _validate_timings(df, f"latency table {path}")
    if own:
        df = validate(df, LatencyTable, f"latency table {path}")
    return df, meta


def check_space(meta: dict, space: SearchSpace, where: str) -> None:
    """Refuse a table measured for another search space (it would price the wrong layers)."""
    if meta.get("space") != space.fingerprint() and (meta.get("space") or meta.get("format")):
        raise OFAError(f"{where} was measured for another search space (fingerprint "
                       f"{meta.get('space')}, this one is {space.fingerprint()}); rebuild it "
                       "with `ofa-cli latency`")


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
    _write(df, meta, out)
    return out


def _versions(backend: str) -> dict:
    import torch

    out = {"torch": torch.__version__}
    if backend == "onnxruntime":
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    return out


def import_table(params: Params, device: str, source: Path) -> Path:
    """Register a table measured elsewhere: CSV or parquet with `key` and `median_ms` columns
    (an optional row keyed `overhead` holds the per-network term). Validated, completed with
    the layer fields, MACs and params, and written as the device's table."""
    import pandas as pd

    space = SearchSpace(params.space)
    where = f"devices.{device}.table: {source}"
    if not source.is_file():
        raise OFAError(f"{where} does not exist")
    if source.suffix.lower() == ".csv":
        try:
            df, meta = pd.read_csv(source), {}
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise OFAError(f"{where} is not a readable CSV ({exc})") from None
        if "key" not in df.columns or "median_ms" not in df.columns:
            raise OFAError(f"{where} needs the columns key and median_ms")
        df = df.assign(key=df["key"].astype(str))
        over = df[df["key"] == "overhead"]
        df = df[df["key"] != "overhead"].reset_index(drop=True)
        _validate_timings(df, where)
        overhead = float(over["median_ms"].iloc[0]) if len(over) else 0.0
    else:
        df, meta = read_table(source, own=False)
        check_space(meta, space, where)
        overhead = float(meta.get("overhead_ms", 0.0))
    if not np.isfinite(overhead):
        raise OFAError(f"{where} has a non-finite overhead")
    specs = enumerate_layers(space)
    got = df.set_index("key")
    lacking = [s.key for s in specs if s.key not in got.index]
    if lacking:
        raise OFAError(f"{where} lacks the layer {lacking[0]} ({len(lacking)} of {len(specs)} "
                       "layers missing; `ofa-cli latency-layers` lists them all)")
    rows = []
    for s in specs:
        macs, n_params = layer_cost(space, s)
        r = got.loc[s.key]
        rows.append(s.to_row() | {"macs": macs, "params": n_params,
                                  "median_ms": float(r["median_ms"]),
                                  "raw_median_ms": float(r.get("raw_median_ms", r["median_ms"])),
                                  "spread_ms": float(r.get("spread_ms", np.nan)),
                                  "count": int(np.nan_to_num(float(r.get("count", 0))))})
    full = {"format": TABLE_FORMAT, "space": space.fingerprint(), "device": device,
            "device_entry": to_dict(params.device(device)), "overhead_ms": overhead,
            "imported_from": str(source), "source_meta": {k: v for k, v in meta.items()
                                                          if k not in ("calibration",)}}
    out = paths.latency_table(params, device)
    _write(pd.DataFrame(rows), full, out)
    return out


def write_layer_list(space: SearchSpace, path: Path) -> Path:
    """The layers a device must time (key, fields, input shape per image), as CSV: the form to
    fill in with median_ms on a device that cannot run this code."""
    import pandas as pd

    rows = []
    for s in enumerate_layers(space):
        macs, n_params = layer_cost(space, s)
        rows.append({f: getattr(s, f) for f in LAYER_FIELDS} | {"key": s.key, "macs": macs,
                                                                "params": n_params})
    df = pd.DataFrame(rows)[["key", *LAYER_FIELDS, "macs", "params"]]
    atomic_write(Path(path), lambda p: df.to_csv(p, index=False))
    return Path(path)
