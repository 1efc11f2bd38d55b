"""The evaluate step's outputs: `reports/evaluate.json` (accuracies by subnet name, so DVC can
show and diff them), its markdown summary and the training curves image. Kept apart from
`ofa.evaluate` (measuring subnets), which training imports and this step's plotting must not
make training depend on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ofa import paths
from ofa.checkpoint import atomic_write_text
from ofa.config import Params
from ofa.curves import plot_training
from ofa.evaluate import evaluate_checkpoint


def run_evaluate(params: Params, checkpoint: Path, extra: list[str], splits: tuple[str, ...],
                 output: Path, show_progress: bool = True, phase: str | None = None) -> list[dict]:
    """Evaluate (as evaluate_checkpoint) and write `output` (JSON) and its .md summary, whose
    training table lists the phases that led to `phase` (default: the last shrinking phase),
    not an ablation that branched off."""
    rows = evaluate_checkpoint(params, checkpoint, extra, splits, show_progress)
    output = Path(output)
    reports = training_reports(params, phase)
    atomic_write_text(output, json.dumps(
        {"checkpoint": str(checkpoint),
         "train_minutes": round(sum(t["train_seconds"] for t in reports) / 60, 2),
         # by name (min_r24, ...) so DVC can show and diff each figure; rows keep the details
         **{f"{s}_acc": {f"{r['name']}_r{r['resolution']}": r[f"{s}_acc"] for r in rows}
            for s in splits},
         "rows": rows}, indent=2))
    summary = markdown_summary(checkpoint, rows, splits, reports)
    if reports:
        curves = paths.training_curves(params)
        plot_training(reports, curves)
        summary += f"\n![training curves]({os.path.relpath(curves, output.parent)})\n"
    atomic_write_text(output.with_suffix(".md"), summary)
    return rows


def training_reports(params: Params, phase: str | None = None) -> list[dict]:
    """The training reports (where written) of the phases that led to `phase` (default: the
    last shrinking phase), in order; an ablation that branched off is not among them."""
    names = params.chain(phase) if phase else params.shrinking_order()
    return [json.loads(p.read_text()) for name in names
            if (p := paths.train_report(params, name)).is_file()]


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
