"""Scheduled runs fire: a real `prefect server start` creates runs of the served `new-devices`
deployment on its schedule, and the serving process runs them to completion.

This is what failed with SQLAlchemy 2.1 under prefect 3.8.8 (the scheduler service raised every
loop and created no run); pyproject.toml pins the SQLAlchemy that works.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_params

httpx = pytest.importorskip("httpx")
pytest.importorskip("prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, procs: list[subprocess.Popen]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"{p.args[:3]} exited with {p.returncode} while waiting for {what}"
        if (value := check()) is not None:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _runs(api: str) -> list[dict]:
    resp = httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC"},
                      timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.mark.slow
def test_the_server_schedules_new_devices_and_the_served_deployment_runs_it(tmp_path: Path):
    import yaml

    params = tiny_params(tmp_path)
    raw = yaml.safe_load(params.read_text())
    # every registered device already has its table: the scheduled run finds nothing to do
    table_dir = tmp_path / "lat"
    raw.setdefault("latency", {})["table_dir"] = str(table_dir)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # the flows want a DVC project
    table_dir.mkdir()
    for device in raw["devices"]:
        (table_dir / f"{device}.parquet").write_bytes(b"")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_SERVER_UI_ENABLED="false",
               PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
               PREFECT_RUNNER_POLL_FREQUENCY="1", PYTHONPATH=str(ROOT))
    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("server", "serve")}
    server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                               "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                              env=env, stdout=logs["server"], stderr=subprocess.STDOUT)
    procs = [server]
    try:
        def healthy():
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200 or None
            except httpx.HTTPError:
                return None

        _wait("the Prefect server", healthy, 180, procs)
        serve = subprocess.Popen(
            [sys.executable, "-c", "import sys; from flows.deploy import serve_deployments; "
             "serve_deployments(sys.argv[1], interval_seconds=5)", str(params)],
            cwd=tmp_path, env=env, stdout=logs["serve"], stderr=subprocess.STDOUT)
        procs.append(serve)

        def completed():
            errors = [line for line in (tmp_path / "server.log").read_text().splitlines()
                      if "Traceback" in line or "InvalidRequestError" in line]
            assert not errors, f"the server's services failed: {errors[:3]}"
            done = [r for r in _runs(api) if r["auto_scheduled"]
                    and r["state_type"] == "COMPLETED"]
            return done or None

        done = _wait("a scheduled new-devices run to complete", completed, 240, procs)
        assert {r["deployment_id"] for r in done} and all(r["name"] for r in done)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
