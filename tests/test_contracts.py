"""Data contracts: each table's contract stops a deliberately broken table with a clear message."""

from __future__ import annotations

import pandas as pd
import pytest

from ofa.contracts import AccDataset, LatencyTable, ParetoRows, SearchResults, validate
from ofa.errors import OFAError

CFG = "r20-d2222-k3333333333333333-e3333333333333333"
CFG2 = "r24-d2222-k3333333333333333-e3333333333333333"


def _acc() -> pd.DataFrame:
    return pd.DataFrame({"config": [CFG, CFG2], "resolution": [20, 24], "accuracy": [0.8, 0.9],
                         "macs": [3_000_000, 3_600_000], "params": [470_000, 470_000]})


def _lat() -> pd.DataFrame:
    return pd.DataFrame({"key": ["stem-r20", "head-r20"], "median_ms": [0.1, 0.2],
                         "spread_ms": [0.01, 0.02], "count": [21, 21]})


def _search() -> pd.DataFrame:
    return pd.DataFrame({"constraint": ["latency_ms<=1.5"], "name": ["latency_ms"], "limit": [1.5],
                         "config": [CFG], "predicted_acc": [0.9], "predicted_latency_ms": [1.2],
                         "macs": [3_000_000], "params": [470_000]})


def test_good_tables_pass():
    validate(_acc(), AccDataset, "acc")
    validate(_lat(), LatencyTable, "lat")
    validate(_search(), SearchResults, "search")
    validate(_search().assign(test_acc=0.9, measured_latency_ms=1.3), ParetoRows, "pareto")


@pytest.mark.parametrize("model,table,message", [
    (AccDataset, _acc().assign(accuracy=[0.8, 90.0]), "less_than_or_equal_to"),
    (AccDataset, _acc().assign(config=[CFG, CFG]), "field_uniqueness"),
    (AccDataset, _acc().assign(config=["not a config", CFG2]), "str_matches"),
    (AccDataset, _acc().drop(columns=["accuracy"]), "column_in_dataframe"),
    (LatencyTable, _lat().assign(median_ms=[0.1, -1.0]), "greater_than"),
    (LatencyTable, _lat().assign(median_ms=[0.1, float("inf")]), "finite"),
    (LatencyTable, _lat().assign(key=["a", "a"]), "field_uniqueness"),
    (SearchResults, _search().assign(name=["speed"]), "isin"),
    (ParetoRows, _search().assign(test_acc=1.5, measured_latency_ms=1.0), "test_acc"),
])
def test_broken_tables_are_stopped_naming_the_check(model, table, message):
    with pytest.raises(OFAError, match=f"violates its contract: .*{message}"):
        validate(table, model, "the table")
