"""`ofa-cli`: a thin door onto the library. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from ofa.cli_app import Options, app, load  # noqa: F401 - the app the commands attach to
from ofa.errors import OFAError

OFFLINE_ENV = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "DVC_NO_ANALYTICS": "1", "GX_ANALYTICS_ENABLED": "False",
               "DISABLE_PANDERA_IMPORT_WARNING": "True"}

_load = load


@app.command()
def train(ctx: typer.Context,
          phase: str = typer.Option(..., help="phase name from params.yaml"),
          progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """Train one progressive-shrinking phase (resumes a killed run)."""
    params = _load(ctx, phase=phase)
    from ofa.launch import in_world, launch_workers, worker_args

    if params.train.processes > 1 and not in_world():
        raise typer.Exit(launch_workers(params.train.processes, worker_args(
            ctx.obj.params, ctx.obj.preset, phase, progress)))
    from ofa.distributed import init_distributed
    from ofa.train import train_phase

    result = train_phase(params, phase, init_distributed(), show_progress=progress)
    if result.history:
        typer.echo(f"wrote {result.checkpoint} and {result.report}")


@app.command()
def evaluate(ctx: typer.Context,
             phase: Optional[str] = typer.Option(None, help="evaluate this phase's checkpoint "
                                                 "(default: the last shrinking phase)"),
             checkpoint: Optional[Path] = typer.Option(None, help="checkpoint path (overrides --phase)"),
             config: list[str] = typer.Option([], help="extra subnet config (string or JSON)"),
             splits: str = typer.Option("val,test", help="comma-separated splits"),
             output: Path = typer.Option(Path("reports/evaluate.json"), help="JSON output"),
             progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """BN-recalibrate and evaluate min/mid/max subnets (and given configs) at every resolution."""
    chosen = tuple(s.strip() for s in splits.split(",") if s.strip())
    bad = sorted(set(chosen) - {"val", "test"})
    if bad or not chosen:
        raise OFAError(f"--splits: unknown split {bad[0] if bad else splits!r} (use val, test)")
    params = _load(ctx, phase=phase, configs=config)
    if checkpoint is None:
        phase = phase or params.shrinking_order()[-1]
        checkpoint = Path(params.train.checkpoint_dir) / f"{phase}.pt"
    from rich.console import Console
    from rich.table import Table

    from ofa.evaluate import run_evaluate

    rows = run_evaluate(params, checkpoint, config, chosen, output, progress, phase)
    table = Table(title=f"{checkpoint} (BN recalibrated on {params.train.bn_calib_images} images)")
    for col in ("subnet", "res", "MMACs", "params", *(f"{s} top-1" for s in chosen)):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["resolution"]), f"{r['macs'] / 1e6:.2f}", str(r["params"]),
                      *(f"{100 * r[f'{s}_acc']:.2f}" for s in chosen))
    Console().print(table)
    typer.echo(f"wrote {output} and {output.with_suffix('.md')}")


@app.command()
def benchmark(ctx: typer.Context,
              checkpoint: Optional[Path] = typer.Option(None, help="supernet weights (default: random init)"),
              steps: int = typer.Option(5, min=1), rounds: int = typer.Option(5, min=1),
              output: Path = typer.Option(Path("reports/benchmark.json"))) -> None:
    """Training images/s of the supernet vs the exported static subnet (min and max)."""
    params = _load(ctx)
    from rich.console import Console
    from rich.table import Table

    from ofa.benchmark import benchmark_training
    from ofa.checkpoint import atomic_write_text
    from ofa.train import load_supernet

    net = load_supernet(params, checkpoint)[0] if checkpoint else None
    rows = benchmark_training(params, net, steps=steps, rounds=rounds)
    table = Table(title="training throughput (median of rounds, same batches)")
    for col in ("subnet", "config", "supernet img/s", "static img/s", "static/supernet",
                "supernet, torch ops only", "static/that"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["subnet"], r["config"], f"{r['supernet_img_s']:.0f}",
                      f"{r['static_img_s']:.0f}", f"{r['slowdown']:.3f}x",
                      f"{r['supernet_torch_ops_img_s']:.0f}", f"{r['slowdown_torch_ops']:.3f}x")
    Console().print(table)
    atomic_write_text(output, json.dumps({"threads": params.train.threads, "rows": rows}, indent=2))


from ofa import cli_specialize  # noqa: E402,F401 - registers the specialization commands


def main() -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    debug = os.environ.get("OFA_DEBUG", "") not in ("", "0")
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except OFAError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.TyperException as exc:  # usage errors: one line instead of click's box
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ofa-cli`: help was shown
            sys.exit(0)
        fmt = getattr(exc, "format_message", None)
        typer.echo(f"error: {fmt() if fmt else exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback by default
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: unexpected {type(exc).__name__}: {first} (set OFA_DEBUG=1 for details)",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
