"""Specialization as Prefect flows: each step is its DVC stage (flows/stages.py), so what a
flow writes is in dvc.lock and the DVC cache exactly as after `dvc repro`.

Measurement and I/O stages retry (a disturbed timing run or a busy disk is worth another go);
gates and searches do not. Great Expectations gates are stages between the steps: the
accuracy dataset before the predictor is fitted, each latency table before anything searches
with it. `new_devices` finds registered devices without a latency table and specializes each.
The Dask flow is the one exception: another executor for the accuracy dataset's subnets.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.stages import StageFailed, project_root, run_stage
from ofa import paths
from ofa.config import load_params
from ofa.predictor.dataset import measure_checkpoint, sample_configs, write_dataset
from ofa.space import SearchSpace, SubnetConfig


def _params(params_path: str, preset: str | None):
    return load_params(params_path, preset)


@task(name="measure-subnets", retries=1, retry_delay_seconds=5)
def measure_chunk_task(params_path: str, preset: str | None, configs: list[str]) -> list[dict]:
    """Measure one chunk of subnets (runs on whichever Dask worker Prefect hands it to)."""
    import torch

    p = _params(params_path, preset)
    torch.set_num_threads(1)  # one thread per worker: the cluster provides the parallelism
    return measure_checkpoint(p, paths.supernet(p), [SubnetConfig.parse(c) for c in configs])


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


@flow(name="predictor", log_prints=True)
def predictor_flow(params_path: str = "params.yaml") -> list[str]:
    """Measure the accuracy dataset, then gate it and fit the predictor on it (DVC stages)."""
    root = project_root(params_path)
    return [run_stage(root, "acc-dataset", retries=1), run_stage(root, "fit-predictor")]


@flow(name="search", log_prints=True)
def search_flow(device: str, params_path: str = "params.yaml") -> list[str]:
    """Gate one device's latency table, then search its constraints with the predictor."""
    root = project_root(params_path)
    load_params(params_path).device(device)  # an unknown device fails before any work
    return [run_stage(root, f"gate-latency@{device}"), run_stage(root, f"search@{device}")]


@flow(name="export", log_prints=True)
def export_flow(device: str, params_path: str = "params.yaml") -> str:
    """Export, verify and time one device's searched subnets."""
    root = project_root(params_path)
    load_params(params_path).device(device)
    return run_stage(root, f"export@{device}", retries=1)


@flow(name="specialize-device", log_prints=True)
def specialize_device(device: str, params_path: str = "params.yaml",
                      report: bool = True) -> dict:
    """Latency table -> gate -> search -> export (-> report), each its DVC stage. A table that
    fails its gate is removed, so the device counts as new again at the next run."""
    root = project_root(params_path)
    params = load_params(params_path)
    params.device(device)
    run_stage(root, f"latency@{device}", retries=2)  # a disturbed timing run is worth another go
    try:
        run_stage(root, f"gate-latency@{device}")
    except StageFailed:
        paths.latency_table(params, device).unlink(missing_ok=True)
        print(f"{device}: its latency table failed the gate and was removed; "
              "the next new-devices run measures it again")
        raise
    run_stage(root, f"search@{device}")
    run_stage(root, f"export@{device}", retries=1)
    if report:
        run_stage(root, "report", retries=1)
    return {"device": device, "table": str(paths.latency_table(params, device)),
            "export": str(paths.export_record(params, device))}


def devices_without_table(params_path: str = "params.yaml", preset: str | None = None) -> list[str]:
    p = _params(params_path, preset)
    return [d for d in p.devices if not paths.latency_table(p, d).is_file()]


@flow(name="new-devices", log_prints=True)
def new_devices(params_path: str = "params.yaml") -> list[dict]:
    """Specialize every registered device that has no latency table yet, each in its own
    subflow run (one failing does not stop the others), then rebuild the report once."""
    root = project_root(params_path)
    todo = devices_without_table(params_path)
    print(f"devices without a latency table: {', '.join(todo) or 'none'}")
    states = {d: specialize_device.with_options(flow_run_name=f"specialize-{d}")(
        d, params_path, report=False, return_state=True) for d in todo}
    done = [s.result() for s in states.values() if s.is_completed()]
    failed = [d for d, s in states.items() if not s.is_completed()]
    if done:
        run_stage(root, "report", retries=1)
    print(f"specialized: {', '.join(r['device'] for r in done) or 'none'}; "
          f"failed: {', '.join(failed) or 'none'}")
    if failed:
        raise RuntimeError(f"new-devices: {len(failed)} of {len(todo)} devices failed: "
                           f"{', '.join(failed)} (their subflow runs say why)")
    return done


if __name__ == "__main__":
    new_devices()
