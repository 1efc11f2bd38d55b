"""The Prefect door: real flow runs (local ephemeral API) of the pipeline's DVC stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.pipeline_support import DVC, TRAIN, run, stage_env

prefect = pytest.importorskip("prefect")


def test_deployments_are_built_with_the_schedule_from_params():
    from flows.deploy import build_deployments
    from ofa.config import load_params
    from tests.conftest import ROOT

    deps = {d.name: d for d in build_deployments(str(ROOT / "params.yaml"))}
    assert set(deps) == {"new-devices", "specialize-device", "predictor", "progressive-shrinking",
                         "evaluate", "search", "export"}
    cron = load_params(ROOT / "params.yaml").orchestration.new_devices_cron
    assert [s.schedule.cron for s in deps["new-devices"].schedules] == [cron]
    assert not deps["specialize-device"].schedules


def _in_repo(repo: Path, monkeypatch) -> dict:
    """Run the flows as the DVC stages would: in the repository, with the stages' environment."""
    env = stage_env(repo)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(repo)
    return env


def _write_yaml(path: Path, data: dict) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.slow
def test_new_devices_runs_each_device_through_dvc(repo_copy: Path, tmp_path: Path, monkeypatch,
                                                  prefect_api):
    """Each new device is its own subflow of DVC stages: the one that works is specialized and
    recorded (clean `dvc status`, nothing new for git), one whose table fails its gate leaves no
    table (so the next run retries it), one with a missing table file fails without retries,
    and the parent names the two that failed."""
    import pandas as pd

    from flows.specialize import new_devices
    from ofa.config import load_params
    from ofa.latency import write_layer_list
    from ofa.space import SearchSpace

    env = _in_repo(repo_copy, monkeypatch)
    run(["git", "add", "-A"], repo_copy, env)  # the reproduced pipeline, committed
    run(["git", "commit", "-qm", "reproduced"], repo_copy, env)
    params_path = repo_copy / "params.yaml"
    layers = write_layer_list(SearchSpace(load_params(params_path).space), tmp_path / "layers.csv")
    noisy = pd.read_csv(layers).assign(median_ms=0.01, spread_ms=1.0, count=20)  # spread 100x
    noisy.to_csv(tmp_path / "noisy.csv", index=False)
    raw = yaml.safe_load(params_path.read_text())
    raw["devices"] |= {"fresh": {"backend": "onnxruntime", "threads": 1, "batch_size": 2},
                       "noisy": {"backend": "torch", "table": str(tmp_path / "noisy.csv")},
                       "missing": {"backend": "torch", "table": str(tmp_path / "nowhere.csv")}}
    raw["constraints"] |= {d: {"flops_m": [20.0]} for d in ("fresh", "noisy", "missing")}
    _write_yaml(params_path, raw)
    run(["git", "commit", "-qam", "register three devices"], repo_copy, env)

    state = new_devices(str(params_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"2 of 3 devices failed: noisy, missing"):
        state.result()
    assert (repo_copy / "models/fresh/flops_m-20/config.json").is_file()
    assert "## fresh" in (repo_copy / "reports/pareto.md").read_text()
    assert not (repo_copy / "data/latency/noisy.parquet").exists()  # retried at the next run
    stale = set(json.loads(run([DVC, "status", "--json"], repo_copy, env)))
    failed = {f"{s}@{d}" for s in ("latency", "gate-latency", "search", "export")
              for d in ("noisy", "missing")}
    assert stale <= failed and not any(s.endswith("@fresh") for s in stale), stale
    untracked = [line[3:] for line in run(["git", "status", "--porcelain"], repo_copy,
                                          env).splitlines() if line.startswith("??")]
    # only the failed gate's own report (why it failed) is new on disk
    assert all(u.startswith("reports/validation/latency_noisy") for u in untracked), untracked

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        runs = {r.name: r for r in client.read_task_runs()}
    assert runs["latency@missing"].run_count == 1  # a configuration error is not retried
    assert runs["gate-latency@noisy"].run_count == 1


@pytest.mark.slow
def test_progressive_shrinking_flow_trains_through_dvc(repo_copy: Path, monkeypatch, prefect_api):
    """A changed phase retrains through its DVC stage: the record is up to date for it after."""
    from flows.shrink import progressive_shrinking

    env = _in_repo(repo_copy, monkeypatch)
    params_path = repo_copy / "params.yaml"
    raw = yaml.safe_load(params_path.read_text())
    raw["phases"]["expand2"]["lr"] = 0.0123
    _write_yaml(params_path, raw)
    assert progressive_shrinking(str(params_path), ["expand2"]) == [
        f"{TRAIN}validate-data", f"{TRAIN}shrink@expand2", f"{TRAIN}train-report"]
    stale = set(json.loads(run([DVC, "status", "--json"], repo_copy, env)))
    assert not stale & {f"{TRAIN}shrink@expand2", f"{TRAIN}train-report"}, stale
    assert {"evaluate", "acc-dataset"} <= stale, stale


def test_accuracy_dataset_on_two_dask_workers_equals_the_sequential_run(tmp_path, prefect_api):
    import pandas as pd
    import torch

    from flows.specialize import run_acc_dataset_on_dask
    from ofa.checkpoint import save_checkpoint
    from ofa.config import to_dict
    from ofa.nn.supernet import OFAMobileNetV3
    from ofa.predictor import build_acc_dataset
    from ofa.space import SearchSpace
    from tests.conftest import tiny_space_params

    params = tiny_space_params(tmp_path, predictor={"n_subnets": 10, "val_images": 64,
                                                    "workers": 1},
                               train={"bn_calib_images": 32, "eval_batch_size": 64},
                               orchestration={"dask_workers": 2})
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt" / "expand2.pt"
    save_checkpoint(ckpt, OFAMobileNetV3(SearchSpace(params.space)).state_dict(),
                    {"space": to_dict(params.space), "complete": True})
    sequential = build_acc_dataset(params, ckpt, tmp_path / "seq.parquet", show_progress=False)
    run_acc_dataset_on_dask(str(tmp_path / "params.yaml"), None, chunks=3,
                            out=str(tmp_path / "dask.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), sequential)
