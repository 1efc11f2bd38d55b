"""Latency tables on disk: read, write and register them, held to one contract.

A table is a parquet file, one row per layer key, with metadata: the format version, the
search space's fingerprint, the device entry and the per-network `overhead_ms` (see
docs/latency_table.md). Every table written, read or imported passes the same checks
(ofa.contracts: pandera rows, the overhead and the fitted terms in range), so a hand-edited
or foreign table is one clear error wherever it enters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ofa import paths
from ofa.checkpoint import atomic_write
from ofa.config import Params, to_dict
from ofa.contracts import (OVERHEAD_KEY, LatencyTable, OverheadBounds, check_fitted_terms,
                           check_latency_terms, check_overhead, validate)
from ofa.errors import OFAError
from ofa.latency.layers import (LAYER_FIELDS, enumerate_layers, head_layer, layer_cost,
                                slot_layer, stem_layer, subnet_layers)
from ofa.space import SearchSpace

TABLE_FORMAT = "ofa-latency/1"
REQUIRED = ("key", "median_ms")


def largest_layer_sum(space: SearchSpace, entries: dict[str, float]) -> float | None:
    """The largest sum of entries any subnet of the space runs (ms; entries are positive, so
    every slot active, each at its costliest kernel and expand, at the costliest resolution):
    the overhead's upper bound. None where an entry is missing or not a number (that table
    is refused for it elsewhere)."""
    c = space.cfg
    try:
        sums = [float(entries[stem_layer(space, r).key]) + float(entries[head_layer(space, r).key])
                + sum(max(float(entries[slot_layer(space, slot, k, e, r).key])
                          for k in c.kernel_choices for e in c.expand_choices)
                      for slot in range(space.n_slots)) for r in c.resolutions]
    except (KeyError, TypeError, ValueError):
        return None
    best = max(sums)
    return best if np.isfinite(best) else None


def overhead_bounds(space: SearchSpace, entries: dict[str, float]) -> OverheadBounds | None:
    """(lowest, highest) overhead in ms a table with these entries may carry: minus 95%
    of the smallest subnet's layer sum, and the largest subnet's layer sum (the contract's
    range, ofa.contracts.check_overhead). None where an entry is missing or not a number."""
    top = largest_layer_sum(space, entries)
    try:
        low = sum(float(entries[s.key]) for s in subnet_layers(space, space.min_config()))
    except (KeyError, TypeError, ValueError):
        return None
    if top is None or not np.isfinite(low):
        return None
    return -0.95 * low, top


def write_table(df, meta: dict, path: Path, space: SearchSpace) -> None:
    """Write a table atomically after the contract's checks (rows and metadata terms)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    what = f"latency table {path}"
    df = validate(df, LatencyTable, what)
    check_latency_terms(meta, what, overhead_bounds(space, dict(zip(df["key"], df["median_ms"]))))
    tbl = pa.Table.from_pandas(df, preserve_index=False)
    tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}),
                                       b"ofa": json.dumps(meta).encode()})
    atomic_write(path, lambda p: pq.write_table(tbl, p))


def _row(i) -> str:
    return f"row {i + 1}"


def _csv_line(i) -> str:
    return f"line {i + 2}"   # the header is line 1


def _numeric(df, column: str, where: str, label, expected: str):
    """The column as floats; text (or anything not a number) is one OFAError naming the
    column, the layer and its row."""
    import pandas as pd

    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").astype(float)
    text = values.isna() & raw.notna()
    if text.any():
        i = text[text].index[0]
        raise OFAError(f"{where}: {column} of {_layer(df, i, label)} is not a number "
                       f"({raw[i]!r}); expected {expected}")
    return values


def _layer(df, i, label) -> str:
    return f"layer {df['key'][i]} ({label(i)})" if df["key"][i] != OVERHEAD_KEY \
        else f"the {OVERHEAD_KEY} row ({label(i)})"


def _validate_timings(df, where: str, label=_row):
    """The table with median_ms as floats, or one OFAError naming the column, the layer and
    its row: every median_ms a finite number > 0 (ms), each key once."""
    import pandas as pd

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise OFAError(f"{where} lacks the column {missing[0]!r}")
    ms = _numeric(df, "median_ms", where, label, "a finite number > 0 (ms)")
    bad = ~(np.isfinite(ms) & (ms > 0))
    if bad.any():
        i = bad[bad].index[0]
        v = ms[i]
        why = ("is empty (NaN)" if np.isnan(v) else
               f"is {v}, non-finite" if not np.isfinite(v) else f"is {v:g}, non-positive")
        raise OFAError(f"{where}: median_ms of {_layer(df, i, label)} {why}; expected a finite "
                       "number > 0 (ms)")
    for column, expected in (("raw_median_ms", "a number > 0 (ms) or empty"),
                             ("spread_ms", "a number >= 0 (ms) or empty"),
                             ("count", "a whole number >= 0 or empty")):
        if column in df.columns and not pd.api.types.is_numeric_dtype(df[column]):   # text
            df = df.assign(**{column: _numeric(df, column, where, label, expected)})
    if df["key"].duplicated().any():
        raise OFAError(f"{where} lists the layer {df['key'][df['key'].duplicated()].iloc[0]} twice")
    return df.assign(median_ms=ms)


def _overhead(df, meta: dict, where: str, label):
    """(the layer rows, the overhead as given, where): a row keyed `overhead` (its median_ms)
    or the metadata's `overhead_ms`, exactly once (0 where neither gives it); its value is
    checked once the layers are (`check_overhead` with their largest subnet's sum)."""
    is_over = df["key"] == OVERHEAD_KEY
    rows = list(df.index[is_over])
    sources = [f"median_ms of the {OVERHEAD_KEY} row ({label(i)})" for i in rows]
    if "overhead_ms" in meta:
        sources.append("overhead_ms in the metadata")
    if len(sources) > 1:
        raise OFAError(f"{where}: the overhead is given {len(sources)} times ("
                       f"{', '.join(sources)}); expected exactly once")
    if rows:
        value = _numeric(df.loc[rows], "median_ms", where, label,
                         "a finite number (ms)")[rows[0]]
    elif "overhead_ms" in meta:
        value = meta["overhead_ms"]
    else:
        value, sources = 0.0, ["the overhead (0: not given)"]
    return df[~is_over], value, sources[0]


def _load_json(raw: bytes, path: Path) -> dict:
    def once(pairs):
        seen: dict = {}
        for k, v in pairs:
            if k in seen:
                raise OFAError(f"latency table {path}: its metadata gives {k} twice; expected "
                               "exactly once")
            seen[k] = v
        return seen

    return json.loads(raw, object_pairs_hook=once) if raw else {}


def _read_parquet(path: Path, own: bool):
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise OFAError(f"latency table {path} does not exist: run `ofa-cli latency --device "
                       f"{path.stem}` (or register a table measured there with `table:`)")
    try:
        tbl = pq.read_table(path)
        raw = (tbl.schema.metadata or {}).get(b"ofa")
        df = tbl.to_pandas()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise OFAError(f"latency table {path} is not a parquet file ({exc})") from None
    try:
        meta = _load_json(raw, path)
    except ValueError as exc:   # json's errors (an OFAError is no ValueError)
        raise OFAError(f"latency table {path} is not a parquet file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") not in ((TABLE_FORMAT,) if own
                                                                else (None, TABLE_FORMAT)):
        raise OFAError(f"latency table {path} has format "
                       f"{meta.get('format') if isinstance(meta, dict) else meta!r}, expected "
                       f"{TABLE_FORMAT!r} (build it with `ofa-cli latency`)")
    if "key" in df.columns:
        df = df.assign(key=df["key"].astype(str))
    return df, meta


def read_table(path: Path, own: bool = True, space: SearchSpace | None = None):
    """(DataFrame, metadata) of a table; a missing, corrupt or foreign file is one clear error.
    `own`: a device's table written here, which must carry the format, the space's
    fingerprint and its overhead in the metadata (a table to import may be a bare parquet
    file). With `space`: a table of another space is refused and the overhead bounded by the
    space's smallest and largest subnets (`overhead_bounds`)."""
    path = Path(path)
    what = f"latency table {path}"
    df, meta = _read_parquet(path, own)
    if "key" not in df.columns:
        raise OFAError(f"{what} lacks the column 'key'")
    if own and (df["key"] == OVERHEAD_KEY).any():
        i = df.index[df["key"] == OVERHEAD_KEY][0]
        raise OFAError(f"{what} has a row keyed {OVERHEAD_KEY!r} ({_row(i)}); expected the "
                       "overhead exactly once, as overhead_ms in its metadata")
    df = _validate_timings(df, what)
    if own:
        df = validate(df, LatencyTable, what)
    if space is not None:
        check_space(meta, space, what)
    if own:
        bounds = None if space is None else overhead_bounds(
            space, dict(zip(df["key"], df["median_ms"])))
        check_latency_terms(meta, what, bounds)
    return df, meta


def check_space(meta: dict, space: SearchSpace, where: str) -> None:
    """Refuse a table measured for another search space (it would price the wrong layers)."""
    if meta.get("space") != space.fingerprint() and (meta.get("space") or meta.get("format")):
        raise OFAError(f"{where} was measured for another search space (fingerprint "
                       f"{meta.get('space')}, this one is {space.fingerprint()}); rebuild it "
                       "with `ofa-cli latency`")


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
        label = _csv_line
    else:
        df, meta = _read_parquet(source, own=False)
        for column in REQUIRED:
            if column not in df.columns:
                raise OFAError(f"{where} lacks the column {column!r}")
        check_space(meta, space, where)
        check_fitted_terms(meta, where)
        label = _row
    df = df.assign(key=df["key"].astype(str))
    df, overhead, field = _overhead(df, meta, where, label)
    df = _validate_timings(df, where, label).reset_index(drop=True)
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
    # the overhead's bounds need every layer (the smallest and largest subnets' layer sums)
    overhead = check_overhead(overhead, where, field,
                              overhead_bounds(space, {r["key"]: r["median_ms"] for r in rows}))
    full = {"format": TABLE_FORMAT, "space": space.fingerprint(), "device": device,
            "device_entry": to_dict(params.device(device)), "overhead_ms": overhead,
            "imported_from": str(source), "source_meta": {k: v for k, v in meta.items()
                                                          if k not in ("calibration",)}}
    out = paths.latency_table(params, device)
    write_table(pd.DataFrame(rows), full, out, space)
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
