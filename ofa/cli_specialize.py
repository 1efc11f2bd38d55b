"""`ofa-cli` commands of specialization: predictor, latency tables, search, export, report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ofa import paths
from ofa.cli_app import app, load
from ofa.errors import OFAError


def _checkpoint(params, checkpoint: Optional[Path]) -> Path:
    """--checkpoint, else params' supernet (`supernet.checkpoint`, else the last phase's)."""
    return checkpoint if checkpoint is not None else paths.supernet(params)


@app.command("acc-dataset")
def acc_dataset(ctx: typer.Context,
                checkpoint: Optional[Path] = typer.Option(None, help="supernet (default: params' supernet)"),
                n: Optional[int] = typer.Option(None, min=2, help="subnets (default: params)"),
                progress: bool = typer.Option(True, help="show a progress bar")) -> None:
    """Measure sampled subnets (BN-recalibrated, validation top-1) for the predictor dataset."""
    params = load(ctx)
    from ofa.predictor import build_acc_dataset

    df = build_acc_dataset(params, _checkpoint(params, checkpoint), n=n,
                           show_progress=progress)
    typer.echo(f"wrote {params.predictor.dataset_path} ({len(df)} subnets, accuracy "
               f"{100 * df['accuracy'].min():.2f}-{100 * df['accuracy'].max():.2f}%)")


@app.command("fit-predictor")
def fit_predictor(ctx: typer.Context) -> None:
    """Fit the accuracy predictor (paper's MLP vs stage-pooled ridge, the better on validation
    kept; one-hot ridge as baseline); report RMSE and rank correlation on held-out subnets."""
    params = load(ctx)
    from ofa.predictor import fit_predictor as fit

    report = fit(params)
    best = report["predictor"]
    typer.echo(f"wrote {params.predictor.weights_path} ({report['chosen']}) and "
               f"{params.predictor.report_path}: test RMSE {best['rmse_points']:.3f} points, "
               f"Kendall tau {best['kendall_tau']:.3f}")


@app.command()
def latency(ctx: typer.Context, device: str = typer.Option(..., help="device from params.yaml"),
            check: bool = typer.Option(True, help="also time random full subnets to check it")) -> None:
    """Build the device's latency lookup table (and check it against end-to-end timings)."""
    params = load(ctx, device=device)
    from ofa.latency import build_table, check_table

    path = build_table(params, device)
    typer.echo(f"wrote {path}")
    if check:
        res = check_table(params, device)
        if res["n"] == 0:
            typer.echo("not checked: the table was measured elsewhere (an imported table), so "
                       "no subnet could be timed here to compare it with")
        else:
            typer.echo(f"checked on {res['n']} subnets: {100 * res['within_10pct']:.0f}% within "
                       f"+-10%, RMSE {res['rmse_ms']:.3f} ms ({res['rmse_pct']:.1f}%)")


@app.command("latency-layers")
def latency_layers(ctx: typer.Context,
                   output: Path = typer.Option(Path("layers.csv"), help="CSV to write")) -> None:
    """List every layer a latency table needs, to time them on a device elsewhere."""
    params = load(ctx)
    from ofa.latency import write_layer_list
    from ofa.space import SearchSpace

    typer.echo(f"wrote {write_layer_list(SearchSpace(params.space), output)}")


@app.command()
def search(ctx: typer.Context, device: str = typer.Option(..., help="device from params.yaml"),
           pareto: bool = typer.Option(True, help="also return the NSGA-II Pareto front")) -> None:
    """Best predicted subnet for each of the device's constraints (regularized evolution)."""
    params = load(ctx, device=device)
    from ofa.specialize import run_search

    typer.echo(f"wrote {run_search(params, device, pareto)}")


@app.command()
def export(ctx: typer.Context, device: str = typer.Option(..., help="device from params.yaml"),
           checkpoint: Optional[Path] = typer.Option(None, help="supernet (default: params' supernet)")) -> None:
    """Write the searched subnets as safetensors, TorchScript and ONNX, verified and timed."""
    params = load(ctx, device=device)
    from ofa.export_device import run_export

    typer.echo(f"wrote {run_export(params, device, _checkpoint(params, checkpoint))}")


@app.command()
def report(ctx: typer.Context,
           device: list[str] = typer.Option([], help="devices (default: all exported)"),
           evaluation: Path = typer.Option(Path("reports/evaluate.json"), help="min/mid/max test acc."),
           out_dir: Path = typer.Option(Path("reports"), help="where pareto.md/json/png go")) -> None:
    """Pareto summary per device: specialized subnets against uniform baselines."""
    params = load(ctx)
    from ofa.report_terminal import print_table
    from ofa.specialize import run_report

    reports = run_report(params, list(device) or None, evaluation, out_dir)
    print_table(reports)
    typer.echo(f"wrote {out_dir / 'pareto.md'}")


@app.command("benchmark-search")
def benchmark_search(ctx: typer.Context, repeats: int = typer.Option(3, min=1)) -> None:
    """Time one search with the paper's settings (batched vs one subnet at a time)."""
    params = load(ctx)
    from ofa.search import benchmark_search as bench

    bench(params, repeats=repeats)


@app.command()
def deploy(ctx: typer.Context) -> None:
    """Serve the Prefect deployments (new-devices on its cron) against a running Prefect API.
    Stopping it pauses the schedule (Prefect's `serve`); README: running it as a service."""
    params = load(ctx)
    if ctx.obj.preset is not None:
        raise OFAError("deploy: the flows run the DVC stages, which read the preset from "
                       "params.yaml; set `preset:` there instead of --preset")
    from flows.deploy import serve_deployments
    from flows.stages import project_root

    project_root(ctx.obj.params)
    cron = params.orchestration.new_devices_cron
    typer.echo(f"serving deployments; new-devices runs on '{cron}' (Ctrl-C stops and pauses it)")
    serve_deployments(str(ctx.obj.params))


@app.command()
def validate(ctx: typer.Context,
             what: str = typer.Argument(..., help="data | acc-dataset | latency"),
             device: Optional[str] = typer.Option(None, help="device (for latency)")) -> None:
    """Great Expectations gate on an artifact: reports/validation/<suite>.json and Data Docs."""
    params = load(ctx)
    from ofa.validation import gate

    res = gate(params, what, device)
    typer.echo(f"validation '{res['suite']}' passed ({len(res['results'])} expectations, "
               f"{res['rows']} rows)")
