"""The Prefect door: a real flow run (local ephemeral API) trains phases through ofa.train."""

from __future__ import annotations

import json

import pytest
import yaml

from ofa.config import deep_merge, preset, read_yaml

prefect = pytest.importorskip("prefect")


def test_progressive_shrinking_flow_trains_phases_in_order(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.shrink import progressive_shrinking

    raw = deep_merge(read_yaml("params.yaml"), preset("smoke"))
    raw = deep_merge(raw, {"data": {"subset": 256}, "train": {
        "batch_size": 32, "eval_images": 64, "bn_calib_images": 64, "threads": 1,
        "checkpoint_dir": str(tmp_path / "ckpt"), "report_dir": str(tmp_path / "reports")},
        "phases": {"teacher": {"epochs": 1, "images_per_epoch": 64},
                   "kernel": {"images_per_epoch": 64}}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    with prefect_test_harness(server_startup_timeout=120):
        results = progressive_shrinking(str(path), ["teacher", "kernel"])
    assert [r["phase"] for r in results] == ["teacher", "kernel"]
    for r in results:
        assert (tmp_path / "ckpt" / f"{r['phase']}.pt").is_file()
        assert 0.0 <= r["val_acc_max"] <= 1.0
    report = json.loads((tmp_path / "reports" / "kernel.json").read_text())
    assert report["complete"] and report["epochs"] == 1
