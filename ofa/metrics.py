"""The headline metrics (`reports/metrics.json`): the few figures that `dvc exp show` and
`dvc metrics diff` compare across experiments. The detailed JSON files (evaluation rows,
training histories, tables' checks) stay plain outputs, so the default views stay readable.
"""

from __future__ import annotations

import json

from ofa.report import DeviceReport
from ofa.verify import meets


def headline(evaluation: dict, reports: list[DeviceReport]) -> dict:
    """Best test top-1 of the min/mid/max subnets (over resolutions), training minutes, and per
    device (a top-level key) its shipped subnets, keyed by the constraint as written, and how
    many met the limit."""
    best: dict[str, float] = {}
    for r in evaluation.get("rows", []):
        if r["name"] in ("min", "mid", "max") and "test_acc" in r:
            best[r["name"]] = max(best.get(r["name"], 0.0), r["test_acc"])
    out: dict = {"test_acc": {k: best[k] for k in ("max", "mid", "min") if k in best}}
    if "train_minutes" in evaluation:
        out["train_minutes"] = evaluation["train_minutes"]
    for rep in reports:  # one top-level key per device: short column names in `dvc exp show`
        met = [meets(r) for r in rep.rows]
        out[rep.device] = {
            "met_limit": sum(met), "shipped": len(met),
            "mean_test_acc": round(sum(r["test_acc"] for r in rep.rows) / max(1, len(rep.rows)), 4),
            **{r["constraint"]: {"test_acc": r["test_acc"],
                                 "latency_ms": round(r["verified_latency_ms"], 4),
                                 "raw_latency_ms": round(r["measured_latency_ms"], 4)}
               for r in rep.rows}}
    return out


def headline_text(evaluation: dict, reports: list[DeviceReport]) -> str:
    return json.dumps(headline(evaluation, reports), indent=2)
