"""Great expectations gates: each stops a deliberately broken table naming the expectation,
writes its JSON and HTML result, and (in a flow) stops before any later step writes."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

from ofa.data import Dataset, Split
from ofa.errors import OFAError
from ofa.validation import validate_acc_dataset, validate_latency_table, validate_raw_data

pytest.importorskip("great_expectations")

MIN = "r20-d2222-k3333333333333333-e3333333333333333"
MAX = "r32-d4444-k7777777777777777-e6666666666666666"


def _split(n: int, seed: int, classes: int = 3) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g),
                 torch.arange(n) % classes)


def _data(**splits: Split) -> Dataset:
    parts = {"train": _split(30, 0), "val": _split(9, 1), "test": _split(9, 2)} | splits
    return Dataset(**parts, mean=(0.5,), std=(0.25,), num_classes=3)


def _acc(**cols) -> pd.DataFrame:
    mid = "r24-d3333-k5555555555555555-e4444444444444444"
    return pd.DataFrame({"config": [MIN, mid, MAX], "accuracy": [0.85, 0.88, 0.9]} | cols)


def _lat(**cols) -> pd.DataFrame:
    return pd.DataFrame({"key": ["stem", "block", "head"], "median_ms": [0.1, 0.5, 0.05],
                         "spread_ms": [0.01, 0.02, 0.01], "count": [31, 31, 31]} | cols)


def test_good_tables_pass_and_leave_json_and_html(tmp_path):
    validate_raw_data(_data(), tmp_path)
    validate_acc_dataset(_acc(), MIN, MAX, tmp_path)
    validate_latency_table(_lat(), ["stem", "block", "head"], "dev", tmp_path)
    for name in ("raw_data", "acc_dataset", "latency_dev"):
        summary = json.loads((tmp_path / f"{name}.json").read_text())
        assert summary["success"] and summary["results"]
        docs = tmp_path / name  # Great Expectations Data Docs: index, suite, validation result
        assert (docs / "index.html").is_file() and (docs / "expectations" / f"{name}.html").is_file()
        assert list((docs / "validations").rglob("*.html"))


BROKEN_DATA = {
    "label outside the set": ({"test": Split(_split(9, 2).images, torch.full((9,), 7))},
                              "expect_column_distinct_values_to_equal_set"),
    "validation inside training": ({"val": Split(_split(30, 0).images[:9], torch.arange(9) % 3)},
                                   "val_in_train"),
    "mixed image shapes": ({"test": Split(torch.zeros(9, 1, 6, 6, dtype=torch.uint8),
                                          torch.arange(9) % 3)}, "expect_column_values_to_be_in_set"),
    "one class dominates": ({"train": Split(_split(30, 0).images,
                                            torch.tensor([0] * 26 + [1, 1, 2, 2]))},
                            "class_share_ratio"),
    "empty test split": ({"test": Split(torch.zeros(0, 1, 8, 8, dtype=torch.uint8),
                                        torch.zeros(0, dtype=torch.int64))},
                         "expect_column_distinct_values_to_equal_set.*'split'"),
}


def test_labels_beyond_the_models_classes_are_stopped(tmp_path):
    with pytest.raises(OFAError, match="expect_column_values_to_be_in_set.*'label'"):
        validate_raw_data(_data(), tmp_path, num_classes=2)


def test_a_validation_split_of_the_wrong_size_is_stopped(tmp_path):
    with pytest.raises(OFAError, match="expect_column_values_to_be_in_set.*'val_size'"):
        validate_raw_data(_data(), tmp_path, val_size=10)


@pytest.mark.parametrize("case", list(BROKEN_DATA))
def test_broken_raw_data_is_stopped(tmp_path, case):
    splits, needle = BROKEN_DATA[case]
    with pytest.raises(OFAError, match=rf"validation gate 'raw_data' failed: .*{needle}"):
        validate_raw_data(_data(**splits), tmp_path)
    summary = json.loads((tmp_path / "raw_data.json").read_text())
    assert not summary["success"] and (tmp_path / "raw_data" / "index.html").is_file()


@pytest.mark.parametrize("table,needle", [
    (_acc(accuracy=[0.85, 1.3, 0.9]), "expect_column_values_to_be_between"),
    (_acc(config=[MIN, MIN, MAX]), "expect_column_values_to_be_unique"),
    (_acc(config=[MIN, MIN.replace("r20", "r24"), MIN.replace("r20", "r28")]),
     "expect_column_distinct_values_to_contain_set"),
    (_acc(accuracy=[0.9, 0.9, 0.9]), "expect_column_stdev_to_be_between"),
])
def test_broken_accuracy_dataset_is_stopped(tmp_path, table, needle):
    with pytest.raises(OFAError, match=rf"'acc_dataset' failed: {needle}"):
        validate_acc_dataset(table, MIN, MAX, tmp_path)


@pytest.mark.parametrize("table,needle", [
    (_lat(median_ms=[0.1, -0.5, 0.05]), "expect_column_values_to_be_between"),
    (_lat(key=["stem", "stem", "head"]), "expect_column_values_to_be_unique"),
    (_lat(key=["stem", "other", "head"]), "expect_column_distinct_values_to_contain_set"),
    (_lat(spread_ms=[1.0, 9.0, 1.0]), "spread_ratio"),
])
def test_broken_latency_table_is_stopped(tmp_path, table, needle):
    with pytest.raises(OFAError, match=rf"'latency_dev' failed: .*{needle}"):
        validate_latency_table(table, ["stem", "block", "head"], "dev", tmp_path)


def test_spread_is_judged_only_where_enough_timings_back_it(tmp_path):
    noisy = _lat(spread_ms=[1.0, 9.0, 1.0], count=[3, 3, 3])
    assert validate_latency_table(noisy, ["stem", "block", "head"], "dev", tmp_path)["success"]


def test_the_data_gate_writes_the_manifest_only_when_it_passes(params, tmp_path, monkeypatch):
    import ofa.validation
    from ofa.validation import gate

    monkeypatch.setattr(ofa.validation, "load_dataset", lambda cfg: _data())
    small = dataclasses.replace(params, space=dataclasses.replace(params.space, num_classes=3),
                                data=dataclasses.replace(params.data, val_size=9))
    gate(small, "data", out_dir=tmp_path, manifest=tmp_path / "manifest.json")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [manifest[s]["images"] for s in ("train", "val", "test")] == [30, 9, 9]
    again = tmp_path / "again.json"
    monkeypatch.setattr(ofa.validation, "load_dataset",
                        lambda cfg: _data(test=Split(_split(9, 2).images, torch.full((9,), 7))))
    with pytest.raises(OFAError, match="raw_data"):
        gate(small, "data", out_dir=tmp_path, manifest=again)
    assert not again.exists()


GOOD_META = {"overhead_ms": 0.1, "scales": {"stem+head": 1.0, "blocks-o16": 1.2},
             "input_ms_per_m": -0.2}
NAN, INF = float("nan"), float("inf")


def test_a_latency_tables_terms_pass_the_gate_and_are_recorded(tmp_path):
    res = validate_latency_table(_lat(), ["stem", "block", "head"], "dev", tmp_path, GOOD_META,
                                 overhead_bounds_ms=(-0.1, 0.65))
    assert res["success"]
    by_column = {(r["kwargs"].get("column"), r["expectation"]): r for r in res["results"]}
    between = by_column[("overhead_ms", "expect_column_values_to_be_between")]["kwargs"]
    assert between["min_value"] == -0.1 and between["max_value"] == 0.65
    assert ("scales[blocks-o16]", "expect_column_values_to_be_between") in by_column
    assert ("input_ms_per_m", "expect_column_values_to_be_between") in by_column
    assert ("overhead_given", "expect_column_values_to_be_in_set") in by_column
    negative = GOOD_META | {"overhead_ms": -0.05}   # a fit's negative overhead, within bounds
    assert validate_latency_table(_lat(), ["stem", "block", "head"], "dev", tmp_path, negative,
                                  overhead_bounds_ms=(-0.1, 0.65))["success"]


@pytest.mark.parametrize("meta,table,needle", [
    ({"overhead_ms": -1000.0}, None, r"expect_column_values_to_be_between \{'column': "
                                     r"'overhead_ms', .*'min_value': -0\.1"),
    ({"overhead_ms": -0.11}, None, "between.*'overhead_ms'"),
    ({"overhead_ms": NAN}, None, r"expect_column_values_to_not_be_null \{'column': 'overhead_ms'"),
    ({"overhead_ms": "fast"}, None, "not_be_null.*'overhead_ms'"),
    ({"overhead_ms": INF}, None, "between.*'overhead_ms'.*'max_value': 0.65"),
    ({"overhead_ms": 1e9}, None, "between.*'overhead_ms'.*'max_value': 0.65"),
    ({"overhead_ms": 0.7}, None, "between.*'overhead_ms'.*'max_value': 0.65"),
    ({}, _lat(key=["stem", "block", "overhead"]),                  # a row and the metadata
     r"expect_column_values_to_be_in_set \{'column': 'overhead_given'.*'value_set': \[1\]"),
    ({"scales": {"blocks-o16": NAN}}, None, r"not_be_null \{'column': 'scales\[blocks-o16\]'"),
    ({"scales": {"blocks-o16": 0.0}}, None, r"between \{'column': 'scales\[blocks-o16\]', "
                                            r".*'min_value': 0\.5.*'max_value': 3\.0"),
    ({"scales": {"blocks-o16": -1.0}}, None, r"between \{'column': 'scales\[blocks-o16\]'"),
    ({"scales": {"blocks-o16": INF}}, None, r"between \{'column': 'scales\[blocks-o16\]'"),
    ({"input_ms_per_m": NAN}, None, r"not_be_null \{'column': 'input_ms_per_m'"),
    ({"input_ms_per_m": -1e4}, None, r"between \{'column': 'input_ms_per_m'.*-1000"),
    ({}, _lat(median_ms=["0.1", "fast", "0.05"]), r"not_be_null \{'column': 'median_ms'"),
    ({}, _lat(median_ms=[0.1, NAN, 0.05]), r"not_be_null \{'column': 'median_ms'"),
    ({}, _lat(median_ms=[0.1, INF, 0.05]), r"between \{'column': 'median_ms'"),
    ({}, _lat(median_ms=[0.1, 0.0, 0.05]), r"between \{'column': 'median_ms'"),
    ({}, _lat(median_ms=[0.1, -0.5, 0.05]), r"between \{'column': 'median_ms'"),
])
def test_a_hostile_latency_table_is_stopped_by_the_gate(tmp_path, meta, table, needle):
    with pytest.raises(OFAError, match=rf"validation gate 'latency_dev' failed: .*{needle}"):
        validate_latency_table(_lat() if table is None else table,
                               ["stem", "block", "head"] if table is None or "overhead" not in
                               set(table["key"]) else ["stem", "block"], "dev", tmp_path,
                               GOOD_META | meta, overhead_bounds_ms=(-0.1, 0.65))
    assert not json.loads((tmp_path / "latency_dev.json").read_text())["success"]
