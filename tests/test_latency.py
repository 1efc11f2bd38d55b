"""Latency tables on a tiny space, measured on the real CPU: complete, summed, refused when wrong."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ofa.config import load_params
from ofa.encoding import to_genes
from ofa.errors import OFAError
from ofa.latency import (LatencyModel, build_table, check_table, device_rank_agreement,
                         end_to_end_ms, read_table, write_layer_list)
from ofa.paths import latency_table as table_path
from ofa.latency.check import check_configs, kendall_tau
from ofa.latency.layers import (enumerate_layers, input_shape, layer_cost, layer_modules,
                                subnet_layers, torch_seed)
from ofa.latency.measure import MAX_REPEAT_FACTOR, time_interleaved, time_runner
from ofa.latency.calibrate import (calibration_group, fit_calibration, fit_stage_calibration,
                                   input_values)
from ofa.latency.table import calibration_configs
from ofa.nn.ops import conv_macs
from ofa.nn.static import count_macs, count_params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace
from tests.conftest import ROOT, tiny_space_params as _params

DEVICES = {"t1": {"backend": "torch", "threads": 1, "batch_size": 1, "latency_ms": [1.0]},
           "ort": {"backend": "onnxruntime", "threads": 1, "batch_size": 2, "flops_m": [1000.0]},
           "ts": {"backend": "torchscript", "threads": 1, "batch_size": 2, "flops_m": [1000.0]}}
EXT = {"backend": "torch", "flops_m": [1000.0]}  # a device whose table was measured elsewhere


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lat")
    params = _params(tmp, DEVICES)
    paths = {d: build_table(params, d, show_progress=False) for d in DEVICES}
    return params, SearchSpace(params.space), paths, tmp


@pytest.mark.parametrize("device", list(DEVICES))
def test_table_has_every_layer_with_positive_timings(tiny, device):
    params, space, paths, _ = tiny
    df, meta = read_table(paths[device])
    assert list(df["key"]) == [s.key for s in enumerate_layers(space)]
    assert (df["median_ms"] > 0).all() and np.isfinite(df["median_ms"]).all()
    assert (df["spread_ms"] >= 0).all() and (df["count"] == params.latency.repeats).all()
    assert meta["format"] == "ofa-latency/1" and meta["space"] == space.fingerprint()
    assert meta["device"] == device and meta["device_entry"]["backend"] == DEVICES[device]["backend"]
    assert np.isfinite(meta["overhead_ms"]) and len(meta["calibration"]) >= 2


def test_layers_are_distinct_and_cover_every_slot(tiny):
    _, space, _, _ = tiny
    specs = enumerate_layers(space)
    assert len({s.key for s in specs}) == len(specs)
    # blocks 2..4 of a stage share their layers: per resolution 2 + stages * 2 * |k| * |e| at most
    c = space.cfg
    per_r = 2 + space.n_stages * 2 * len(c.kernel_choices) * len(c.expand_choices)
    assert len(specs) <= per_r * len(c.resolutions)
    for seed in range(10):
        cfg = space.sample(random.Random(seed))
        assert {s.key for s in subnet_layers(space, cfg)} <= {s.key for s in specs}


def test_layer_modules_chain_into_the_exported_subnet(tiny):
    """The timed modules are exactly what exported subnets run: chained, they compute it."""
    _, space, _, _ = tiny
    specs = enumerate_layers(space)
    modules = layer_modules(space, specs, seed=3)
    with torch_seed(3):
        net = OFAMobileNetV3(space).eval()
    for seed in range(3):
        cfg = space.sample(random.Random(seed))
        x = torch.randn(2, space.cfg.in_channels, cfg.r, cfg.r)
        h = x
        with torch.no_grad():
            for spec in subnet_layers(space, cfg):
                assert h.shape[1:] == input_shape(spec, 2)[1:]
                h = modules[spec.key](h)
            torch.testing.assert_close(h, net.export(cfg).eval()(x))


def test_analytic_costs_match_counting_each_module(tiny):
    _, space, _, _ = tiny
    specs = enumerate_layers(space)
    modules = layer_modules(space, specs)
    for spec in specs:
        total = 0

        def hook(m, _i, out):
            nonlocal total
            total += conv_macs(m, out)

        mod = modules[spec.key]
        handles = [m.register_forward_hook(hook) for m in mod.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            mod(torch.zeros(input_shape(spec, 1)))
        for h in handles:
            h.remove()
        assert layer_cost(space, spec) == (total, count_params(mod)), spec.key


@pytest.mark.parametrize("seed", range(4))
def test_prediction_is_the_sum_of_the_subnets_entries(tiny, seed):
    _, space, paths, _ = tiny
    df, meta = read_table(paths["t1"])
    entry = dict(zip(df["key"], df["median_ms"]))
    model = LatencyModel.load(paths["t1"], space)
    cfg = space.sample(random.Random(seed))
    expected = sum(entry[s.key] for s in subnet_layers(space, cfg))
    genes = to_genes(space, [cfg])
    assert model.layer_sum_genes(genes)[0] == pytest.approx(expected)
    assert model.predict([cfg])[0] == pytest.approx(expected + meta["overhead_ms"])
    raw = dict(zip(df["key"], df["raw_median_ms"]))
    spec = next(s for s in enumerate_layers(space) if s.key == df["key"][0])
    scale = meta["scales"][calibration_group(spec)]
    assert entry[spec.key] == pytest.approx(max(
        scale * raw[spec.key] + meta["input_ms_per_m"] * input_values(spec),
        0.05 * scale * raw[spec.key]))
    assert model.predict_genes(genes)[0] == pytest.approx(expected + meta["overhead_ms"])


@pytest.mark.parametrize("seed", range(6))
def test_macs_and_params_match_the_exported_subnet(tiny, seed):
    _, space, paths, _ = tiny
    model = LatencyModel.load(paths["t1"], space)
    rng = random.Random(100 + seed)
    cfgs = [space.sample(rng) for _ in range(3)] + [space.min_config(), space.max_config()]
    net = OFAMobileNetV3(space)
    genes = to_genes(space, cfgs)
    macs, n_params = model.macs_genes(genes), model.params_genes(genes)
    for i, cfg in enumerate(cfgs):
        sub = net.export(cfg)
        assert macs[i] == count_macs(sub, cfg.r, space.cfg.in_channels)
        assert n_params[i] == count_params(sub)


def test_prediction_is_fast_enough_for_search(space):
    """Search calls it ~500 times on 100 rows; the whole search must take well under 0.3 s."""
    model = LatencyModel(space, {s.key: 1.0 for s in enumerate_layers(space)}, 0.5)
    rng = random.Random(0)
    cfgs = [space.sample(rng) for _ in range(100)]
    genes = to_genes(space, cfgs)
    model.predict_genes(genes)
    t0 = time.perf_counter()
    for _ in range(500):
        model.predict_genes(genes)
    assert time.perf_counter() - t0 < 0.15
    n = np.array([len(subnet_layers(space, c)) for c in cfgs])
    assert np.allclose(model.predict_genes(genes), n + 0.5)


def test_calibration_fit_is_robust():
    rng = np.random.default_rng(0)
    sums = np.linspace(1.0, 3.0, 16)
    inputs = rng.uniform(0.5, 2.0, 16)
    measured = 1.3 * sums - 0.05 * inputs + 0.2
    measured[4] *= 3                                    # one disturbed timing
    scale, per_input, overhead = fit_calibration(sums, measured, inputs)
    assert (scale, per_input, overhead) == pytest.approx((1.3, -0.05, 0.2), abs=1e-6)
    # too few subnets for three terms: the two-term Theil-Sen line, no input term
    scale, per_input, overhead = fit_calibration(sums[:6], measured[:6] + 0.05 * inputs[:6],
                                                 inputs[:6])
    assert (scale, per_input, overhead) == pytest.approx((1.3, 0.0, 0.2))
    assert fit_calibration(np.ones(4), np.full(4, 1.5)) == (1.0, 0.0, 0.5)   # no spread
    # an input term that cannot be told from the sums: the two-term line
    assert fit_calibration(sums, 1.3 * sums + 0.2, 2 * sums)[1] == 0.0


def test_stage_calibration_recovers_per_stage_scales():
    rng = np.random.default_rng(1)
    groups = rng.uniform(0.2, 1.0, (24, 4))
    fixed = rng.uniform(0.1, 0.2, 24)
    scales = np.array([0.9, 1.2, 0.9, 1.8])
    measured = groups @ scales + fixed + 0.03
    measured[3] *= 2                                    # one disturbed timing
    coef, overhead = fit_stage_calibration(groups, fixed, measured)
    assert coef == pytest.approx(scales, abs=1e-6) and overhead == pytest.approx(0.03, abs=1e-6)
    # too few subnets for five terms, or a scale the range refuses: no stage fit
    assert fit_stage_calibration(groups[:14], fixed[:14], measured[:14]) is None
    assert fit_stage_calibration(groups, fixed, groups @ [0.1, 1, 1, 1] + fixed) is None


def test_check_writes_a_report(tiny):
    params, space, _, tmp = tiny
    res = check_table(params, "t1")
    assert res["n"] == params.latency.check_subnets and 0.0 <= res["within_10pct"] <= 1.0
    assert res["rmse_ms"] >= 0 and len(res["rows"]) == res["n"]
    assert res["drift"] > 0 and 1 <= res["attempts"] <= 3
    saved = json.loads((tmp / "rep" / "t1.json").read_text())
    assert saved["within_10pct"] == res["within_10pct"] and not saved["external"]
    assert (tmp / "rep" / "t1_parity.png").read_bytes()[:4] == b"\x89PNG"
    # the check's subnets are never the calibration subnets that fitted the overhead
    cal = {str(c) for c in calibration_configs(space, params.latency.seed)}
    assert not cal & {r["config"] for r in res["rows"]}
    assert len(check_configs(space, 0, 20)) == 20


def test_end_to_end_leaves_the_module_as_it_was(tiny):
    params, space, _, _ = tiny
    net = OFAMobileNetV3(space).export(space.max_config()).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for dev in ("t1", "ts", "ort"):
        ms = end_to_end_ms(net, params.device(dev), space.max_config().r, 1, params.latency)
        assert np.isfinite(ms) and ms > 0
    for k, v in net.state_dict().items():
        assert v.is_contiguous() and torch.equal(v, before[k])
    assert torch.get_num_threads() == 1  # restored (conftest sets 1)


def test_interleaved_timing_visits_every_runner_each_round():
    calls = []
    runners = [lambda i=i: calls.append(i) for i in range(5)]
    out = time_interleaved(runners, warmup=1, repeats=3, seed=0)
    assert out.shape == (5, 3) and (out >= 0).all()
    timed = calls[3::4]                       # every visit: 3 warm calls, then the timed one
    assert len(calls) == 4 * 5 * 4 and calls[0::4] == timed
    for rnd in range(4):
        assert sorted(timed[5 * rnd:5 * rnd + 5]) == list(range(5))


def test_a_missing_layer_is_named(tiny, tmp_path):
    _, space, paths, _ = tiny
    df, _ = read_table(paths["t1"])
    victim = df["key"].iloc[5]
    broken = tmp_path / "broken.csv"
    df[df["key"] != victim].to_csv(broken, index=False)
    params = _params(tmp_path, {"ext": {**EXT, "table": str(broken)}})
    with pytest.raises(OFAError, match=victim):
        build_table(params, "ext")
    kept = df["key"] != victim
    with pytest.raises(OFAError, match=f"lacks the layer {victim}"):
        LatencyModel(space, dict(zip(df["key"][kept], df["median_ms"][kept])))


def test_an_external_table_is_registered(tiny, tmp_path):
    _, space, _, _ = tiny
    layers = write_layer_list(space, tmp_path / "layers.csv")
    listed = pd.read_csv(layers)
    assert list(listed["key"]) == [s.key for s in enumerate_layers(space)]
    measured = listed[["key"]].assign(median_ms=0.5)
    measured.loc[len(measured)] = {"key": "overhead", "median_ms": -0.05}  # may be < 0
    measured.to_csv(tmp_path / "phone.csv", index=False)
    params = _params(tmp_path, {"phone": {**EXT, "table": str(tmp_path / "phone.csv"),
                                          "latency_ms": [5.0]}})
    path = build_table(params, "phone")
    assert path == table_path(params, "phone")
    df, meta = read_table(path)
    assert meta["imported_from"].endswith("phone.csv") and meta["overhead_ms"] == -0.05
    assert {"macs", "params", "kind", "size"} <= set(df.columns)
    model = LatencyModel.load(path, space)
    cfg = space.max_config()
    assert model.predict([cfg])[0] == pytest.approx(0.5 * len(subnet_layers(space, cfg)) - 0.05)
    res = check_table(params, "phone")          # not timed here: reported as external
    assert res["external"] and res["n"] == 0
    assert json.loads((tmp_path / "rep" / "phone.json").read_text())["within_10pct"] is None
    bad = measured.assign(median_ms=-1.0)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    params = _params(tmp_path, {"bad": {**EXT, "table": str(tmp_path / "bad.csv")}})
    with pytest.raises(OFAError, match="non-positive"):
        build_table(params, "bad")


def test_a_table_from_another_space_or_a_bad_file_is_refused(tiny, tmp_path):
    params, _, paths, _ = tiny
    other = SearchSpace(load_params(ROOT / "params.yaml").space)
    with pytest.raises(OFAError, match="another search space"):
        LatencyModel.load(paths["t1"], other)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(OFAError, match="not a parquet file"):
        read_table(tmp_path / "junk.parquet")
    with pytest.raises(OFAError, match="does not exist"):
        LatencyModel.load(tmp_path / "none.parquet", other)
    with pytest.raises(OFAError, match="unknown device 'nope'"):
        build_table(params, "nope")
    # a foreign parquet registered as an external table is refused too
    ext = _params(tmp_path, {"ext": {**EXT, "table": str(paths["t1"])}},
                  space={"resolutions": [12]})
    with pytest.raises(OFAError, match="another search space"):
        build_table(ext, "ext")


def test_devices_rank_subnets(tiny):
    params, _, _, _ = tiny
    taus = device_rank_agreement(params, ["t1", "ort", "ts"], n=60)
    assert set(taus) == {"t1~ort", "t1~ts", "ort~ts"}
    assert all(-1.0 <= t <= 1.0 for t in taus.values())
    with_macs = device_rank_agreement(params, ["t1", "ort"], n=60, macs=True)
    assert set(with_macs) == {"t1~ort", "t1~MACs", "ort~MACs"}
    assert with_macs["t1~ort"] == taus["t1~ort"]
    a = np.arange(10.0)
    assert kendall_tau(a, a) == pytest.approx(1.0) and kendall_tau(a, -a) == pytest.approx(-1.0)


def test_fast_modules_get_more_rounds_up_to_a_bound():
    def rounds(sleep_s: float) -> int:
        out = time_interleaved([lambda: time.sleep(sleep_s)] * 2, warmup=1, repeats=3, seed=0,
                               min_seconds=0.05)
        return out.shape[1]

    cap = MAX_REPEAT_FACTOR * 3
    assert rounds(0.0) == cap                  # instant modules: up to the bound
    assert 3 < rounds(0.0005) < cap            # ~4.5 ms a round (4 calls each): ~11 rounds
    assert rounds(0.01) == 3                   # slow modules keep `repeats`
    assert time_interleaved([lambda: None], warmup=0, repeats=3).shape == (1, 3)
    assert len(time_runner(lambda: None, warmup=1, repeats=3, min_seconds=0.05)) == cap
    assert len(time_runner(lambda: time.sleep(0.03), warmup=1, repeats=3, min_seconds=0.05)) == 3
