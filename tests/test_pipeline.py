"""The DVC pipeline end to end on the smoke preset, in a temporary git repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.pipeline_support import DVC, ROOT, TRAIN, downstream, ran_stages, run, stage_env



def test_dvc_stages_follow_params_phase_order():
    """training/dvc.yaml's `from` of every shrinking stage must be the phase's init_from."""
    stages = yaml.safe_load((ROOT / "training/dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())["phases"]
    chain = stages["shrink"]["foreach"]
    assert list(chain) == [p for p in params if p != "teacher"]
    for phase, item in chain.items():
        assert params[phase]["init_from"] == item["from"], phase


def test_the_pareto_plots_folder_is_declared():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert "reports/pareto" in dvc["plots"]
    assert "reports/pareto" in dvc["stages"]["report"]["outs"]


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
    trained = yaml.safe_load((smoke_repo / "training/dvc.lock").read_text())
    devices = yaml.safe_load((smoke_repo / "params.yaml").read_text())["devices"]
    assert {"teacher", "shrink@expand2", "train-report"} <= set(trained["stages"])
    assert {"evaluate", "fit-predictor", "report"} <= set(lock["stages"])
    assert {f"export@{d}" for d in devices} <= set(lock["stages"])
    pareto = (smoke_repo / "reports/pareto.md").read_text()
    for d in devices:
        assert f"## {d}" in pareto and (smoke_repo / "data/latency" / f"{d}.parquet").is_file()
    assert "## How the devices order subnets" in pareto


@pytest.mark.slow
def test_metrics_and_plots_are_declared(smoke_repo: Path):
    """`dvc metrics show` gives the headline figures only (the detailed JSONs are plain outputs)
    and `dvc plots show` finds every step's figures without arguments."""
    env, dvc = stage_env(smoke_repo), DVC
    devices = yaml.safe_load((smoke_repo / "params.yaml").read_text())["devices"]
    metrics = json.loads(run([dvc, "metrics", "show", "--json"], smoke_repo, env))
    data = next(iter(metrics.values()))["data"]
    assert set(data) == {"reports/metrics.json", "reports/training.json"}, set(data)
    head = data["reports/metrics.json"]["data"]
    assert set(head["test_acc"]) == {"min", "mid", "max"} and head["train_minutes"] > 0
    trained = data["reports/training.json"]["data"]
    assert trained["train_minutes"] == head["train_minutes"]
    assert list(trained["phases"]) == ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2"]
    for d in devices:
        dev = head[d]
        assert dev["shipped"] >= 1 and 0 <= dev["met_limit"] <= dev["shipped"]
        assert any(k.startswith(("latency_frac=", "flops_m=")) for k in dev)
    evaluation = json.loads((smoke_repo / "reports/evaluate.json").read_text())
    assert {"min_r24", "max_r32"} <= set(evaluation["test_acc"])  # by name, not in a list
    pareto = json.loads((smoke_repo / "reports/pareto.json").read_text())
    assert all("<=" not in k for dev in pareto.values() for k in dev), pareto
    plots = json.loads(run([dvc, "plots", "show", "--json"], smoke_repo, env))
    shown = {k for k, v in plots["data"].items() if v}
    want = {"reports/train/teacher.csv", "reports/train/expand2.csv", "reports/predictor_parity.png",
            "reports/train/curves.png"}
    want |= {f"reports/latency/{d}_parity.png" for d in devices}
    want |= {f"reports/pareto/{d}.png" for d in devices}
    assert want <= shown, want - shown


@pytest.mark.slow
def test_an_experiment_reruns_only_what_changed(repo_copy: Path):
    """`dvc exp run -S` on one phase's param reruns that phase only; the stages that read its
    checkpoint become stale, the earlier phases and the latency tables do not."""
    env = stage_env(repo_copy)
    dvc = DVC
    assert json.loads(run([dvc, "status", "--json"], repo_copy, env)) == {}
    out = run([dvc, "exp", "run", "-S", "phases.expand2.lr=0.0123", f"{TRAIN}shrink@expand2"],
               repo_copy, env)
    assert ran_stages(out) == {f"{TRAIN}shrink@expand2"}, out
    assert yaml.safe_load((repo_copy / "params.yaml").read_text())["phases"]["expand2"]["lr"] == 0.0123
    shown = run([dvc, "exp", "show", "--json"], repo_copy, env)
    assert "0.0123" in shown
    stale = set(json.loads(run([dvc, "status", "--json"], repo_copy, env)))
    assert {"evaluate", "acc-dataset", f"{TRAIN}train-report"} <= stale, stale
    assert not stale & {TRAIN + s for s in ("validate-data", "teacher", "shrink@kernel",
                        "shrink@depth1", "shrink@depth2", "shrink@expand1", "shrink@expand2")}, stale
    assert not any(name.startswith("latency@") for name in stale), stale


@pytest.mark.slow
def test_editing_the_active_preset_makes_the_stages_stale(repo_copy: Path):
    """Every stage depends on ofa/presets/<preset>.yaml, the overlay the config loader reads."""
    env = stage_env(repo_copy)
    preset = repo_copy / "ofa/presets/smoke.yaml"
    preset.write_text(preset.read_text().replace("population: 20", "population: 21"))
    stale = set(json.loads(run([DVC, "status", "--json"], repo_copy, env)))
    assert {f"{TRAIN}teacher", f"{TRAIN}train-report", "search@cpu1-b1", "report"} <= stale, stale


@pytest.mark.slow
def test_registering_a_device_adds_only_its_stages(repo_copy: Path):
    env = stage_env(repo_copy)
    dvc = DVC
    assert json.loads(run([dvc, "status", "--json"], repo_copy, env)) == {}
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["devices"]["ort2-b4"] = {"backend": "onnxruntime", "threads": 2, "batch_size": 4}
    params["constraints"]["ort2-b4"] = {"latency_frac": [0.5]}
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(json.loads(run([dvc, "status", "--json"], repo_copy, env)))
    # its own stages, and the report, which declares which devices it covers
    new = {"latency@ort2-b4", "gate-latency@ort2-b4", "search@ort2-b4", "export@ort2-b4", "report"}
    assert changed == new, changed
    # what `dvc repro` runs: those and every stage after them, here nothing more (running
    # them for real is test_flows.py's new-devices flow, which checks the record after)
    dot = run([dvc, "dag", "--dot"], repo_copy, env)
    assert "-> \"report\"" in dot and downstream(dot, changed) == new, dot
    # a changed limit stales the device's search, export and the report, not its table
    # (what `dvc repro` would rerun: test_an_experiment_reruns_only_what_changed runs one)
    del params["devices"]["ort2-b4"], params["constraints"]["ort2-b4"]
    params["constraints"]["ort1-b1"]["flops_m"] = [12.0]
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = set(json.loads(run([dvc, "status", "--json"], repo_copy, env)))
    assert stale == {"search@ort1-b1", "export@ort1-b1", "report"}, stale


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
    main = {s for s in stages if not s.startswith("ablation/")}   # test_ablation.py runs those
    assert main <= ran, main - ran  # every stage's commands were traced


@pytest.mark.slow
def test_the_reports_open_offline(smoke_repo: Path):
    """The pages a user is pointed to load nothing from the network: the validation suites'
    own pages and the markdown reports reference no remote URL, and the training curves are
    an image (the CSV plots' HTML needs a CDN)."""
    import re

    remote = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|\]\(\s*https?://""", re.I)
    pages = sorted((smoke_repo / "reports").glob("validation/*.html"))
    pages += sorted((smoke_repo / "reports").glob("*.md"))
    assert {p.name for p in pages} >= {"raw_data.html", "acc_dataset.html", "pareto.md",
                                       "evaluate.md"}, pages
    for page in pages:
        text = page.read_text()
        assert not remote.search(text), f"{page} references {remote.search(text).group(0)}"
    assert (smoke_repo / "reports/train/curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "](train/curves.png)" in (smoke_repo / "reports/evaluate.md").read_text()
