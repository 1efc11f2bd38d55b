"""`ofa-cli` commands of training: train a phase, evaluate a checkpoint, benchmark training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ofa import paths
from ofa.cli_app import app, load
from ofa.errors import OFAError


@app.command()
def train(ctx: typer.Context,
          phase: str = typer.Option(..., help="phase name from params.yaml"),
          progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """Train one progressive-shrinking phase (resumes a killed run)."""
    params = load(ctx, phase=phase)
    from ofa.launch import WorkersFailed, run_phase

    try:
        result = run_phase(params, ctx.obj.params, ctx.obj.preset, phase, progress)
    except WorkersFailed as exc:  # the worker has printed its one error line
        raise typer.Exit(exc.code) from None
    if result.history and not result.in_workers:
        typer.echo(f"wrote {result.checkpoint} and {result.report}")


@app.command("train-scratch")
def train_scratch(ctx: typer.Context,
                  config: Optional[str] = typer.Option(None, help="the subnet to train alone "
                                                       "(string or JSON)"),
                  device: Optional[str] = typer.Option(None, help="instead of --config: each "
                                                       "subnet this device's export shipped"),
                  distill: bool = typer.Option(False, help="distil from the teacher phase's "
                                               "checkpoint, as the shrinking phases do"),
                  progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """Train one subnet from random initialisation with params `scratch:` (13 epochs, the
    default training's budget) at its own resolution (the from-scratch baseline); resumes a
    killed run."""
    if (config is None) == (device is None):
        raise OFAError("train-scratch needs exactly one of --config and --device")
    params = load(ctx, device=device, configs=[config] if config is not None else [])
    from ofa.launch import WorkersFailed, in_world, run_phase
    from ofa.report_inputs import shipped_configs
    from ofa.scratch import with_scratch_phase, write_scratch_report
    from ofa.space import SearchSpace, SubnetConfig

    space = SearchSpace(params.space)
    texts = [config] if config is not None else shipped_configs(paths.export_record(params, device))
    for cfg in [space.validate(SubnetConfig.parse(t)) for t in texts]:   # all checked first
        run_params, name = with_scratch_phase(params, cfg, distill)
        command = ["train-scratch", "--config", str(cfg), "--distill" if distill else "--no-distill"]
        try:
            run_phase(run_params, ctx.obj.params, ctx.obj.preset, name, progress, command)
        except WorkersFailed as exc:  # the worker has printed its one error line
            raise typer.Exit(exc.code) from None
        if in_world():  # a worker: the process that started the workers evaluates
            return
        summary = write_scratch_report(run_params, name)
        typer.echo(f"{name}: test top-1 {100 * summary['test_acc']:.2f}% (validation "
                   f"{100 * summary['val_acc']:.2f}%), {summary['train_seconds']:.0f} s, "
                   f"{summary['images_seen']} images; wrote {summary['checkpoint']} and "
                   f"{summary['path']}")


@app.command()
def evaluate(ctx: typer.Context,
             phase: Optional[str] = typer.Option(None, help="evaluate this phase's checkpoint "
                                                 "(default: params' supernet)"),
             checkpoint: Optional[Path] = typer.Option(None, help="checkpoint path (overrides --phase)"),
             config: list[str] = typer.Option([], help="extra subnet config (string or JSON)"),
             splits: str = typer.Option("val,test", help="comma-separated splits"),
             output: Path = typer.Option(Path("reports/evaluate.json"), help="JSON output"),
             progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """BN-recalibrate and evaluate min/mid/max subnets (and given configs) at every resolution:
    of --checkpoint, of --phase's checkpoint, else of params' supernet (with its record: the
    training summary or the import's)."""
    chosen = tuple(s.strip() for s in splits.split(",") if s.strip())
    bad = sorted(set(chosen) - {"val", "test"})
    if bad or not chosen:
        raise OFAError(f"--splits: unknown split {bad[0] if bad else splits!r} (use val, test)")
    params = load(ctx, phase=phase, configs=config)
    from rich.console import Console
    from rich.table import Table

    from ofa.evaluation_report import run_evaluate

    origin = None
    if checkpoint is None and phase is None:
        from ofa.provenance import read_provenance

        checkpoint = paths.supernet(params)
        origin = read_provenance(params) if params.supernet.record is not None else None
    elif checkpoint is None:
        checkpoint = paths.checkpoint(params, phase)
    rows = run_evaluate(params, checkpoint, config, chosen, output, progress, phase, origin)
    table = Table(title=f"{checkpoint} (BN recalibrated on {params.train.bn_calib_images} images)")
    for col in ("subnet", "res", "MMACs", "params", *(f"{s} top-1" for s in chosen)):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["resolution"]), f"{r['macs'] / 1e6:.2f}", str(r["params"]),
                      *(f"{100 * r[f'{s}_acc']:.2f}" for s in chosen))
    Console().print(table)
    typer.echo(f"wrote {output} and {output.with_suffix('.md')}")


@app.command("train-report")
def train_report(ctx: typer.Context) -> None:
    """Summarize the training phases (time, last validation top-1, total minutes as a DVC
    metric) with their curves: the training pipeline's last stage."""
    params = load(ctx)
    from ofa.provenance import write_training_summary

    out = write_training_summary(params)
    typer.echo(f"wrote {out}, {out.with_suffix('.md')} and {paths.training_curves(params)}")


@app.command()
def benchmark(ctx: typer.Context,
              checkpoint: Optional[Path] = typer.Option(None, help="supernet weights (default: random init)"),
              steps: int = typer.Option(5, min=1), rounds: int = typer.Option(5, min=1),
              output: Path = typer.Option(Path("reports/benchmark.json"))) -> None:
    """Training images/s of the supernet vs the exported static subnet (min and max)."""
    params = load(ctx)
    from rich.console import Console
    from rich.table import Table

    from ofa.benchmark import benchmark_training
    from ofa.checkpoint import atomic_write_text
    from ofa.weights import load_supernet

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
