"""Pareto reports: what specialization chose per device, measured, against uniform baselines.

Inputs are the export records (`models/<device>/export.json`: chosen subnets with measured
test accuracy and latency, plus the uniformly scaled baselines' measured latency), the
evaluation of min/mid/max subnets (`reports/evaluate.json`, their test accuracy) and the
accuracy dataset (sampled subnets, validation accuracy). Outputs: `reports/pareto.md`,
`reports/pareto.json` (every shipped subnet, keyed by the constraint as the user wrote it) and
`reports/pareto/<device>.png`; `ofa.metrics` condenses them into the headline metrics.
"""

from __future__ import annotations

import json
from typing import Callable
from dataclasses import dataclass
from pathlib import Path

from ofa.publish import publish_files
from ofa.contracts import ParetoRows, validate_records
from ofa.errors import OFAError

COLUMNS = ("constraint", "config", "pred. acc %", "test acc %", "pred. ms", "measured ms",
           "MMACs", "params", "best baseline within latency (test acc %)")


@dataclass(frozen=True)
class DeviceReport:
    device: str
    rows: list[dict]
    baselines: list[dict]
    sampled: list[dict]
    drift: float | None = None   # machine speed at export vs at table build (time ratio)


NO_EXPORTS = "no device has exported subnets yet: run `ofa-cli export --device NAME`"


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OFAError(f"{what} {path} does not exist: run the step that writes it first") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OFAError(f"{what} {path} is not readable JSON ({exc})") from None


def read_evaluation(path: Path) -> dict:
    """`reports/evaluate.json` (min/mid/max rows with their test accuracy)."""
    return _read_json(path, "evaluation")


def meets_limit(row: dict) -> bool:
    """Whether a shipped subnet met its limit as measured (MACs are exact; latency is timed)."""
    if row["name"] == "flops_m":
        return row["macs"] / 1e6 <= row["limit"]
    return row["measured_latency_ms"] <= row["limit"]


def constraint_cell(row: dict) -> str:
    """The constraint as written, with the limit it resolved to, e.g. latency_frac=0.15 (<= 0.54 ms)."""
    unit = "MMACs" if row["name"] == "flops_m" else "ms"
    return f"{row['constraint']} (<= {row['limit']:g} {unit})"


def best_baseline_within(baselines: list[dict], latency_ms: float) -> dict | None:
    """The most accurate baseline no slower than `latency_ms` (what one gets without search)."""
    fast = [b for b in baselines if b["measured_latency_ms"] <= latency_ms]
    return max(fast, key=lambda b: b["test_acc"]) if fast else None


def load_device_report(export_json: Path, evaluate_json: Path,
                       sampled: list[dict] | None = None) -> DeviceReport:
    record = _read_json(export_json, "export record")
    tests = {r["config"]: r["test_acc"] for r in read_evaluation(evaluate_json)["rows"]
             if "test_acc" in r}
    try:
        baselines = [b | {"test_acc": tests[b["config"]]} for b in record["baselines"]
                     if b["config"] in tests]
        rows = list(record["chosen"])
        device = str(record["device"])
    except (KeyError, TypeError) as exc:
        raise OFAError(f"export record {export_json} lacks {exc}") from None

    validate_records(rows, ParetoRows, f"export record {export_json}")
    drift = record.get("drift")
    return DeviceReport(device, rows, baselines, sampled or [],
                        float(drift) if isinstance(drift, (int, float)) else None)


def plot_name(device: str) -> str:
    """The device's accuracy-vs-latency plot, relative to pareto.md (a folder DVC caches)."""
    return f"pareto/{device}.png"


def _markdown(reports: list[DeviceReport]) -> str:
    lines = ["# Specialized subnets per device", "",
             "Test accuracy and latency are measured on the exported, BN-recalibrated subnets; "
             "'pred.' columns are the accuracy predictor's and the latency table's estimates. "
             "The last column is the best uniformly scaled subnet (min/mid/max at every "
             "resolution) that is no slower on the device than the chosen one.", ""]
    for rep in reports:
        wins = ties = total = 0
        lines += [f"## {rep.device}", "", "| " + " | ".join(COLUMNS) + " |",
                  "|" + "---|" * len(COLUMNS)]
        for r in rep.rows:
            base = best_baseline_within(rep.baselines, r["measured_latency_ms"])
            if base is None:
                base_txt = "none as fast"
            else:
                total += 1
                delta = 100 * (r["test_acc"] - base["test_acc"])
                wins += delta > 0.05
                ties += abs(delta) <= 0.05
                base_txt = f"{100 * base['test_acc']:.2f} ({delta:+.2f})"
            lines.append(
                f"| {constraint_cell(r)} | `{r['config']}` | {100 * r['predicted_acc']:.2f} | "
                f"{100 * r['test_acc']:.2f} | {r['predicted_latency_ms']:.3f} | "
                f"{r['measured_latency_ms']:.3f} | {r['macs'] / 1e6:.2f} | {r['params']} | {base_txt} |")
        lines += ["", f"Specialization beats the best no-slower uniform baseline in {wins} of "
                  f"{total} comparable constraints (ties within 0.05 points: {ties}).", "",
                  *_latency_note(rep),
                  f"![{rep.device}: accuracy vs latency]({plot_name(rep.device)})", ""]
    return "\n".join(lines)


def _latency_note(rep: DeviceReport) -> list[str]:
    """Which chosen subnets measured over their latency limit, and whether the machine's speed
    at export time (drift) accounts for it."""
    limited = [r for r in rep.rows if r.get("name") == "latency_ms"]
    over = [r for r in limited if r["measured_latency_ms"] > r["limit"]]
    text = f"{len(over)} of {len(limited)} chosen subnets measured over their latency limit."
    if rep.drift is not None:
        still = [r for r in over if r["measured_latency_ms"] / rep.drift > r["limit"]]
        text += (f" The table's calibration subnets, re-timed right after, took {rep.drift:.2f}x "
                 f"as long as when the table was built (the shared machine's speed); at the "
                 f"table's speed, {len(still)} would be over.")
    return [text, ""] if limited else []


def _agreement_md(taus: dict[str, float]) -> str:
    if not taus:
        return ""
    lines = ["", "## How the devices order subnets", "",
             "Kendall tau between the latency tables' predictions over 500 random subnets "
             "(1 = same order; lower means a subnet fast on one target is not fast on the other, "
             "which is why each device gets its own search). Pairs with MACs show how far "
             "FLOPs stand in for latency.", "", "| pair | Kendall tau |", "|---|---|"]
    lines += [f"| {pair.replace('~', ' vs ')} | {tau:.2f} |" for pair, tau in taus.items()]
    return "\n".join(lines) + "\n"


def _plot(rep: DeviceReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    if rep.sampled:
        ax.scatter([s["latency_ms"] for s in rep.sampled], [100 * s["accuracy"] for s in rep.sampled],
                   s=8, c="0.7", label="sampled subnets (validation acc., predicted latency)")
    for kind, marker in (("min", "v"), ("mid", "o"), ("max", "^")):
        pts = [b for b in rep.baselines if b["name"] == kind]
        ax.scatter([b["measured_latency_ms"] for b in pts], [100 * b["test_acc"] for b in pts],
                   marker=marker, s=40, label=f"uniform {kind} (each resolution)")
    pts = sorted(rep.rows, key=lambda r: r["measured_latency_ms"])
    ax.plot([r["measured_latency_ms"] for r in pts], [100 * r["test_acc"] for r in pts], "r*-",
            ms=12, label="specialized (this report)")
    ax.set_xlabel(f"latency on {rep.device} (ms, measured)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"Once-for-All specialization: {rep.device}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def write_report(reports: list[DeviceReport], out_dir: Path,
                 rank_agreement: dict[str, float] | None = None,
                 also: dict[Path, Callable[[Path], None]] | None = None) -> dict:
    """Write pareto.md, pareto.json and one PNG per device (and the files of `also`: path ->
    writer), all or none; returns the JSON summary."""
    if not reports:
        raise OFAError(NO_EXPORTS)
    out_dir = Path(out_dir)
    summary = {}
    writes = dict(also or {})
    for rep in reports:
        writes[out_dir / plot_name(rep.device)] = lambda p, rep=rep: _plot(rep, p)
        summary[rep.device] = {r["constraint"]: {"limit": r["limit"], "test_acc": r["test_acc"],
                                                 "measured_latency_ms": r["measured_latency_ms"],
                                                 "predicted_acc": r["predicted_acc"],
                                                 "met_limit": meets_limit(r)}
                               for r in rep.rows}
    markdown = _markdown(reports) + _agreement_md(rank_agreement or {})
    text = json.dumps(summary, indent=2)
    writes[out_dir / "pareto.md"] = lambda p: p.write_text(markdown)
    writes[out_dir / "pareto.json"] = lambda p: p.write_text(text)
    publish_files(writes)  # every file or none
    return summary


def print_table(reports: list[DeviceReport]) -> None:
    """The same rows in the terminal: a table where it fits (rich), else a compact block per
    row that stays readable at 80 columns and in logs (DVC's, pipes)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.is_terminal and console.width >= 160
    for rep in reports:
        if not wide:
            print(f"{rep.device}: specialized subnets")
            for r in rep.rows:
                base = best_baseline_within(rep.baselines, r["measured_latency_ms"])
                print(f"  {constraint_cell(r)}\n"
                      f"    test {100 * r['test_acc']:.2f}% (pred. {100 * r['predicted_acc']:.2f}), "
                      f"{r['measured_latency_ms']:.3f} ms (pred. {r['predicted_latency_ms']:.3f}), "
                      f"{r['macs'] / 1e6:.2f} MMACs\n    {r['config']}")
                if base is not None:
                    print(f"    best no-slower uniform subnet: {100 * base['test_acc']:.2f}%")
            continue
        table = Table(title=f"{rep.device}: specialized subnets")
        for col in COLUMNS:
            table.add_column(col)
        for r in rep.rows:
            base = best_baseline_within(rep.baselines, r["measured_latency_ms"])
            table.add_row(constraint_cell(r), r["config"], f"{100 * r['predicted_acc']:.2f}",
                          f"{100 * r['test_acc']:.2f}", f"{r['predicted_latency_ms']:.3f}",
                          f"{r['measured_latency_ms']:.3f}", f"{r['macs'] / 1e6:.2f}",
                          str(r["params"]),
                          "-" if base is None else f"{100 * base['test_acc']:.2f}")
        console.print(table)
