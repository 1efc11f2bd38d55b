"""Great Expectations gates between steps: raw data, accuracy dataset, latency tables.

Each gate runs an expectation suite in an ephemeral GX context (no sockets), writes the result
to `reports/validation/<name>.json` and GX Data Docs (`<name>/index.html`), and stops the step
with one message naming the failed expectation. GX is imported only here (it is slow).
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
from pathlib import Path

import pandas as pd

from ofa import paths
from ofa.checkpoint import atomic_write_text, publish_dir, staging_dir
from ofa.contracts import (INPUT_MS_PER_M_RANGE, MAX_TIMING_MS, OVERHEAD_KEY, SCALE_RANGE,
                           overhead_range)
from ofa.data import load_dataset
from ofa.data_folder import FolderSplit
from ofa.errors import OFAError
from ofa.latency import read_table
from ofa.latency.layers import enumerate_layers
from ofa.latency.table_io import overhead_bounds
from ofa.space import SearchSpace

REPORT_DIR = Path("reports/validation")
MANIFEST = Path("data/manifest.json")
MIN_SPREAD_COUNT = 10  # written by the data gate; training depends on it
CHECK_IMAGES = 256  # an image folder: files per split the data gate decodes
CHECK_SEED = 0


def _expectations(spec: list[tuple[str, dict]]) -> list:
    import great_expectations as gx

    return [getattr(gx.expectations, name)(**kwargs) for name, kwargs in spec]


def run_suite(name: str, df: pd.DataFrame, spec: list[tuple[str, dict]],
              out_dir: Path = REPORT_DIR) -> dict:
    """Validate `df` against the expectations; write `<name>.json` and the Great Expectations
    Data Docs site `<name>/index.html` (suite and validation result pages); raise on the
    first failed expectation."""
    import great_expectations as gx

    out_dir = Path(out_dir)
    ctx = gx.get_context(mode="ephemeral")
    try:  # no tqdm bars in logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):
        pass
    docs = staging_dir(out_dir / name)
    try:
        ctx.add_data_docs_site(site_name="ofa", site_config={
            "class_name": "SiteBuilder", "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(docs.resolve())}})
        batch_def = ctx.data_sources.add_pandas(f"ofa-{name}").add_dataframe_asset(name) \
            .add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
        for exp in _expectations(spec):
            suite.add_expectation(exp)
        check = ctx.validation_definitions.add(
            gx.ValidationDefinition(data=batch_def, suite=suite, name=name))
        result = check.run(batch_parameters={"dataframe": df})
        ctx.build_data_docs(site_names=["ofa"])
        publish_dir(docs, out_dir / name)
    finally:
        shutil.rmtree(docs, ignore_errors=True)
    rows = []
    for r in result.results:
        cfg = r.expectation_config
        rows.append({"expectation": cfg.type, "kwargs": {k: v for k, v in cfg.kwargs.items()
                                                          if k != "batch_id"},
                     "success": bool(r.success), "observed": _observed(r.result)})
    summary = {"suite": name, "success": bool(result.success), "rows": len(df), "results": rows}
    atomic_write_text(out_dir / f"{name}.json", json.dumps(summary, indent=2, default=str))
    atomic_write_text(out_dir / f"{name}.html", results_page(summary))
    failed = [r for r in rows if not r["success"]]
    if failed:
        f = failed[0]
        raise OFAError(f"validation gate '{name}' failed: {f['expectation']} {f['kwargs']} "
                       f"(observed {f['observed']!r}); see {out_dir / f'{name}.html'}")
    return summary


def results_page(summary: dict) -> str:
    """The suite's results as one self-contained HTML page (no scripts, no remote styles): the
    Data Docs index loads jQuery and bootstrap-table from CDNs and is empty offline."""
    def cell(v) -> str:
        return html.escape(v if isinstance(v, str) else json.dumps(v, default=str))

    status = "passed" if summary["success"] else "FAILED"
    body = "".join(
        f"<tr class='{'ok' if r['success'] else 'bad'}'><td>{cell(r['expectation'])}</td>"
        f"<td><code>{cell(r['kwargs'])}</code></td><td>{'yes' if r['success'] else 'NO'}</td>"
        f"<td><code>{cell(r['observed'])}</code></td></tr>" for r in summary["results"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{cell(summary['suite'])}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
            "tr.bad{background:#fdd}code{white-space:pre-wrap}</style></head><body>"
            f"<h1>Validation '{cell(summary['suite'])}': {status}</h1>"
            f"<p>{summary['rows']} rows, {len(summary['results'])} expectations "
            "(Great Expectations; the full Data Docs site is in the folder of the same name).</p>"
            "<table><tr><th>expectation</th><th>arguments</th><th>passed</th><th>observed</th>"
            f"</tr>{body}</table></body></html>\n")


def _observed(result: dict):
    if result.get("observed_value") is not None:
        return result["observed_value"]
    if result.get("unexpected_count"):
        return (f"{result['unexpected_count']} unexpected, e.g. "
                f"{list(result.get('partial_unexpected_list') or [])[:3]}")
    return None


def validate_acc_dataset(df: pd.DataFrame, min_config: str, max_config: str,
                         out_dir: Path = REPORT_DIR) -> dict:
    """Accuracies in [0, 1], no duplicate configs, min and max present, spread not degenerate."""
    return run_suite("acc_dataset", df, [
        ("ExpectColumnValuesToBeBetween", {"column": "accuracy", "min_value": 0.0, "max_value": 1.0}),
        ("ExpectColumnValuesToBeUnique", {"column": "config"}),
        ("ExpectColumnDistinctValuesToContainSet", {"column": "config",
                                                    "value_set": [min_config, max_config]}),
        ("ExpectColumnStdevToBeBetween", {"column": "accuracy", "min_value": 1e-4}),
    ], out_dir)


def _term(value) -> float:
    """A metadata term as a float column value; anything not a number becomes NaN, which the
    suite's not-null expectation then names."""
    if isinstance(value, bool):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def validate_latency_table(df: pd.DataFrame, needed_keys: list[str], device: str,
                           out_dir: Path = REPORT_DIR, meta: dict | None = None,
                           overhead_bounds_ms: tuple[float, float] | None = None) -> dict:
    """Positive finite timings, every needed layer present, spread within bounds (where at
    least MIN_SPREAD_COUNT timings back the spread: p90-p10 of 3 timings is just noise).
    With the table's metadata `meta`, its terms too, by the contract's ranges
    (ofa.contracts): the overhead given exactly once (in the metadata, no row keyed
    `overhead`), finite, within `overhead_bounds_ms` (ofa.contracts.overhead_range: from minus
    95% of the smallest subnet's layer sum to the largest subnet's; else the cap on any
    timing), every fitted scale in SCALE_RANGE and the input term in
    INPUT_MS_PER_M_RANGE. Each term is a constant column, so the Data Docs show its value."""
    df = df.assign(median_ms=pd.to_numeric(df["median_ms"], errors="coerce"))  # text: null
    spread_ratio = (df["spread_ms"] / df["median_ms"]) if "spread_ms" in df else None
    if spread_ratio is not None and "count" in df:
        spread_ratio = spread_ratio.where(df["count"] >= MIN_SPREAD_COUNT)
    frame = df.assign(spread_ratio=spread_ratio) if spread_ratio is not None else df
    spec = [
        ("ExpectColumnValuesToNotBeNull", {"column": "median_ms"}),
        ("ExpectColumnValuesToBeBetween", {"column": "median_ms", "min_value": 0.0,
                                           "max_value": MAX_TIMING_MS, "strict_min": True}),
        ("ExpectColumnValuesToBeUnique", {"column": "key"}),
        ("ExpectColumnDistinctValuesToContainSet", {"column": "key", "value_set": needed_keys}),
    ]
    if spread_ratio is not None:
        spec.append(("ExpectColumnValuesToBeBetween", {"column": "spread_ratio", "min_value": 0.0,
                                                       "max_value": 5.0, "mostly": 0.95}))
    if meta is not None:
        lo_ms, hi_ms, _ = overhead_range(overhead_bounds_ms)
        terms = {"overhead_given": int("overhead_ms" in meta)
                 + int((df["key"].astype(str) == OVERHEAD_KEY).sum()),
                 "overhead_ms": _term(meta.get("overhead_ms"))}
        spec += [
            ("ExpectColumnValuesToBeInSet", {"column": "overhead_given", "value_set": [1]}),
            ("ExpectColumnValuesToNotBeNull", {"column": "overhead_ms"}),
            ("ExpectColumnValuesToBeBetween", {"column": "overhead_ms", "min_value": lo_ms,
                                               "max_value": hi_ms}),
        ]
        scales = meta.get("scales")
        if scales is not None:
            lo, hi = SCALE_RANGE
            by_column = ({f"scales[{g}]": v for g, v in scales.items()}
                         if isinstance(scales, dict) and scales else {"scales": None})
            for col, value in by_column.items():
                terms[col] = _term(value)
                spec += [("ExpectColumnValuesToNotBeNull", {"column": col}),
                         ("ExpectColumnValuesToBeBetween", {"column": col, "min_value": lo,
                                                            "max_value": hi})]
        if "input_ms_per_m" in meta:
            lo, hi = INPUT_MS_PER_M_RANGE
            terms["input_ms_per_m"] = _term(meta["input_ms_per_m"])
            spec += [("ExpectColumnValuesToNotBeNull", {"column": "input_ms_per_m"}),
                     ("ExpectColumnValuesToBeBetween", {"column": "input_ms_per_m",
                                                        "min_value": lo, "max_value": hi})]
        frame = frame.assign(**terms)
    return run_suite(f"latency_{device}", frame, spec, out_dir)


def _split_frame(split: str, s) -> pd.DataFrame:
    """One row per image. In memory: every image's pixel range, shape and content digest. A
    folder (bounded work): every file's label and path digest, and pixel range, shape and
    readability for a seeded sample of CHECK_IMAGES files only (the other rows hold nulls,
    which the expectations skip)."""
    if not isinstance(s, FolderSplit):
        flat = s.images.flatten(1)
        return pd.DataFrame({
            "split": split, "label": s.labels.numpy(), "pixel_min": flat.min(1).values.numpy(),
            "pixel_max": flat.max(1).values.numpy(), "shape": [str(tuple(s.images.shape[1:]))] * len(s),
            "digest": [hash(bytes(x)) for x in flat.numpy()]})
    return pd.DataFrame({"split": split, "label": s.labels.numpy(),
                         "digest": [hash(bytes(f)) for f in s.files.tolist()],
                         **s.sample_columns(CHECK_IMAGES, CHECK_SEED)})


def validate_raw_data(data, out_dir: Path = REPORT_DIR, num_classes: int | None = None,
                      val_size: int | None = None) -> dict:
    """Label set (inside the model's `num_classes`), pixel range, image shape, class balance,
    split sizes (validation exactly `val_size`, none empty), train/validation disjoint; for an
    image folder also a readable sample (`_split_frame`: what is checked there)."""
    import numpy as np

    n_classes = data.num_classes
    num_classes = num_classes or n_classes
    sizes = {split: len(getattr(data, split)) for split in ("train", "val", "test")}
    df = pd.concat([_split_frame(split, getattr(data, split)) for split in ("train", "val", "test")],
                   ignore_index=True)
    counts = df[df["split"] == "train"]["label"].value_counts()
    train_keys = set(df.loc[df["split"] == "train", "digest"])
    overlap = int(np.sum([d in train_keys for d in df.loc[df["split"] == "val", "digest"]]))
    df["val_in_train"] = overlap
    df["split_size"] = df["split"].map(sizes)
    df["val_size"] = sizes["val"]
    df["class_share_ratio"] = float(counts.max() / max(counts.min(), 1))
    shape = str(tuple(data.train.image_shape))
    readable = [("ExpectColumnValuesToBeInSet", {"column": "read_error", "value_set": [""]})] \
        if "read_error" in df else []
    return run_suite("raw_data", df, readable + [
        ("ExpectColumnDistinctValuesToEqualSet", {"column": "label",
                                                  "value_set": list(range(n_classes))}),
        ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": list(range(num_classes))}),
        ("ExpectColumnValuesToBeBetween", {"column": "split_size", "min_value": 1}),
        ("ExpectColumnValuesToBeInSet", {"column": "val_size",
                                         "value_set": [val_size or sizes["val"]]}),
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_min", "min_value": 0, "max_value": 255}),
        ("ExpectColumnValuesToBeBetween", {"column": "pixel_max", "min_value": 0, "max_value": 255}),
        ("ExpectColumnValuesToBeInSet", {"column": "shape", "value_set": [shape]}),
        ("ExpectColumnValuesToBeBetween", {"column": "class_share_ratio", "min_value": 1.0,
                                           "max_value": 3.0}),
        ("ExpectColumnValuesToBeInSet", {"column": "val_in_train", "value_set": [0]}),
        ("ExpectColumnDistinctValuesToEqualSet", {"column": "split",
                                                  "value_set": ["train", "val", "test"]}),
    ], out_dir)


def data_manifest(data) -> dict:
    """Sizes and content digests of the splits the gate passed: what training depends on in
    DVC, so a change of the gate's own checks never retrains, a change of the data always does.
    An image folder's digest covers its file list (paths, sizes, mtimes, labels), not pixels."""
    out = {}
    for split in ("train", "val", "test"):
        s = getattr(data, split)
        if isinstance(s, FolderSplit):
            out[split] = {"images": len(s), "shape": list(s.image_shape), "sha256": s.digest(),
                          "sha256_of": "relative paths, sizes, mtimes and labels of the files"}
            continue
        h = hashlib.sha256(s.images.contiguous().numpy().tobytes())
        h.update(s.labels.contiguous().numpy().tobytes())
        out[split] = {"images": len(s), "shape": list(s.images.shape[1:]), "sha256": h.hexdigest()}
    return out


def gate(params, what: str, device: str | None = None, out_dir: Path = REPORT_DIR,
         manifest: Path = MANIFEST) -> dict:
    """Run one gate on the pipeline's artifact: 'data' (which also writes the data manifest
    once it passes), 'acc-dataset' or 'latency'."""
    if what == "data":
        data = load_dataset(params.data)  # unchecked: the suite reports what does not fit
        res = validate_raw_data(data, out_dir, params.space.num_classes, params.data.val_size)
        atomic_write_text(Path(manifest), json.dumps(data_manifest(data), indent=2))
        return res
    if what == "acc-dataset":
        path = Path(params.predictor.dataset_path)
        if not path.is_file():
            raise OFAError(f"accuracy dataset {path} does not exist: run `ofa-cli acc-dataset`")
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            raise OFAError(f"accuracy dataset {path} is not a parquet file ({exc})") from None
        space = SearchSpace(params.space)
        return validate_acc_dataset(df, str(space.canonical(space.min_config())),
                                    str(space.max_config()), out_dir)
    if what == "latency":
        if device is None:
            raise OFAError("the latency gate needs --device")
        params.device(device)
        space = SearchSpace(params.space)
        # read_table holds the table to the same contract (pandera rows, metadata terms) and
        # stops at its first violation; the suite records every check in the Data Docs
        df, meta = read_table(paths.latency_table(params, device), space=space)
        layers = enumerate_layers(space)
        bounds = overhead_bounds(space, dict(zip(df["key"], df["median_ms"])))
        return validate_latency_table(df, [s.key for s in layers], device, out_dir, meta, bounds)
    raise OFAError(f"unknown gate {what!r} (use data, acc-dataset, latency)")
