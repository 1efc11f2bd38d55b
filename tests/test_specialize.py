"""Specialization end to end on a tiny space: table -> predictor -> search -> export -> report."""

from __future__ import annotations

import json
import shutil
import random

import numpy as np
import pandas as pd
import pytest
import torch

from ofa.checkpoint import save_checkpoint
from ofa.config import to_dict
from ofa.errors import OFAError
from ofa.latency import LatencyModel, build_table
from ofa.paths import export_record
from ofa.paths import latency_table as table_path
from ofa.paths import search_result as search_path
from ofa.nn.supernet import OFAMobileNetV3
from ofa.predictor import fit_predictor, load_predictor
from ofa.space import SearchSpace, SubnetConfig
from ofa.export_device import baseline_configs, run_export
from ofa.report_inputs import read_verification
from ofa.specialize import read_search, run_report, run_search
from tests.conftest import tiny_space_params

DEVICES = {"t1": {"backend": "torch", "threads": 1, "batch_size": 1, "flops_m": [1.0]},
           "o1": {"backend": "onnxruntime", "threads": 1, "batch_size": 1, "flops_m": [1.0]}}


def make_world(tmp, devices: dict = DEVICES):
    """Tables for the devices, a predictor fitted on a synthetic dataset, a supernet checkpoint
    and an evaluation record: everything specialization reads, at tiny scale."""
    overrides = dict(search={"population": 16, "generations": 15}, predictor={"epochs": 20},
                     data={"subset": 200, "val_size": 100},
                     train={"bn_calib_images": 32, "eval_batch_size": 100})
    params = tiny_space_params(tmp, devices, **overrides)
    space = SearchSpace(params.space)
    for d in devices:
        build_table(params, d, show_progress=False)
    lat = {d: LatencyModel.load(table_path(params, d), space) for d in devices}
    lo = {d: float(m.predict([space.min_config()])[0]) for d, m in lat.items()}
    hi = {d: float(m.predict([space.max_config()])[0]) for d, m in lat.items()}
    # limits verification meets whatever the load (tiny subnets time noisily; ofa/verify.py's
    # tightening and failure are tested with fake devices in test_verify.py)
    devices = {d: devices[d] | {"latency_ms": [1.5 * hi[d], 3 * hi[d]],
                                "flops_m": [1.0]} for d in devices}
    params = tiny_space_params(tmp, devices, **overrides)
    rng = random.Random(0)
    cfgs = list({space.canonical(space.sample(rng)) for _ in range(80)})
    acc = [0.5 + 0.01 * sum(c.d) + 0.001 * c.r for c in cfgs]  # bigger is better
    pd.DataFrame({"config": [str(c) for c in cfgs], "accuracy": acc}).to_parquet(tmp / "acc.parquet")
    fit_predictor(params)
    torch.manual_seed(0)
    net = OFAMobileNetV3(space)
    ckpt = tmp / "ckpt" / "last.pt"
    save_checkpoint(ckpt, net.state_dict(), {"space": to_dict(params.space), "complete": True})
    evaluate = {"rows": [{"name": n, "config": str(c), "val_acc": 0.2 - 0.01 * i,
                          "test_acc": 0.1 + 0.01 * i}
                         for i, (n, c) in enumerate(baseline_configs(space))]}
    (tmp / "evaluate.json").write_text(json.dumps(evaluate))
    return params, space, ckpt, tmp


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("spec"))


@pytest.mark.parametrize("device", list(DEVICES))
def test_search_meets_every_constraint(world, device):
    params, space, _, _ = world
    run_search(params, device)
    record = read_search(params, device)
    model = LatencyModel.load(table_path(params, device), space)
    assert len(record["results"]) == 3 and record["pareto_front"]
    for row in record["results"]:
        cfg = SubnetConfig.parse(row["config"])
        if row["name"] == "latency_ms":
            assert model.predict([cfg])[0] <= row["limit"] + 1e-9
        else:
            assert row["macs"] / 1e6 <= row["limit"]
        assert row["predicted_acc"] == pytest.approx(load_predictor(params).predict([cfg])[0])
    tight, loose = [r for r in record["results"] if r["name"] == "latency_ms"]
    assert loose["predicted_acc"] >= tight["predicted_acc"] - 1e-9  # a looser limit never hurts


@pytest.mark.parametrize("frac", [[0.3, 0.8], [1.0]])
def test_latency_fractions_resolve_between_the_fastest_and_slowest_subnet(world, tmp_path, frac):
    params, space, _, _ = world
    model = LatencyModel.load(table_path(params, "t1"), space)
    lo, hi = (float(model.predict([c])[0]) for c in (space.min_config(), space.max_config()))
    rel = tiny_space_params(tmp_path, {"t1": DEVICES["t1"] | {"latency_frac": frac}},
                            latency={"table_dir": params.latency.table_dir},
                            predictor={"weights_path": params.predictor.weights_path},
                            search={"population": 16, "generations": 15})
    run_search(rel, "t1")
    rows = [r for r in read_search(rel, "t1")["results"] if r["name"] == "latency_ms"]
    assert [r["limit"] for r in rows] == pytest.approx([lo + f * (hi - lo) for f in frac], rel=1e-3)
    for row in rows:
        assert model.predict([SubnetConfig.parse(row["config"])])[0] <= row["limit"] + 1e-9


def test_search_is_seeded(world):
    params, _, _, _ = world
    first = search_path(params, "t1").read_text() if search_path(params, "t1").is_file() else None
    a = run_search(params, "t1").read_text()
    assert run_search(params, "t1").read_text() == a and (first is None or first == a)


def test_export_and_report(world):
    params, space, ckpt, tmp = world
    for d in DEVICES:
        run_search(params, d)
        out = run_export(params, d, ckpt)
        record = json.loads(out.read_text())
        assert len(record["chosen"]) == 3 and len(record["baselines"]) == len(baseline_configs(space))
        assert record["drift"] > 0   # the machine's speed now vs at the table's build
        for row in record["chosen"]:
            assert row["measured_latency_ms"] > 0 and 0 <= row["test_acc"] <= 1
            folder = tmp / "models" / d / row["folder"].split("/")[-1]
            assert json.loads((folder / "config.json").read_text())["onnx_max_abs_diff"] <= 1e-4
    run_report(params, None, tmp / "evaluate.json", tmp / "reports")
    md = (tmp / "reports" / "pareto.md").read_text()
    for d in DEVICES:
        assert f"## {d}" in md and f"](pareto/{d}.png)" in md
        assert (tmp / "reports" / "pareto" / f"{d}.png").read_bytes()[:4] == b"\x89PNG"
    assert "beats the best no-slower uniform baseline" in md
    n_uniform = 0
    for d in DEVICES:   # every shipped subnet met its limit when measured, and says so
        assert "**3 of 3 shipped subnets meet their limit when measured.**" in md
        record = json.loads(export_record(params, d).read_text())
        assert all(r["verified_latency_ms"] <= r["limit"] for r in record["chosen"]
                   if r["name"] == "latency_ms")
        verification = read_verification(params, d)
        assert [v["constraint"] for v in verification["constraints"]] == \
            [r["constraint"] for r in record["chosen"]]
        for v in verification["constraints"]:
            verdicts = [c["verdict"] for c in v["candidates"]]
            assert verdicts.count("shipped") == 1 and len(verdicts) >= 1
            assert all(c["val_acc"] <= next(x for x in v["candidates"] if x["verdict"] ==
                                            "shipped")["val_acc"]
                       for c in v["candidates"] if c["meets_limit"])
            # evaluated where it could ship and the first choice; no pass for the others
            assert [c["val_acc"] is not None for c in v["candidates"]] == \
                [c["meets_limit"] or i == 0 for i, c in enumerate(v["candidates"])]
            # the search's candidates first, then the uniform subnets that met the limit
            origins = [c["origin"] for c in v["candidates"] if c["round"] == 0]
            assert origins[0] == "search" and origins == sorted(origins, key=lambda o: o != "search")
            uniform = [c for c in v["candidates"] if c["origin"] != "search"]
            assert all(c["meets_limit"] and c["round"] == 0 for c in uniform)
            assert {c["config"] for c in uniform} <= {b["config"] for b in record["baselines"]}
            n_uniform += len(uniform)
        n = sum(c["val_acc"] is not None for v in verification["constraints"] for c in v["candidates"])
        assert f"and {n} of them evaluated on the validation split" in md.split(f"## {d}")[1].split("\n## ")[0]
    assert n_uniform > 0   # the min subnet fits the tiny space's looser limits
    assert "| t1 vs o1 |" in md and "| o1 vs MACs |" in md
    summary = json.loads((tmp / "reports" / "pareto.json").read_text())
    assert set(summary) == set(DEVICES)
    for d in DEVICES:  # keyed by the constraint as written, with its resolved limit
        assert all(k.startswith(("latency_ms=", "flops_m=")) for k in summary[d]), summary[d]
        assert all(v["limit"] > 0 and isinstance(v["met_limit"], bool) for v in summary[d].values())
    head = json.loads((tmp / "reports" / "metrics.json").read_text())
    for d in DEVICES:
        dev = head[d]
        assert dev["shipped"] == 3 and dev["met_limit"] == sum(
            v["met_limit"] for v in summary[d].values())


def test_report_fits_80_columns_off_a_terminal(world, capsys):
    """`ofa-cli report` in a pipe or DVC's log: a compact form, no line over 80 characters."""
    from ofa.report_terminal import print_table

    params, _, ckpt, tmp = world
    for d in DEVICES:
        if not export_record(params, d).is_file():
            run_search(params, d)
            run_export(params, d, ckpt)
    print_table(run_report(params, None, tmp / "evaluate.json", tmp / "reports"))
    out = capsys.readouterr().out
    assert "t1: specialized subnets" in out and "MMACs" in out
    assert max(len(line) for line in out.splitlines()) <= 80, out


def test_the_report_sets_shipped_architectures_beside_their_runs_alone(world):
    """A shipped subnet's architecture trained alone (reports/scratch/, as `ofa-cli
    train-scratch` writes it) appears beside it with the difference; a distilled run is not
    the baseline; a file that is no such report stops the report before it writes."""
    from ofa.paths import scratch_dir

    params, _, ckpt, tmp = world
    for d in DEVICES:
        if not export_record(params, d).is_file():
            run_search(params, d)
            run_export(params, d, ckpt)
    row = json.loads(export_record(params, "t1").read_text())["chosen"][0]
    folder = scratch_dir(params)
    folder.mkdir(parents=True, exist_ok=True)
    run = {"name": f"scratch-{row['config']}", "config": row["config"], "distilled": False,
           "test_acc": row["test_acc"] + 0.01, "val_acc": 0.5, "train_seconds": 500.0,
           "images_seen": 1000}
    try:
        (folder / f"scratch-{row['config']}.json").write_text(json.dumps(run))
        (folder / f"scratch-{row['config']}-kd.json").write_text(
            json.dumps(run | {"distilled": True, "test_acc": 0.99}))
        # a run on other data (read last, so it would win) is no baseline for this supernet
        (folder / f"scratch-{row['config']}_augmented.json").write_text(
            json.dumps(run | {"test_acc": 0.98, "data": "0" * 16}))
        run_report(params, None, tmp / "evaluate.json", tmp / "reports")
        md = (tmp / "reports" / "pareto.md").read_text()
        assert f"| {100 * run['test_acc']:.2f} (-1.00; 500 s) |" in md
        same = sum(r["config"] == row["config"]
                   for r in json.loads(export_record(params, "t1").read_text())["chosen"])
        assert (f"{same} of 3 shipped architectures were trained alone: the supernet's subnet "
                f"is within 0.3 points of (or above) it on 0 of {same}; those 1 scratch run(s) "
                "took 500 s") in md   # one run, however many constraints ship its architecture
        other = sum(r["config"] == row["config"]   # o1 may ship the same architecture
                    for r in json.loads(export_record(params, "o1").read_text())["chosen"])
        assert ("None of the 3 shipped architectures was trained alone" if not other else
                f"{other} of 3 shipped architectures were trained alone") in md
        summary = json.loads((tmp / "reports" / "pareto.json").read_text())
        assert summary["t1"][row["constraint"]]["alone_test_acc"] == run["test_acc"]
        before = md
        (folder / "scratch-broken.json").write_text('{"config": "r99"}')
        with pytest.raises(OFAError, match=r"scratch report .*scratch-broken\.json is not a "
                                           r"report of `ofa-cli train-scratch`"):
            run_report(params, None, tmp / "evaluate.json", tmp / "reports")
        assert (tmp / "reports" / "pareto.md").read_text() == before
    finally:
        shutil.rmtree(folder)


def test_a_failed_export_leaves_the_previous_one_whole(world, monkeypatch):
    import ofa.export
    import ofa.export_device

    params, _, ckpt, tmp = world
    run_search(params, "t1")
    out = run_export(params, "t1", ckpt)
    before = {p.relative_to(tmp): p.read_bytes() for p in (tmp / "models" / "t1").rglob("*")
              if p.is_file()}
    real, calls = ofa.export.export_choice, []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OFAError("simulated failure on the second constraint")
        return real(*args, **kwargs)

    monkeypatch.setattr(ofa.export_device, "export_choice", fail_second)  # as run_export calls it
    with pytest.raises(OFAError, match="simulated"):
        run_export(params, "t1", ckpt)
    after = {p.relative_to(tmp): p.read_bytes() for p in (tmp / "models" / "t1").rglob("*")
             if p.is_file()}
    assert after == before and json.loads(out.read_text())["chosen"]
    assert not [p for p in (tmp / "models").iterdir() if p.name.startswith(".")]  # no debris


def test_bad_inputs_are_refused(world, tmp_path):
    params, space, ckpt, _ = world
    with pytest.raises(OFAError, match="unknown device 'phone'"):
        run_search(params, "phone")
    tight = tiny_space_params(tmp_path, {"t1": DEVICES["t1"] | {"latency_ms": [1e-6]}},
                              latency={"table_dir": params.latency.table_dir},
                              predictor={"weights_path": params.predictor.weights_path})
    with pytest.raises(OFAError, match="below the smallest subnet's"):
        run_search(tight, "t1")
    with pytest.raises(OFAError, match="does not exist"):
        read_search(tight, "t1")
    other = tiny_space_params(tmp_path, DEVICES | {"t1": DEVICES["t1"] | {"latency_ms": [5.0]}},
                              space={"resolutions": [12, 20]},
                              latency={"table_dir": params.latency.table_dir},
                              predictor={"weights_path": params.predictor.weights_path})
    with pytest.raises(OFAError, match="another search space"):
        run_search(other, "t1")
    assert np.isfinite(LatencyModel.load(table_path(params, "t1"), space).predict(
        [space.max_config()])).all()


def test_a_verification_record_of_another_space_or_broken_is_refused(world):
    params, _, ckpt, tmp = world
    if not export_record(params, "t1").is_file():
        run_search(params, "t1")
        run_export(params, "t1", ckpt)
    path = export_record(params, "t1").parent / "verification.json"
    good = path.read_text()
    try:
        record = json.loads(good)
        for edit, needle in ((lambda r: r.update(space="0" * 16), "verified in another search space"),
                             (lambda r: r.update(format="x"), "is not a verification record"),
                             (lambda r: r["constraints"][0]["candidates"][0].update(val_acc=1.5),
                              "violates its contract.*val_acc"),
                             (lambda r: r["constraints"][0]["candidates"][0].update(val_acc=float("nan")),
                              "NaN is not a finite number"),
                             (lambda r: r["constraints"][0]["candidates"][0].update(drift=float("inf")),
                              "Infinity is not a finite number"),
                             (lambda r: r["constraints"][0]["candidates"][0].update(verdict="maybe"),
                              "violates its contract.*verdict")):
            broken = json.loads(good)
            edit(broken)
            path.write_text(json.dumps(broken))
            with pytest.raises(OFAError, match=needle):
                run_report(params, None, tmp / "evaluate.json", tmp / "reports")
        assert record["constraints"]
    finally:
        path.write_text(good)


def test_the_report_states_its_guarantee_and_the_searchs_regret():
    """The line per device counts the shipped subnets that met their limit when measured (by
    verified latency; MACs for FLOPs limits); the raw median, regret and the accuracy against
    the predictor's first choices follow."""
    from ofa.report import DeviceReport, _verified_note, guarantee_line

    def row(name, limit, verified, raw, regret, first_ok):
        return {"name": name, "limit": limit, "verified_latency_ms": verified,
                "measured_latency_ms": raw, "macs": 9_000_000, "regret": regret,
                "first_choice_met_limit": first_ok, "test_acc": 0.9,
                "first_choice_test_acc": 0.89}

    rows = [row("latency_ms", 2.0, 1.9, 2.1, 0.0, False), row("latency_ms", 2.0, 2.05, 2.05, 0.01, True),
            row("flops_m", 10.0, 5.0, 5.0, 0.002, True)]
    rep = DeviceReport("d", rows, [], [], drift=1.1)
    assert guarantee_line(rep) == "2 of 3 shipped subnets meet their limit when measured."
    note = _verified_note(rep)[0]
    assert note.startswith("**2 of 3 shipped subnets meet their limit when measured.**")
    assert "With the raw median instead of the verified latency, 0 of 2 latency limits" in note
    assert "ran 1.10x as long" in note and "Search regret: +0.40 points on average" in note
    assert "met its limit when measured in 2 of 3" in note
    assert "Mean test accuracy: 90.00% shipped against 89.00%" in note