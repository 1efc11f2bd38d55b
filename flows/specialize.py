"""Specialization as Prefect flows, calling the same `ofa` functions as the CLI and DVC.

Measurement and I/O tasks retry (a disturbed timing run or a busy disk is worth another go);
tasks return small values (paths, metrics) and the artifacts stay where DVC versions them.
Great Expectations gates stand between steps: the accuracy dataset before the predictor is
fitted, each latency table before anything searches with it. `new_devices` finds registered
devices without a latency table and specializes each.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.gates import gate_task
from ofa import paths
from ofa.config import load_params
from ofa.latency import build_table, check_table
from ofa.predictor import build_acc_dataset, fit_predictor
from ofa.predictor.dataset import measure_checkpoint, sample_configs, write_dataset
from ofa.space import SearchSpace, SubnetConfig
from ofa.specialize import run_export, run_report, run_search


def _params(params_path: str, preset: str | None):
    return load_params(params_path, preset)


@task(name="acc-dataset", retries=1, retry_delay_seconds=5)
def acc_dataset_task(params_path: str, preset: str | None = None) -> dict:
    p = _params(params_path, preset)
    df = build_acc_dataset(p, paths.last_checkpoint(p), show_progress=False)
    return {"path": p.predictor.dataset_path, "rows": len(df)}


@task(name="measure-subnets", retries=1, retry_delay_seconds=5)
def measure_chunk_task(params_path: str, preset: str | None, configs: list[str]) -> list[dict]:
    """Measure one chunk of subnets (runs on whichever Dask worker Prefect hands it to)."""
    import torch

    p = _params(params_path, preset)
    torch.set_num_threads(1)  # one thread per worker: the cluster provides the parallelism
    return measure_checkpoint(p, paths.last_checkpoint(p), [SubnetConfig.parse(c) for c in configs])


def dask_runner(params_path: str = "params.yaml", preset: str | None = None):
    """Prefect's Dask task runner: the scheduler from params, else a LocalCluster here."""
    from prefect_dask import DaskTaskRunner

    o = _params(params_path, preset).orchestration
    if o.dask_address:
        return DaskTaskRunner(address=o.dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": o.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "dashboard_address": None})


@flow(name="acc-dataset-dask", log_prints=True)
def acc_dataset_dask(params_path: str = "params.yaml", preset: str | None = None,
                     chunks: int = 8, out: str | None = None) -> dict:
    """The accuracy dataset with subnets fanned out over the flow's task runner (Dask)."""
    p = _params(params_path, preset)
    cfgs = [str(c) for c in sample_configs(SearchSpace(p.space), p.predictor.n_subnets,
                                           p.predictor.seed)]
    parts = [cfgs[i::chunks] for i in range(chunks) if cfgs[i::chunks]]
    futures = [measure_chunk_task.submit(params_path, preset, part) for part in parts]
    by_config = {row["config"]: row for f in futures for row in f.result()}
    rows = [by_config[c] for c in cfgs]  # the sequential order, whatever the chunking
    path = out or p.predictor.dataset_path
    write_dataset(rows, Path(path))
    return {"path": path, "rows": len(rows)}


def run_acc_dataset_on_dask(params_path: str = "params.yaml", preset: str | None = None,
                            chunks: int = 8, out: str | None = None) -> dict:
    return acc_dataset_dask.with_options(task_runner=dask_runner(params_path, preset))(
        params_path, preset, chunks, out)


@task(name="fit-predictor")
def fit_predictor_task(params_path: str, preset: str | None = None) -> dict:
    report = fit_predictor(_params(params_path, preset))
    return {"chosen": report["chosen"], "rmse_points": report["predictor"]["rmse_points"],
            "kendall_tau": report["predictor"]["kendall_tau"]}


@task(name="latency-table", retries=2, retry_delay_seconds=5)
def latency_task(params_path: str, device: str, preset: str | None = None) -> dict:
    p = _params(params_path, preset)
    path = build_table(p, device, show_progress=False)
    check = check_table(p, device)
    return {"table": str(path), "within_10pct": check["within_10pct"]}


@task(name="search")
def search_task(params_path: str, device: str, preset: str | None = None) -> str:
    return str(run_search(_params(params_path, preset), device))


@task(name="export", retries=1, retry_delay_seconds=5)
def export_task(params_path: str, device: str, preset: str | None = None) -> str:
    p = _params(params_path, preset)
    return str(run_export(p, device, paths.last_checkpoint(p)))


@task(name="report", retries=1, retry_delay_seconds=2)
def report_task(params_path: str, preset: str | None = None,
                evaluate_json: str = "reports/evaluate.json", out_dir: str = "reports") -> str:
    run_report(_params(params_path, preset), None, Path(evaluate_json), Path(out_dir))
    return str(Path(out_dir) / "pareto.md")


@flow(name="predictor", log_prints=True)
def predictor_flow(params_path: str = "params.yaml", preset: str | None = None) -> dict:
    """Measure the accuracy dataset, gate it, then fit the predictor on it."""
    acc_dataset_task(params_path, preset)
    gate_task(params_path, "acc-dataset", None, preset)
    return fit_predictor_task(params_path, preset)


@flow(name="search", log_prints=True)
def search_flow(device: str, params_path: str = "params.yaml", preset: str | None = None) -> str:
    """Search one device's constraints with its (gated) latency table and the predictor."""
    gate_task(params_path, "latency", device, preset)
    return search_task(params_path, device, preset)


@flow(name="export", log_prints=True)
def export_flow(device: str, params_path: str = "params.yaml", preset: str | None = None) -> str:
    """Export, verify and time one device's searched subnets."""
    return export_task(params_path, device, preset)


@flow(name="specialize-device", log_prints=True)
def specialize_device(device: str, params_path: str = "params.yaml", preset: str | None = None,
                      evaluate_json: str = "reports/evaluate.json", out_dir: str = "reports") -> dict:
    """Latency table -> gate -> search -> export -> report, for one registered device."""
    _params(params_path, preset).device(device)  # an unknown device fails before any work
    table = latency_task(params_path, device, preset)
    gate_task(params_path, "latency", device, preset)
    search = search_task(params_path, device, preset)
    export = export_task(params_path, device, preset)
    report = report_task(params_path, preset, evaluate_json, out_dir)
    return {"device": device, **table, "search": search, "export": export, "report": report}


def devices_without_table(params_path: str = "params.yaml", preset: str | None = None) -> list[str]:
    p = _params(params_path, preset)
    return [d for d in p.devices if not paths.latency_table(p, d).is_file()]


@flow(name="new-devices", log_prints=True)
def new_devices(params_path: str = "params.yaml", preset: str | None = None,
                evaluate_json: str = "reports/evaluate.json", out_dir: str = "reports") -> list[dict]:
    """Specialize every registered device that has no latency table yet."""
    todo = devices_without_table(params_path, preset)
    print(f"devices without a latency table: {todo or 'none'}")
    return [specialize_device(d, params_path, preset, evaluate_json, out_dir) for d in todo]


if __name__ == "__main__":
    new_devices()
