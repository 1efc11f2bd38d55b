"""The Prefect door: a real flow run (local ephemeral API) trains phases through ofa.train."""

from __future__ import annotations

import json

import pytest
from tests.conftest import tiny_params

prefect = pytest.importorskip("prefect")


@pytest.mark.parametrize("processes", [1, 2])
def test_progressive_shrinking_flow_trains_phases_in_order(tmp_path, monkeypatch, prefect_api,
                                                           processes):
    import yaml

    from flows.shrink import progressive_shrinking
    from ofa.checkpoint import load_checkpoint

    path = tiny_params(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["processes"] = processes  # 2: the flow starts local workers, as the CLI does
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    results = progressive_shrinking(str(path), ["teacher", "kernel"])
    assert [r["phase"] for r in results] == ["teacher", "kernel"]
    for r in results:
        assert (tmp_path / "ckpt" / f"{r['phase']}.pt").is_file()
        assert 0.0 <= r["val_acc_max"] <= 1.0
    report = json.loads((tmp_path / "reports" / "kernel.json").read_text())
    assert report["complete"] and report["epochs"] == 1
    assert load_checkpoint(tmp_path / "ckpt" / "kernel.pt")["meta"]["world"] == processes


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


def test_new_devices_specializes_only_the_unmeasured_device(tmp_path, monkeypatch, prefect_api):
    from flows.specialize import devices_without_table, new_devices
    from tests.conftest import tiny_space_params
    from tests.test_specialize import DEVICES, make_world

    params, _, ckpt, tmp = make_world(tmp_path, {"t1": DEVICES["t1"]})
    # register a new device next to the specialized one
    devices = {"t1": {**DEVICES["t1"], "latency_ms": list(params.device("t1").latency_ms)},
               "fresh": {"backend": "torchscript", "threads": 1, "batch_size": 2,
                         "latency_ms": [1000.0]}}
    path = tmp / "params.yaml"
    tiny_space_params(tmp, devices, search={"population": 16, "generations": 10},
                      data={"subset": 200, "val_size": 100},
                      train={"bn_calib_images": 32, "eval_batch_size": 100,
                             "checkpoint_dir": str(ckpt.parent)})
    monkeypatch.chdir(tmp)
    assert devices_without_table(str(path)) == ["fresh"]
    (ckpt.parent / "expand2.pt").write_bytes(ckpt.read_bytes())  # the last shrinking phase
    runs = new_devices(str(path), None, str(tmp / "evaluate.json"), str(tmp / "reports"))
    assert [r["device"] for r in runs] == ["fresh"]
    assert (tmp / "lat" / "fresh.parquet").is_file() and (tmp / "search" / "fresh.json").is_file()
    assert (tmp / "models" / "fresh" / "export.json").is_file()
    assert "## fresh" in (tmp / "reports" / "pareto.md").read_text()
    assert not (tmp / "models" / "t1").exists()  # the known device was left alone


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
