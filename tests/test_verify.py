"""Verified specialization (ofa/verify.py, ofa/verify_meter.py): the selection with fake
measuring functions, the drift divided out of real timing sessions, and the bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ofa.errors import OFAError
from ofa.verify import pick_candidates, regret, select_verified, uniform_candidates

TARGET = {"constraint": "latency_ms=2", "name": "latency_ms", "limit": 2.0}


def _cand(config: str, predicted_ms: float, acc: float) -> dict:
    return {"config": config, "predicted_acc": acc, "predicted_latency_ms": predicted_ms,
            "macs": 5_000_000, "params": 100_000}


class _Device:
    """A fake device: config -> (verified ms, validation accuracy); records what was timed
    (`calls`) and which configs were evaluated (`evaluated`)."""

    def __init__(self, table: dict[str, tuple[float, float]], calls: list | None = None):
        self.table, self.calls, self.evaluated = table, calls, []

    def __call__(self, configs):
        if self.calls is not None:
            self.calls.append(list(configs))
        return {c: {"verified_latency_ms": self.table[c][0], "raw_latency_ms": self.table[c][0],
                    "p90_latency_ms": self.table[c][0], "drift": 1.0} for c in configs}

    def acc(self, config: str) -> float:
        self.evaluated.append(config)
        return self.table[config][1]


def _never(limit):
    raise AssertionError("no second search expected")


def test_a_candidate_predicted_under_but_measured_over_never_ships():
    cands = [_cand("a", 1.9, 0.92), _cand("b", 1.7, 0.91), _cand("c", 2.1, 0.93)]
    device = _Device({"a": (2.05, 0.92), "b": (1.8, 0.90), "c": (1.98, 0.915)})
    shipped, tried = select_verified("d", TARGET, cands, device, device.acc, _never, 2)
    assert shipped["config"] == "c"   # priced over the limit by the table, met it measured
    verdict = {r["config"]: r["verdict"] for r in tried}
    assert verdict == {"a": "over the limit", "b": "less accurate than the shipped one",
                       "c": "shipped"}
    lost = regret(shipped, tried)   # the predictor alone would have shipped `a`, over its limit
    assert lost["first_choice"] == "a" and not lost["first_choice_met_limit"]
    assert lost["regret"] == pytest.approx(0.915 - 0.92)


def test_only_candidates_that_could_ship_and_the_first_choice_are_evaluated():
    """A candidate measured over its limit cannot ship, so its validation pass is skipped
    (None in the record), except the predictor's first choice, which the regret needs; the
    record passes its contract, which refuses a candidate within the limit left unevaluated."""
    from ofa.contracts import VerificationRows, validate_records

    cands = [_cand("a", 1.9, 0.92), _cand("b", 1.7, 0.91), _cand("c", 2.1, 0.93), _cand("e", 1.6, 0.9)]
    dev = _Device({"a": (2.05, 0.92), "b": (1.8, 0.90), "c": (2.2, 0.94), "e": (1.5, 0.89)})
    shipped, tried = select_verified("d", TARGET, cands, dev, dev.acc, _never, 2)
    assert dev.evaluated == ["a", "b", "e"] and shipped["config"] == "b"
    assert {r["config"]: r["val_acc"] for r in tried} == {"a": 0.92, "b": 0.90, "c": None, "e": 0.89}
    rows = [r | {"config": f"r24-d2222-k{'3' * 15}{i + 3}-e{'3' * 16}"} for i, r in enumerate(tried)]
    validate_records(rows, VerificationRows, "v")
    with pytest.raises(OFAError, match="val_acc measured wherever it could ship"):
        validate_records([dict(rows[1], val_acc=None)] + rows[2:], VerificationRows, "v")


def test_a_uniform_subnet_that_fits_and_measures_better_ships_and_the_regret_stays_the_predictors():
    """The uniform subnets compete where they met the limit when measured (a flat accuracy
    surface fools the predictor); one over it, or already a search candidate, is not added."""
    cands = [_cand("a", 1.9, 0.93), _cand("b", 1.5, 0.92)]
    table = {"a": (1.95, 0.91), "b": (1.4, 0.905), "u1": (1.2, 0.915), "u2": (2.3, 0.95)}
    device = _Device(table)
    timed = device(list(table))
    uniform = [_cand(c, 1.0, 0.5) | timed[c] | {"origin": "uniform min"} for c in ("u1", "u2", "b")]
    extra = uniform_candidates(TARGET, uniform, cands)
    assert [u["config"] for u in extra] == ["u1"]
    shipped, tried = select_verified("d", TARGET, cands + extra, device, device.acc, _never, 2)
    assert shipped["config"] == "u1" and shipped["origin"] == "uniform min"
    lost = regret(shipped, tried)
    assert lost["first_choice"] == "a" and lost["regret"] == pytest.approx(0.915 - 0.91)
    flops = {"constraint": "flops_m=4", "name": "flops_m", "limit": 4.0}   # exact MACs decide
    assert uniform_candidates(flops, uniform, []) == []


def test_the_most_accurate_candidate_that_meets_the_limit_ships():
    cands = [_cand("a", 1.9, 0.92), _cand("b", 1.5, 0.90)]
    device = _Device({"a": (1.95, 0.91), "b": (1.2, 0.915)})
    shipped, _ = select_verified("d", TARGET, cands, device, device.acc, _never, 2)
    assert shipped["config"] == "b"   # measured accuracy decides, not the prediction


def test_the_tightening_loop_is_bounded_and_fails_naming_what_was_reached():
    device = {f"x{i}": (2.0 * 1.1 ** (3 - i), 0.9) for i in range(4)}   # each round faster
    limits, calls = [], []

    def research(limit):
        limits.append(limit)
        return [_cand(f"x{len(limits)}", limit, 0.9)]

    with pytest.raises(OFAError) as err:
        dev = _Device(device, calls)
        select_verified("cpu1-b1", TARGET, [_cand("x0", 1.9, 0.9)], dev, dev.acc, research, 2)
    assert len(limits) == 2 and len(calls) == 3   # two tightened searches, three measurements
    # the limit over the overshoot measured (verified / predicted): x0 was priced at 1.9 ms
    assert limits[0] == pytest.approx(2.0 / (device["x0"][0] / 1.9))
    assert limits[1] == pytest.approx(2.0 / (device["x1"][0] / limits[0]))
    text = str(err.value)
    assert "\n" not in text and text.startswith("cpu1-b1: no subnet met latency_ms=2 (<= 2 ms)")
    assert "the fastest candidate measured 2.2 ms" in text and "(x2)" in text
    assert "a limit of 2.2 ms or more would have been met" in text
    assert "nothing of cpu1-b1's previous export was changed" in text
    # one more round would have met it: the loop stops at its bound, not at success
    dev = _Device(device)
    shipped, tried = select_verified("d", TARGET, [_cand("x0", 1.9, 0.9)], dev, dev.acc,
                                     lambda lim, n=iter(range(1, 4)): [_cand(f"x{next(n)}", lim, 0.9)], 3)
    assert shipped["config"] == "x3" and [r["round"] for r in tried] == [0, 1, 2, 3]


def test_a_limit_no_subnet_meets_fails_once_the_smallest_was_measured():
    """The search limit never drops below the smallest subnet's price (ofa.specialize.research
    clamps it), so the last rounds measure the smallest subnet; over the limit, it fails."""
    def research(limit):   # what the clamped search returns: the smallest subnet
        return [_cand("smallest", 1.2, 0.8)]

    with pytest.raises(OFAError, match=r"no subnet met latency_ms=2 .* after 2 tightened "
                                       r"search\(es\): the fastest candidate measured 2.5 ms at "
                                       r"the table's speed \(smallest\)"):
        dev = _Device({"a": (3.0, 0.9), "smallest": (2.5, 0.8)})
        select_verified("d", TARGET, [_cand("a", 1.9, 0.9)], dev, dev.acc, research, 2)


def test_a_flops_limit_is_met_by_exact_macs():
    target = {"constraint": "flops_m=6", "name": "flops_m", "limit": 6.0}
    cands = [_cand("a", 9.0, 0.9) | {"macs": 7_000_000}, _cand("b", 9.0, 0.8)]
    dev = _Device({"a": (9, 0.95), "b": (9, 0.8)})
    shipped, _ = select_verified("d", target, cands, dev, dev.acc, _never, 1)
    assert shipped["config"] == "b"


def test_candidates_are_distinct_first_choice_first_then_one_with_margin_and_some_priced_over():
    configs = ["a", "b", "a", "c", "d", "e", "f", "g"]
    scores = np.array([0.90, 0.95, 0.90, 0.97, 0.80, 0.99, 0.85, 0.96])
    cost = np.array([1.9, 1.95, 1.9, 2.1, 1.0, 2.5, 1.5, 2.15])
    pick = lambda k, over, under=0.0: [configs[i] for i in
                                       pick_candidates(configs, scores, cost, 2.0, k, over, under)]
    # b first (best within 2.0), then c (the best of c and g within 10% over; e too far),
    # then the next best within the limit
    assert pick(4, 0.1) == ["b", "c", "a", "f"]
    # one place for the best priced at least 20% under the limit (f: 1.5 <= 1.6)
    assert pick(4, 0.1, 0.2) == ["b", "f", "c", "a"]
    assert pick(8, 0.1, 0.2) == ["b", "f", "c", "g", "a", "d"]   # 2 over places
    assert pick(8, 0.1, 0.2)[:3] == pick(3, 0.1, 0.2)
    assert pick(2, 0.1, 0.2) == ["b", "f"]   # the margin before the priced-over one
    assert pick(1, 0.1, 0.2) == ["b"]
    assert pick(4, 0.0) == ["b", "a", "f", "d"]   # no margins: within the limit only
    assert pick(4, 0.0, 0.5) == ["b", "d", "a", "f"]   # d: 1.0 <= 1.0
    # a first choice already within the margin takes no extra place
    assert [configs[i] for i in pick_candidates(configs, scores, cost, 3.0, 3, 0.0, 0.1)] == \
        ["e", "c", "g"]
    none_within = pick_candidates(configs, scores, cost, 0.95, 4, 0.1, 0.2)
    assert [configs[i] for i in none_within] == ["d"]   # only priced over (1.0 <= 1.045)


def test_constraints_are_measured_together_round_by_round():
    """One measurement per round over every constraint still pending: the constraint met in
    round 0 is not measured again, the other one's new candidates are measured in round 1."""
    from ofa.verify import Target, select_all

    second = dict(TARGET, constraint="latency_ms=1.5", limit=1.5)
    device = {"a": (1.9, 0.9), "b": (1.7, 0.88), "c": (1.4, 0.87)}
    calls = []
    targets = [Target(TARGET, [_cand("a", 1.9, 0.9)], _never),
               Target(second, [_cand("b", 1.45, 0.88)], lambda lim: [_cand("c", lim, 0.87)])]
    dev = _Device(device, calls)
    (s1, t1), (s2, t2) = select_all("d", targets, dev, dev.acc, 2)
    assert calls == [["a", "b"], ["c"]]
    assert (s1["config"], s2["config"]) == ("a", "c")
    assert [r["round"] for r in t2] == [0, 1] and t2[0]["verdict"] == "over the limit"
    assert t2[1]["search_limit"] == pytest.approx(1.5 / (1.7 / 1.45))


def test_the_machines_drift_is_divided_out(monkeypatch, tmp_path):
    """Every reference and candidate 1.2x slower than at the table's build: the verified
    latency is the candidate's latency at the table's speed; the raw median stays as timed."""
    import ofa.verify_meter as vm
    from ofa.space import SearchSpace
    from tests.conftest import tiny_space_params

    params = tiny_space_params(tmp_path, {"t1": {"backend": "torch", "flops_m": [1.0]}})
    space = SearchSpace(params.space)
    refs = [space.min_config(), space.max_config()]
    then = np.array([1.0, 4.0])
    monkeypatch.setattr(vm, "reference_subnets", lambda p, d: (refs, then))
    monkeypatch.setattr(vm, "make_runners", lambda items, dev: items)
    true = {str(space.min_config()): 0.5, str(space.max_config()): 3.0}

    def timed(items, warmup, rounds, seed, min_seconds):
        n = len(items) - len(refs)
        rows = [1.2 * np.full(rounds, v) for v in true.values()][:n]
        rows += [1.2 * np.full(rounds, t) for t in then]
        return np.stack(rows)

    monkeypatch.setattr(vm, "time_interleaved", timed)
    meter = vm.DeviceMeter(params, "t1", supernet=None, data=None)
    got = meter.time(list(true))
    for c, v in true.items():
        assert got[c]["drift"] == pytest.approx(1.2)
        assert got[c]["verified_latency_ms"] == pytest.approx(v)
        assert got[c]["raw_latency_ms"] == pytest.approx(1.2 * v)


def test_a_table_without_reference_subnets_cannot_be_verified(tmp_path):
    from ofa.verify_meter import reference_subnets
    from tests.conftest import tiny_space_params
    from ofa.latency import build_table

    params = tiny_space_params(tmp_path, {"t1": {"backend": "torch", "flops_m": [1.0]}})
    build_table(params, "t1", show_progress=False)
    few = dataclasses.replace(params, verify=dataclasses.replace(params.verify,
                                                                 reference_subnets=999))
    with pytest.raises(OFAError, match=r"devices\.t1: its latency table .* records \d+ "
                                       r"calibration subnets .* verify\.reference_subnets = 999"):
        reference_subnets(few, "t1")
    cfgs, then = reference_subnets(params, "t1")
    assert len(cfgs) == params.verify.reference_subnets == len(then) and (then > 0).all()


@pytest.mark.parametrize("key,value,message", [
    ("candidates", 0, "verify.candidates: must be at least 1"),
    ("candidates", -3, "verify.candidates: must be at least 1"),
    ("tighten_rounds", 0, "verify.tighten_rounds: must be at least 1"),
    ("over_margin", float("nan"), "verify.over_margin: expected a finite number"),
    ("over_margin", 2.0, "verify.over_margin: must be in [0, 1]"),
    ("rounds", 1, "verify.rounds: must be at least 3"),
])
def test_bad_verification_params_are_refused(key, value, message):
    import yaml

    from ofa.config import params_from_dict
    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw.pop("preset")
    raw.setdefault("verify", {})[key] = value
    with pytest.raises(OFAError, match=message.replace("[", r"\[").replace("]", r"\]")):
        params_from_dict(raw)


@pytest.mark.parametrize("drift, ships", [(1.01, "b"), (0.99, "a"), (1.2, "a")])
def test_on_a_quiet_machine_the_raw_median_meets_the_limit_too(drift, ships):
    """`a` is under the limit by its verified latency (median / drift) and over it by its raw
    median when the references ran 1% slower: on that quiet machine it must not ship (`b`
    does); 1% faster, or under a load that slowed the references by 20%, the verified latency
    alone decides, so `a` ships."""
    verified = {"a": 1.99, "b": 1.7}

    def measure(configs):
        return {c: {"verified_latency_ms": verified[c], "raw_latency_ms": verified[c] * drift,
                    "p90_latency_ms": verified[c] * drift, "drift": drift} for c in configs}

    cands = [_cand("a", 1.9, 0.92), _cand("b", 1.6, 0.91)]
    acc = {"a": 0.92, "b": 0.91}.__getitem__
    shipped, tried = select_verified("d", TARGET, cands, measure, acc, _never, 2)
    assert shipped["config"] == ships
    assert {r["config"]: r["meets_limit"] for r in tried}["a"] == (ships == "a")
