"""The evaluate step's outputs: `reports/evaluate.json` (accuracies by subnet name, so DVC can
show and diff them) and its markdown summary; the training summary (`reports/training.json`,
its table and the curves image: training/dvc.yaml's `train-report`). Kept apart from
`ofa.evaluate` (measuring subnets), which training imports and this step's plotting must not
make training depend on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ofa import paths
from ofa.config import Params
from ofa.evaluate import evaluate_checkpoint
from ofa.provenance import Provenance, minutes, read_train_report, training_table
from ofa.publish import publish_files


def run_evaluate(params: Params, checkpoint: Path, extra: list[str], splits: tuple[str, ...],
                 output: Path, show_progress: bool = True, phase: str | None = None,
                 origin: Provenance | None = None) -> list[dict]:
    """Evaluate (as evaluate_checkpoint) and write `output` (JSON) and its .md summary. Its
    training table lists `origin`'s phases (the supernet's record: the pipeline's stage), else
    the phases that led to `phase` (default: the last shrinking phase), not an ablation that
    branched off; an imported supernet's record says where it came from instead."""
    reports = origin.reports if origin is not None else training_reports(params, phase)
    imported = origin.imported if origin is not None else None
    rows = evaluate_checkpoint(params, checkpoint, extra, splits, show_progress)
    output = Path(output)
    record = json.dumps(
        {"checkpoint": str(checkpoint),
         **({"train_minutes": minutes(reports)} if reports else {}),
         **({"imported": imported} if imported else {}),
         # by name (min_r24, ...) so DVC can show and diff each figure; rows keep the details
         **{f"{s}_acc": {f"{r['name']}_r{r['resolution']}": r[f"{s}_acc"] for r in rows}
            for s in splits},
         "rows": rows}, indent=2)
    summary = markdown_summary(checkpoint, rows, splits, reports, imported)
    if reports:
        curves = paths.training_curves(params)  # drawn by `ofa-cli train-report`
        summary += f"\n![training curves]({os.path.relpath(curves, output.parent)})\n"
    publish_files({output: lambda p: p.write_text(record),
                   output.with_suffix(".md"): lambda p: p.write_text(summary)})
    return rows


def training_reports(params: Params, phase: str | None = None) -> list[dict]:
    """The training reports (where written) of the phases that led to `phase` (default: the
    last shrinking phase), in order; an ablation that branched off is not among them."""
    names = params.chain(phase) if phase else params.shrinking_order()
    return [read_train_report(p) for name in names
            if (p := paths.train_report(params, name)).is_file()]


def markdown_summary(checkpoint: Path, rows: list[dict], splits: tuple[str, ...],
                     train_reports: list[dict], imported: dict | None = None) -> str:
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
        lines += ["", "## Training", "", *training_table(train_reports)]
    if imported:
        lines += ["", "## Supernet", "", f"Imported, not trained here: {imported.get('source')}, "
                  f"width_mult {imported.get('width_mult')}, from `{imported.get('file')}` "
                  f"(sha256 {str(imported.get('sha256'))[:16]})."]
    return "\n".join(lines) + "\n"
