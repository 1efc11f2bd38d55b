"""The DVC pipeline end to end on the smoke preset, in a temporary git repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(tmp: Path) -> dict:
    """The stages' environment: `ofa-cli` is tests/trace_cli.py, recording the params keys
    each command reads into tmp/../traces (see test_stages_declare_every_params_key_they_read)."""
    shim = tmp.parent / f"{tmp.name}-shim"
    if not (shim / "ofa-cli").is_file():
        shim.mkdir(exist_ok=True)
        (shim / "ofa-cli").write_text(f'#!/bin/sh\nexec "{sys.executable}" '
                                      f'"{ROOT / "tests" / "trace_cli.py"}" "$@"\n')
        (shim / "ofa-cli").chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{shim}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}",
               OFA_TRACE_DIR=str(tmp.parent / f"{tmp.name}-traces"), DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"), OMP_NUM_THREADS="2",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return env


def _run(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_dvc_stages_follow_params_phase_order():
    """dvc.yaml's `from` of every shrinking stage must be the phase's init_from."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["phases"]
    chain = stages["shrink"]["foreach"]
    assert list(chain) == [p for p in params if p not in ("teacher", "naive")]
    for phase, item in chain.items():
        assert params[phase]["init_from"] == item["from"], phase


def test_every_default_device_has_its_pareto_plot_declared():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    devices = yaml.safe_load((ROOT / "params.yaml").read_text())["devices"]
    assert {f"reports/pareto_{d}.png" for d in devices} <= set(dvc["plots"])


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "ofa", repo / "ofa", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["preset"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = _env(repo)
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "smoke"], repo, env)
    _run([str(BIN / "dvc"), "repro"], repo, env)
    return repo


@pytest.mark.slow
def test_smoke_pipeline_runs_every_phase(smoke_repo: Path):
    for phase in ("teacher", "kernel", "depth1", "depth2", "expand1", "expand2"):
        assert (smoke_repo / "data/checkpoints" / f"{phase}.pt").is_file()
        report = json.loads((smoke_repo / "reports/train" / f"{phase}.json").read_text())
        assert report["complete"] and report["epochs"] >= 1
    rows = json.loads((smoke_repo / "reports/evaluate.json").read_text())["rows"]
    assert {r["name"] for r in rows} == {"min", "mid", "max"}
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows)
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    devices = yaml.safe_load((smoke_repo / "params.yaml").read_text())["devices"]
    assert {"shrink@expand2", "fit-predictor", "report"} <= set(lock["stages"])
    assert {f"export@{d}" for d in devices} <= set(lock["stages"])
    pareto = (smoke_repo / "reports/pareto.md").read_text()
    for d in devices:
        assert f"## {d}" in pareto and (smoke_repo / "data/latency" / f"{d}.parquet").is_file()
    assert "## How the devices order subnets" in pareto


@pytest.mark.slow
def test_metrics_and_plots_are_declared(smoke_repo: Path):
    """`dvc metrics show` and `dvc plots show` find every step's figures without arguments."""
    env, dvc = _env(smoke_repo), str(BIN / "dvc")
    devices = yaml.safe_load((smoke_repo / "params.yaml").read_text())["devices"]
    metrics = json.loads(_run([dvc, "metrics", "show", "--json"], smoke_repo, env))
    files = set(next(iter(metrics.values()))["data"])
    assert {"reports/evaluate.json", "reports/predictor.json", "reports/pareto.json",
            "reports/validation/raw_data.json"} <= files, files
    assert {f"reports/latency/{d}.json" for d in devices} <= files, files
    plots = json.loads(_run([dvc, "plots", "show", "--json"], smoke_repo, env))
    shown = {k for k, v in plots["data"].items() if v}
    want = {"reports/train/teacher.csv", "reports/train/expand2.csv", "reports/predictor_parity.png"}
    want |= {f"reports/latency/{d}_parity.png" for d in devices}
    want |= {f"reports/pareto_{d}.png" for d in devices}
    assert want <= shown, want - shown


@pytest.fixture()
def repo_copy(smoke_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the reproduced smoke repository (git, DVC cache and outputs)."""
    copy = tmp_path / "repo"
    shutil.copytree(smoke_repo, copy, symlinks=True, ignore=shutil.ignore_patterns("dvc-site-cache"))
    return copy


def _ran(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_an_experiment_reruns_only_what_changed(repo_copy: Path):
    """`dvc exp run -S` on one phase's param reruns that phase only; the stages that read its
    checkpoint become stale, the earlier phases and the latency tables do not."""
    env = _env(repo_copy)
    dvc = str(BIN / "dvc")
    assert json.loads(_run([dvc, "status", "--json"], repo_copy, env)) == {}
    out = _run([dvc, "exp", "run", "-S", "phases.expand2.lr=0.0123", "shrink@expand2"],
               repo_copy, env)
    assert _ran(out) == {"shrink@expand2"}, out
    assert yaml.safe_load((repo_copy / "params.yaml").read_text())["phases"]["expand2"]["lr"] == 0.0123
    shown = _run([dvc, "exp", "show", "--json"], repo_copy, env)
    assert "0.0123" in shown
    stale = set(json.loads(_run([dvc, "status", "--json"], repo_copy, env)))
    assert {"evaluate", "acc-dataset"} <= stale, stale
    assert not stale & {"validate-data", "teacher", "shrink@kernel", "shrink@depth1",
                        "shrink@depth2", "shrink@expand1", "shrink@expand2"}, stale
    assert not any(name.startswith("latency@") for name in stale), stale


@pytest.mark.slow
def test_registering_a_device_adds_only_its_stages(repo_copy: Path):
    env = _env(repo_copy)
    dvc = str(BIN / "dvc")
    assert json.loads(_run([dvc, "status", "--json"], repo_copy, env)) == {}
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["devices"]["ort2-b4"] = {"backend": "onnxruntime", "threads": 2, "batch_size": 4,
                                    "latency_frac": [0.5]}
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(_run([dvc, "status", "--json"], repo_copy, env)))
    # its own stages, and the report, which declares which devices it covers
    assert changed == {"latency@ort2-b4", "search@ort2-b4", "export@ort2-b4", "report"}, changed
    out = _run([dvc, "repro"], repo_copy, env)
    # its own stages, then the report that gains its rows; no other device is touched
    assert _ran(out) == {"latency@ort2-b4", "search@ort2-b4", "export@ort2-b4", "report"}, out
    assert "## ort2-b4" in (repo_copy / "reports/pareto.md").read_text()


@pytest.mark.slow
def test_stages_declare_every_params_key_they_read(smoke_repo: Path):
    """Every params key a stage's commands read while the smoke pipeline ran (recorded by
    tests/trace_cli.py) is declared in that stage's `params` in dvc.yaml."""
    from tests.records import resolved_stages, stage_of, undeclared_reads

    traces = [json.loads(p.read_text())
              for p in (smoke_repo.parent / f"{smoke_repo.name}-traces").glob("*.json")]
    stages = resolved_stages(ROOT)
    missing = undeclared_reads(stages, traces, yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert not missing, "\n".join(f"stage {s}: reads {k}, not in its params" for s, k in missing)
    ran = {stage_of(stages, t["argv"]) for t in traces}
    assert set(stages) <= ran, set(stages) - ran  # every stage's commands were traced
