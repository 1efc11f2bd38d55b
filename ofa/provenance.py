"""Where the supernet in use came from (params `supernet`): trained here, summarized by
`ofa-cli train-report` (`reports/training.json`: each phase's time and last validation top-1,
the total minutes as a DVC metric, its table and the curves), or imported, described by the
record `ofa-cli import-official` writes beside the checkpoint. The evaluate stage depends on
that record, so `dvc repro` trains first exactly when the supernet is the trained one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ofa import paths
from ofa.config import Params
from ofa.curves import plot_training
from ofa.errors import OFAError
from ofa.publish import publish_files


@dataclass(frozen=True)
class Provenance:
    """A supernet's record: the training reports of its phases, or its import's details."""

    reports: list[dict]
    imported: dict | None = None


def write_training_summary(params: Params) -> Path:
    """Every phase of the shrinking order with its epochs, seconds and last validation top-1
    and the total minutes (JSON), the same as a markdown table beside it, and the curves."""
    names = params.shrinking_order()
    missing = [n for n in names if not paths.train_report(params, n).is_file()]
    if missing:
        raise OFAError(f"no training report of phase {missing[0]!r} "
                       f"({paths.train_report(params, missing[0])}): train it first (dvc repro)")
    reports = [read_train_report(paths.train_report(params, n)) for n in names]
    phases = {t["phase"]: {k: t[k] for k in ("epochs", "train_seconds", "val_acc_max",
                                             "val_acc_min") if t.get(k) is not None}
              for t in reports}
    output = paths.training_summary(params)
    curves = paths.training_curves(params)
    text = ("# Training\n\n" + "\n".join(training_table(reports))
            + f"\n\n![training curves]({os.path.relpath(curves, output.parent)})\n")
    record = {"train_minutes": minutes(reports), "phases": phases}
    publish_files({output: lambda p: p.write_text(json.dumps(record, indent=2)),
                   output.with_suffix(".md"): lambda p: p.write_text(text),
                   curves: lambda p: plot_training(reports, p)})
    return output


def write_import_record(checkpoint: Path, imported: dict) -> Path:
    """The record of an imported supernet, beside it (`<checkpoint>.json`)."""
    out = paths.import_record(checkpoint)
    publish_files({out: lambda p: p.write_text(json.dumps({"imported": imported}, indent=2))})
    return out


def read_provenance(params: Params) -> Provenance:
    """The record params name for the supernet (`supernet.record`), checked in one line."""
    path = paths.supernet_record(params)
    where = f"supernet.record {path}"
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        raise OFAError(f"{where} does not exist: train the supernet (dvc repro) or import one "
                       "(ofa-cli import-official writes its record beside it)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OFAError(f"{where} is unreadable ({exc})") from None
    if isinstance(rec, dict) and isinstance(rec.get("imported"), dict):
        return Provenance([], rec["imported"])
    phases = rec.get("phases") if isinstance(rec, dict) else None
    ok = isinstance(phases, dict) and phases and all(
        isinstance(v, dict) and _finite(v.get("train_seconds")) and isinstance(v.get("epochs"), int)
        for v in phases.values())
    if not ok:
        raise OFAError(f"{where} is neither a training summary (ofa-cli train-report: phases "
                       "with epochs and train_seconds) nor an import record (imported)")
    return Provenance([{"phase": name, **v} for name, v in phases.items()])


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_train_report(path: Path) -> dict:
    """A phase's training report, refused in one line when it is not what training writes."""
    try:
        rep = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OFAError(f"training report {path} is unreadable ({exc}); retrain its phase "
                       "or restore it (dvc checkout)") from None
    ok = (isinstance(rep, dict) and isinstance(rep.get("phase"), str)
          and isinstance(rep.get("train_seconds"), (int, float))
          and math.isfinite(rep["train_seconds"]) and isinstance(rep.get("history"), list)
          and all(isinstance(h, dict) and isinstance(h.get("epoch"), int)
                  and isinstance(h.get("train_loss"), (int, float)) for h in rep["history"]))
    if not ok:
        raise OFAError(f"training report {path} lacks its phase, train_seconds or per-epoch "
                       "history; retrain its phase or restore it (dvc checkout)")
    return rep


def minutes(reports: list[dict]) -> float:
    return round(sum(t["train_seconds"] for t in reports) / 60, 2)


def training_table(reports: list[dict]) -> list[str]:
    """Per phase: epochs, seconds and the last validation top-1 of its max and min subnets."""
    total = sum(t["train_seconds"] for t in reports)
    lines = ["| phase | epochs | seconds | last val top-1 (max / min subnet) |", "|---|---|---|---|"]
    for t in reports:
        mn = t.get("val_acc_min")
        lines.append(f"| {t['phase']} | {t['epochs']} | {t['train_seconds']:.0f} | "
                     f"{100 * t.get('val_acc_max', float('nan')):.2f} / "
                     f"{'-' if mn is None else f'{100 * mn:.2f}'} |")
    return lines + [f"| all | | {total:.0f} ({total / 60:.1f} min) | |"]
