"""The Prefect door: a real flow run (local ephemeral API) trains phases through ofa.train."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_params

prefect = pytest.importorskip("prefect")


def test_progressive_shrinking_flow_trains_phases_in_order(tmp_path, monkeypatch):
    from prefect.testing.utilities import prefect_test_harness

    from flows.shrink import progressive_shrinking

    path = tiny_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    with prefect_test_harness(server_startup_timeout=120):
        results = progressive_shrinking(str(path), ["teacher", "kernel"])
    assert [r["phase"] for r in results] == ["teacher", "kernel"]
    for r in results:
        assert (tmp_path / "ckpt" / f"{r['phase']}.pt").is_file()
        assert 0.0 <= r["val_acc_max"] <= 1.0
    report = json.loads((tmp_path / "reports" / "kernel.json").read_text())
    assert report["complete"] and report["epochs"] == 1
