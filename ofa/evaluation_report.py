"""The evaluate step's outputs: `reports/evaluate.json` (accuracies by subnet name, so DVC can
show and diff them), its markdown summary and the training curves image. Kept apart from
`ofa.evaluate` (measuring subnets), which training imports and this step's plotting must not
make training depend on.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ofa import paths
from ofa.config import Params
from ofa.errors import OFAError
from ofa.curves import plot_training
from ofa.evaluate import evaluate_checkpoint
from ofa.publish import publish_files


def run_evaluate(params: Params, checkpoint: Path, extra: list[str], splits: tuple[str, ...],
                 output: Path, show_progress: bool = True, phase: str | None = None) -> list[dict]:
    """Evaluate (as evaluate_checkpoint) and write `output` (JSON) and its .md summary, whose
    training table lists the phases that led to `phase` (default: the last shrinking phase),
    not an ablation that branched off."""
    reports = training_reports(params, phase)  # checked before the long evaluation
    rows = evaluate_checkpoint(params, checkpoint, extra, splits, show_progress)
    output = Path(output)
    record = json.dumps(
        {"checkpoint": str(checkpoint),
         "train_minutes": round(sum(t["train_seconds"] for t in reports) / 60, 2),
         # by name (min_r24, ...) so DVC can show and diff each figure; rows keep the details
         **{f"{s}_acc": {f"{r['name']}_r{r['resolution']}": r[f"{s}_acc"] for r in rows}
            for s in splits},
         "rows": rows}, indent=2)
    summary = markdown_summary(checkpoint, rows, splits, reports)
    writes = {output: lambda p: p.write_text(record)}
    if reports:
        curves = paths.training_curves(params)
        writes[curves] = lambda p: plot_training(reports, p)
        summary += f"\n![training curves]({os.path.relpath(curves, output.parent)})\n"
    writes[output.with_suffix(".md")] = lambda p: p.write_text(summary)
    publish_files(writes)  # the JSON, its summary and the curves together, or none
    return rows


def training_reports(params: Params, phase: str | None = None) -> list[dict]:
    """The training reports (where written) of the phases that led to `phase` (default: the
    last shrinking phase), in order; an ablation that branched off is not among them."""
    names = params.chain(phase) if phase else params.shrinking_order()
    return [read_train_report(p) for name in names
            if (p := paths.train_report(params, name)).is_file()]


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


def markdown_summary(checkpoint: Path, rows: list[dict], splits: tuple[str, ...],
                     train_reports: list[dict]) -> str:
    """A human-readable record of a run: per-phase training time and per-subnet accuracy."""
    lines = [f"# Evaluation of `{checkpoint}`", "",
             "Top-1 after BN recalibration, per subnet and input resolution.", "",
             "| subnet | resolution | MMACs | params | " + " | ".join(f"{s} top-1 %" for s in splits) + " |",
             "|---|---|---|---|" + "---|" * len(splits)]
    for r in rows:
        accs = " | ".join(f"{100 * r[f'{s}_acc']:.2f}" for s in splits)
        lines.append(f"| {r['name']} `{r['config']}` | {r['resolution']} | {r['macs'] / 1e6:.2f} | "
                     f"{r['params']} | {accs} |")
    if train_reports:
        total = sum(t["train_seconds"] for t in train_reports)
        lines += ["", "## Training", "", "| phase | epochs | seconds | last val top-1 (max / min subnet) |",
                  "|---|---|---|---|"]
        for t in train_reports:
            mn = t.get("val_acc_min")
            lines.append(f"| {t['phase']} | {t['epochs']} | {t['train_seconds']:.0f} | "
                         f"{100 * t.get('val_acc_max', float('nan')):.2f} / "
                         f"{'-' if mn is None else f'{100 * mn:.2f}'} |")
        lines.append(f"| all | | {total:.0f} ({total / 60:.1f} min) | |")
    return "\n".join(lines) + "\n"
