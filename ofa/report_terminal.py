"""The Pareto report in the terminal (`ofa-cli report`): the rows of pareto.md as a rich
table where it fits, else a compact block per row."""

from __future__ import annotations

from ofa.report import COLUMNS, DeviceReport, alone_cell, best_baseline_within, constraint_cell, \
    guarantee_line
from ofa.verify import meets


def print_table(reports: list[DeviceReport]) -> None:
    """The same rows in the terminal: a table where it fits (rich), else a compact block per
    row that stays readable at 80 columns and in logs (DVC's, pipes)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    wide = console.is_terminal and console.width >= 160
    for rep in reports:
        if not wide:
            print(f"{rep.device}: specialized subnets ({guarantee_line(rep)})")
            for r in rep.rows:
                base = best_baseline_within(rep.baselines, r["verified_latency_ms"])
                print(f"  {constraint_cell(r)}: {'met' if meets(r) else 'NOT MET'}\n"
                      f"    test {100 * r['test_acc']:.2f}% (val {100 * r['val_acc']:.2f}, "
                      f"pred. {100 * r['predicted_acc']:.2f})\n"
                      f"    {r['verified_latency_ms']:.3f} ms verified (raw "
                      f"{r['measured_latency_ms']:.3f}, pred. {r['predicted_latency_ms']:.3f}), "
                      f"{r['macs'] / 1e6:.2f} MMACs\n    {r['config']}")
                if base is not None:
                    print(f"    best no-slower uniform subnet: val {100 * base['val_acc']:.2f}%, "
                          f"test {100 * base['test_acc']:.2f}%")
            continue
        table = Table(title=f"{rep.device}: specialized subnets ({guarantee_line(rep)})")
        for col in COLUMNS:
            table.add_column(col)
        for r in rep.rows:
            base = best_baseline_within(rep.baselines, r["verified_latency_ms"])
            table.add_row(constraint_cell(r), r["config"], f"{100 * r['predicted_acc']:.2f}",
                          f"{100 * r['val_acc']:.2f}", f"{100 * r['test_acc']:.2f}",
                          f"{r['predicted_latency_ms']:.3f}", f"{r['verified_latency_ms']:.3f}",
                          f"{r['measured_latency_ms']:.3f} ({r['p90_latency_ms']:.3f})",
                          "yes" if meets(r) else "NO", f"{100 * r['regret']:+.2f}",
                          f"{r['macs'] / 1e6:.2f}", str(r["params"]),
                          "-" if base is None else
                          f"{100 * base['val_acc']:.2f} / {100 * base['test_acc']:.2f}",
                          alone_cell(rep, r))
        console.print(table)
