"""Latency tables on a tiny space, measured on the real CPU: complete, summed, refused when wrong."""

from __future__ import annotations

import json
import random
import re
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


def test_head_cost_follows_the_feature_bias(space):
    """The head's parameter count has the feature-mix bias only where the space has one."""
    from dataclasses import replace

    from ofa.latency.layers import head_layer

    for bias in (True, False):
        sp = SearchSpace(replace(space.cfg, feature_bias=bias))
        spec = head_layer(sp, max(sp.cfg.resolutions))
        mod = layer_modules(sp, [spec])[spec.key]
        assert layer_cost(sp, spec)[1] == count_params(mod)


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
    assert res["drift"] > 0 and 1 <= res["attempts"] <= params.latency.check_sessions
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
    measured.loc[len(measured)] = {"key": "overhead", "median_ms": 0.05}  # >= 0 (contract)
    measured.to_csv(tmp_path / "phone.csv", index=False)
    params = _params(tmp_path, {"phone": {**EXT, "table": str(tmp_path / "phone.csv"),
                                          "latency_ms": [5.0]}})
    path = build_table(params, "phone")
    assert path == table_path(params, "phone")
    df, meta = read_table(path)
    assert meta["imported_from"].endswith("phone.csv") and meta["overhead_ms"] == 0.05
    assert {"macs", "params", "kind", "size"} <= set(df.columns)
    model = LatencyModel.load(path, space)
    cfg = space.max_config()
    assert model.predict([cfg])[0] == pytest.approx(0.5 * len(subnet_layers(space, cfg)) + 0.05)
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


# -- The table contract: overhead, fitted terms and timings of hostile tables ----------------
# Nothing here times a layer: tables are imported from a filled-in layer list (every entry
# 0.5 ms), so the tiny space's largest subnet (stem, 8 blocks, head) sums to 5 ms, its
# smallest (stem, 4 blocks, head) to 3 ms: the overhead lies in [-2.85, 5] ms.

INF, NAN = float("inf"), float("nan")
BOUND = ("expected a finite number in [-2.85, 5] ms (from minus 95% of the smallest subnet's "
         "layer sum to the largest subnet's)")


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """(tiny space, its layer list with median_ms 0.5 for every layer)."""
    tmp = tmp_path_factory.mktemp("filled")
    space = SearchSpace(_params(tmp).space)
    listed = pd.read_csv(write_layer_list(space, tmp / "layers.csv"))
    return space, listed[["key"]].assign(median_ms=0.5)


def _register(tmp_path, source):
    """Import `source` as device ext's table the way `ofa-cli latency` does (build_table)."""
    params = _params(tmp_path, {"ext": {**EXT, "table": str(source)}})
    return params, build_table(params, "ext")


def _csv(tmp_path, df, name="table.csv"):
    df.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _with_overhead(df, *values):
    rows = pd.DataFrame({"key": ["overhead"] * len(values), "median_ms": list(values)})
    return pd.concat([df.astype({"median_ms": object}), rows], ignore_index=True)


def _with_median(df, value, row=3):
    out = df.astype({"median_ms": object})
    out.loc[row, "median_ms"] = value
    return out


def _line(df):  # the CSV line of a row appended after the layers (the header is line 1)
    return len(df) + 2


def _layer_says(what):   # the message about the 4th layer's median_ms (CSV line 5)
    return lambda d: (f"median_ms of layer {d['key'][3]} (line 5) {what}; expected a finite "
                      "number > 0 (ms)")


def _over(shown):
    return lambda d: f"median_ms of the overhead row (line {_line(d)}) is {shown}; {BOUND}"


HOSTILE_CSV = {   # name: (table from the filled layer list, message)
    "overhead -1000": (lambda d: _with_overhead(d, -1000.0), _over("-1000")),
    "overhead below minus 95% of the smallest subnet": (lambda d: _with_overhead(d, -2.86),
                                                          _over("-2.86")),
    "overhead NaN": (lambda d: _with_overhead(d, "NaN"), _over("nan")),
    "overhead empty": (lambda d: _with_overhead(d, NAN), _over("nan")),
    "overhead inf": (lambda d: _with_overhead(d, INF), _over("inf")),
    "overhead -inf": (lambda d: _with_overhead(d, -INF), _over("-inf")),
    "overhead huge": (lambda d: _with_overhead(d, 1e9), _over("1e+09")),
    "overhead above the largest subnet": (lambda d: _with_overhead(d, 5.001), _over("5.001")),
    "overhead text": (lambda d: _with_overhead(d, "fast"),
                      lambda d: f"median_ms of the overhead row (line {_line(d)}) is not a number "
                                "('fast'); expected a finite number (ms)"),
    "two overhead rows": (lambda d: _with_overhead(d, 0.1, 0.2),
                          lambda d: f"the overhead is given 2 times (median_ms of the overhead row "
                                    f"(line {_line(d)}), median_ms of the overhead row (line "
                                    f"{_line(d) + 1})); expected exactly once"),
    "two overhead rows, one bad": (lambda d: _with_overhead(d, 0.1, -1000.0),
                                   lambda d: "the overhead is given 2 times"),
    "median_ms text": (lambda d: _with_median(d, "fast"), _layer_says("is not a number ('fast')")),
    "median_ms empty": (lambda d: _with_median(d, NAN), _layer_says("is empty (NaN)")),
    "median_ms NaN": (lambda d: _with_median(d, "NaN"), _layer_says("is empty (NaN)")),
    "median_ms inf": (lambda d: _with_median(d, INF), _layer_says("is inf, non-finite")),
    "median_ms zero": (lambda d: _with_median(d, 0.0),
                       lambda d: f"median_ms of layer {d['key'][3]} (line 5) is 0, non-positive; "
                                 "expected a finite number > 0 (ms)"),
    "median_ms negative": (lambda d: _with_median(d, -0.5),
                           lambda d: f"median_ms of layer {d['key'][3]} (line 5) is -0.5, "
                                     "non-positive; expected a finite number > 0 (ms)"),
    "median_ms text in the last row": (
        lambda d: _with_median(d, "0.5ms", row=len(d) - 1),
        lambda d: f"median_ms of layer {d['key'].iloc[-1]} (line {len(d) + 1}) is not a number "
                  "('0.5ms')"),
    "spread_ms text": (lambda d: d.assign(spread_ms=["wide"] + [0.01] * (len(d) - 1)),
                       lambda d: f"spread_ms of layer {d['key'][0]} (line 2) is not a number "
                                 "('wide'); expected a number >= 0 (ms) or empty"),
    "count text": (lambda d: d.assign(count=[20] * (len(d) - 1) + ["many"]),
                   lambda d: f"count of layer {d['key'].iloc[-1]} (line {len(d) + 1}) is not a "
                             "number ('many')"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CSV))
def test_a_hostile_csv_table_is_refused_naming_file_field_and_range(filled, tmp_path, case):
    _, listed = filled
    make, message = HOSTILE_CSV[case]
    source = _csv(tmp_path, make(listed))
    with pytest.raises(OFAError) as err:
        _register(tmp_path, source)
    text = str(err.value)
    assert text.startswith(f"devices.ext.table: {source}: ") and "\n" not in text, text
    assert message(listed) in text, text
    assert not (tmp_path / "lat").exists()          # nothing written


@pytest.mark.parametrize("overhead", [None, 0.0, 0.05, 5.0, -0.001, -2.84])
def test_a_valid_csv_table_still_imports_and_predicts(filled, tmp_path, overhead):
    space, listed = filled
    table = listed if overhead is None else _with_overhead(listed, overhead)
    params, path = _register(tmp_path, _csv(tmp_path, table))
    df, meta = read_table(path, space=space)
    assert meta["overhead_ms"] == (overhead or 0.0) and (df["median_ms"] == 0.5).all()
    cfg = space.max_config()
    model = LatencyModel.load(path, space)
    assert model.predict([cfg])[0] == pytest.approx(5.0 + (overhead or 0.0))


def _parquet(path, df, meta: dict | bytes | None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tbl = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        tbl = tbl.replace_schema_metadata({**(tbl.schema.metadata or {}), b"ofa": raw})
    pq.write_table(tbl, path)
    return path


def _source_meta(space, **terms):
    return {"format": "ofa-latency/1", "space": space.fingerprint(), "overhead_ms": 0.1,
            "scales": {"stem+head": 1.0, "blocks-o16": 1.2, "blocks-o24": 0.9},
            "input_ms_per_m": -0.2} | terms


SCALE = "expected a finite number in [0.5, 3] (a fitted scale)"
HOSTILE_PARQUET = {   # name: (meta terms, extra rows, message)
    "overhead_ms -1000": ({"overhead_ms": -1000.0}, None,
                          f"overhead_ms in the metadata is -1000; {BOUND}"),
    "overhead_ms -2.9": ({"overhead_ms": -2.9}, None,
                         f"overhead_ms in the metadata is -2.9; {BOUND}"),
    "overhead_ms NaN": ({"overhead_ms": NAN}, None, f"overhead_ms in the metadata is nan; {BOUND}"),
    "overhead_ms inf": ({"overhead_ms": INF}, None, f"overhead_ms in the metadata is inf; {BOUND}"),
    "overhead_ms huge": ({"overhead_ms": 1e9}, None,
                         f"overhead_ms in the metadata is 1e+09; {BOUND}"),
    "overhead_ms text": ({"overhead_ms": "0.1"}, None,
                         f"overhead_ms in the metadata is '0.1'; {BOUND}"),
    "overhead_ms null": ({"overhead_ms": None}, None,
                         f"overhead_ms in the metadata is None; {BOUND}"),
    "overhead as a row and in the metadata": (
        {}, 0.2, "the overhead is given 2 times (median_ms of the overhead row (row {n}), "
                 "overhead_ms in the metadata); expected exactly once"),
    "scale NaN": ({"scales": {"stem+head": 1.0, "blocks-o16": NAN}}, None,
                  f"scales['blocks-o16'] is nan; {SCALE}"),
    "scale zero": ({"scales": {"stem+head": 1.0, "blocks-o16": 0.0}}, None,
                   f"scales['blocks-o16'] is 0; {SCALE}"),
    "scale negative": ({"scales": {"stem+head": -1.0}}, None,
                       f"scales['stem+head'] is -1; {SCALE}"),
    "scale inf": ({"scales": {"blocks-o24": INF}}, None, f"scales['blocks-o24'] is inf; {SCALE}"),
    "scale 10": ({"scales": {"blocks-o24": 10.0}}, None, f"scales['blocks-o24'] is 10; {SCALE}"),
    "scale text": ({"scales": {"blocks-o24": "1.2"}}, None,
                   f"scales['blocks-o24'] is '1.2'; {SCALE}"),
    "scales not a mapping": ({"scales": [1.0, 1.2]}, None,
                             "scales is [1.0, 1.2]; expected a mapping"),
    "input term NaN": ({"input_ms_per_m": NAN}, None,
                       "input_ms_per_m is nan; expected a finite number in [-1000, 1000] ms per "
                       "million input values"),
    "input term inf": ({"input_ms_per_m": -INF}, None, "input_ms_per_m is -inf; expected a finite"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PARQUET))
def test_a_hostile_parquet_table_is_refused_naming_file_field_and_range(filled, tmp_path, case):
    space, listed = filled
    terms, row, message = HOSTILE_PARQUET[case]
    table = listed if row is None else _with_overhead(listed, row).astype({"median_ms": float})
    source = _parquet(tmp_path / "table.parquet", table, _source_meta(space, **terms))
    with pytest.raises(OFAError) as err:
        _register(tmp_path, source)
    text = str(err.value)
    assert text.startswith(f"devices.ext.table: {source}: ") and "\n" not in text, text
    assert message.format(n=len(listed) + 1) in text, text
    assert not (tmp_path / "lat").exists()


def test_a_repeated_metadata_key_and_a_nan_timing_in_parquet_are_refused(filled, tmp_path):
    space, listed = filled
    meta = json.dumps(_source_meta(space))[:-1] + ', "overhead_ms": 0.2}'
    source = _parquet(tmp_path / "twice.parquet", listed, meta.encode())
    with pytest.raises(OFAError, match=r"twice\.parquet: its metadata gives overhead_ms twice; "
                                       "expected exactly once"):
        _register(tmp_path, source)
    source = _parquet(tmp_path / "nan.parquet", _with_median(listed, NAN).astype(
        {"median_ms": float}), _source_meta(space))
    with pytest.raises(OFAError, match=rf"nan\.parquet: median_ms of layer {listed['key'][3]} "
                                       r"\(row 4\) is empty \(NaN\)"):
        _register(tmp_path, source)


def test_a_valid_parquet_table_still_imports(filled, tmp_path):
    space, listed = filled
    source = _parquet(tmp_path / "good.parquet", listed, _source_meta(space, overhead_ms=0.25))
    _, path = _register(tmp_path, source)
    df, meta = read_table(path, space=space)
    assert meta["overhead_ms"] == 0.25 and meta["source_meta"]["scales"]["blocks-o16"] == 1.2
    bare = _parquet(tmp_path / "bare.parquet", listed, None)   # no metadata: overhead 0
    assert read_table(_register(tmp_path, bare)[1])[1]["overhead_ms"] == 0.0


def _tamper(path, drop=(), add_row: bool = False, raw: bytes | None = None, **terms):
    """Rewrite a table written here with other metadata terms (or rows), as a hand edit would."""
    import pyarrow.parquet as pq

    tbl = pq.read_table(path)
    meta = json.loads(tbl.schema.metadata[b"ofa"])
    meta = {k: v for k, v in meta.items() if k not in drop} | terms
    df = tbl.to_pandas()
    if add_row:
        df = pd.concat([df, df.iloc[[0]].assign(key="overhead", median_ms=0.1)], ignore_index=True)
    return _parquet(path, df, raw if raw is not None else meta)


HOSTILE_OWN = {   # metadata terms of a table written here: (tamper arguments, message)
    "overhead_ms -1000": ({"overhead_ms": -1000.0}, f"overhead_ms is -1000; {BOUND}"),
    "overhead_ms -2.9": ({"overhead_ms": -2.9}, f"overhead_ms is -2.9; {BOUND}"),
    "overhead_ms NaN": ({"overhead_ms": NAN}, f"overhead_ms is nan; {BOUND}"),
    "overhead_ms inf": ({"overhead_ms": INF}, f"overhead_ms is inf; {BOUND}"),
    "overhead_ms huge": ({"overhead_ms": 1e9}, f"overhead_ms is 1e+09; {BOUND}"),
    "overhead_ms missing": ({"drop": ["overhead_ms"]},
                            "its metadata lacks overhead_ms; expected it exactly once"),
    "overhead as a row too": ({"add_row": True},
                              "has a row keyed 'overhead' (row 67); expected the overhead exactly "
                              "once, as overhead_ms in its metadata"),
    "scale NaN": ({"scales": {"stem+head": 1.0, "blocks-o16": NAN}},
                  f"scales['blocks-o16'] is nan; {SCALE}"),
    "scale zero": ({"scales": {"stem+head": 0.0}}, f"scales['stem+head'] is 0; {SCALE}"),
    "scale negative": ({"scales": {"blocks-o24": -1.2}}, f"scales['blocks-o24'] is -1.2; {SCALE}"),
    "scale inf": ({"scales": {"blocks-o24": INF}}, f"scales['blocks-o24'] is inf; {SCALE}"),
    "input term NaN": ({"input_ms_per_m": NAN}, "input_ms_per_m is nan; expected a finite number "
                                                "in [-1000, 1000]"),
    "overhead_ms twice": ({"raw": b'{"format": "ofa-latency/1", "overhead_ms": 0.1, '
                                  b'"overhead_ms": 0.2}'},
                          "its metadata gives overhead_ms twice; expected exactly once"),
}


@pytest.fixture()
def own_table(filled, tmp_path):
    """A valid table written here (imported from the filled layer list, overhead 0.1)."""
    _, listed = filled
    params, path = _register(tmp_path, _csv(tmp_path, _with_overhead(listed, 0.1)))
    return params, path


@pytest.mark.parametrize("case", list(HOSTILE_OWN))
def test_a_hand_edited_table_is_refused_where_it_is_read(filled, own_table, case):
    space, _ = filled
    params, path = own_table
    kwargs, message = HOSTILE_OWN[case]
    _tamper(path, **kwargs)
    for read in (lambda: LatencyModel.load(path, space), lambda: read_table(path, space=space)):
        with pytest.raises(OFAError) as err:
            read()
        text = str(err.value)
        assert text.startswith(f"latency table {path}") and "\n" not in text, text
        assert message in text, text


def test_without_the_space_the_overhead_is_capped_at_the_timing_cap(filled, own_table):
    space, _ = filled
    _, path = own_table
    _tamper(path, overhead_ms=1e9)
    with pytest.raises(OFAError, match=r"overhead_ms is 1e\+09; expected a finite number in "
                                       r"\[-1e\+06, 1e\+06\] ms \(within the cap on any timing"):
        read_table(path)
    _tamper(path, overhead_ms=9.0)    # above the largest subnet (5 ms), below the cap
    assert read_table(path)[1]["overhead_ms"] == 9.0
    with pytest.raises(OFAError, match=r"overhead_ms is 9; expected a finite number in \[-2.85, 5\]"):
        read_table(path, space=space)


@pytest.mark.parametrize("case", ["overhead_ms -1000", "overhead_ms NaN", "scale zero",
                                  "overhead as a row too"])
def test_the_latency_gate_refuses_a_hand_edited_table(filled, own_table, tmp_path, case):
    pytest.importorskip("great_expectations")
    from ofa.validation import gate

    params, path = own_table
    kwargs, message = HOSTILE_OWN[case]
    _tamper(path, **kwargs)
    with pytest.raises(OFAError, match=re.escape(message)):
        gate(params, "latency", "ext", out_dir=tmp_path / "gx")


def test_the_latency_gate_passes_a_valid_table_and_records_its_terms(own_table, tmp_path):
    pytest.importorskip("great_expectations")
    from ofa.validation import gate

    params, path = own_table
    _tamper(path, scales={"stem+head": 1.0, "blocks-o16": 1.2}, input_ms_per_m=-0.3)
    res = gate(params, "latency", "ext", out_dir=tmp_path / "gx")
    assert res["success"]
    checked = {r["kwargs"].get("column") for r in res["results"]}
    assert {"overhead_ms", "overhead_given", "scales[blocks-o16]", "input_ms_per_m"} <= checked
    bound = next(r["kwargs"]["max_value"] for r in res["results"]
                 if r["kwargs"].get("column") == "overhead_ms" and "max_value" in r["kwargs"])
    assert bound == pytest.approx(5.0)


@pytest.mark.parametrize("case,make", [
    ("median_ms text", lambda d: _with_median(d, "fast")),
    ("overhead -1000", lambda d: _with_overhead(d, -1000.0)),
    ("two overhead rows", lambda d: _with_overhead(d, 0.1, 0.2)),
])
def test_the_cli_refuses_a_hostile_table_with_one_error_line(filled, tmp_path, case, make):
    """`ofa-cli latency` on a registered table: exit 2 and `error: <one line>` (before this
    contract, text in median_ms ended as `error: unexpected ValueError`, exit 1)."""
    from tests.cli_support import cli

    _, listed = filled
    source = _csv(tmp_path, make(listed))
    _params(tmp_path, {"ext": {**EXT, "table": str(source)}})
    proc = cli(["latency", "--device", "ext"], tmp_path, timeout=180)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: devices.ext.table: {source}: "), lines[0]
    assert HOSTILE_CSV[case][1](listed) in lines[0]
    assert "unexpected" not in lines[0] and not (tmp_path / "lat").exists()


def test_a_fitted_negative_overhead_is_kept_and_passes_the_contract(filled):
    """Layers timed alone can over-price every network by a constant: the fits keep the
    negative overhead that says so (no constraint moves the other terms), and the contract
    accepts it down to minus 95% of the smallest subnet's layer sum."""
    from ofa.contracts import check_overhead
    from ofa.latency.table_io import overhead_bounds

    rng = np.random.default_rng(2)
    groups = rng.uniform(0.2, 1.0, (24, 4))
    fixed = rng.uniform(0.1, 0.2, 24)
    coef, overhead = fit_stage_calibration(groups, fixed,
                                           groups @ np.array([0.9, 1.2, 0.9, 1.8]) + fixed - 0.05)
    assert coef == pytest.approx([0.9, 1.2, 0.9, 1.8], abs=1e-6)
    assert overhead == pytest.approx(-0.05, abs=1e-6)
    sums = np.linspace(1.0, 3.0, 6)
    assert fit_calibration(sums, 1.3 * sums - 0.2) == pytest.approx((1.3, 0.0, -0.2))
    space, listed = filled
    bounds = overhead_bounds(space, dict(zip(listed["key"], listed["median_ms"])))
    assert bounds == pytest.approx((-2.85, 5.0))
    assert check_overhead(-0.2, "t", bounds=bounds) == -0.2


def test_the_largest_layer_sum_is_the_costliest_subnet(filled):
    from ofa.latency.table_io import largest_layer_sum

    space, listed = filled
    entries = dict(zip(listed["key"], listed["median_ms"]))
    assert largest_layer_sum(space, entries) == pytest.approx(
        0.5 * len(subnet_layers(space, space.max_config())))
    rng = np.random.default_rng(0)
    entries = {k: float(v) for k, v in zip(listed["key"], rng.uniform(0.1, 1.0, len(listed)))}
    model = LatencyModel(space, entries)
    cfgs = [space.sample(random.Random(i)) for i in range(300)] + [space.max_config()]
    assert largest_layer_sum(space, entries) >= model.predict(cfgs).max() - 1e-9
    assert largest_layer_sum(space, {}) is None
