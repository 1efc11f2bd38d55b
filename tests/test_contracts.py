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
    validate(_pareto(), ParetoRows, "pareto")


def _pareto() -> pd.DataFrame:
    """A shipped row as the export writes it: search figures plus what verification measured."""
    return _search().assign(test_acc=0.9, measured_latency_ms=1.3, verified_latency_ms=1.2,
                            p90_latency_ms=1.4, val_acc=0.91, regret=0.002,
                            first_choice_test_acc=0.89)


@pytest.mark.parametrize("model,table,message", [
    (AccDataset, _acc().assign(accuracy=[0.8, 90.0]), "less_than_or_equal_to"),
    (AccDataset, _acc().assign(config=[CFG, CFG]), "field_uniqueness"),
    (AccDataset, _acc().assign(config=["not a config", CFG2]), "str_matches"),
    (AccDataset, _acc().drop(columns=["accuracy"]), "column_in_dataframe"),
    (LatencyTable, _lat().assign(median_ms=[0.1, -1.0]), "greater_than"),
    (LatencyTable, _lat().assign(median_ms=[0.1, float("inf")]), "finite"),
    (LatencyTable, _lat().assign(key=["a", "a"]), "field_uniqueness"),
    (SearchResults, _search().assign(name=["speed"]), "isin"),
    (ParetoRows, _pareto().assign(test_acc=1.5), "test_acc"),
    (ParetoRows, _pareto().drop(columns=["verified_latency_ms"]), "verified_latency_ms"),
    (ParetoRows, _pareto().assign(val_acc=float("nan")), "val_acc"),
])
def test_broken_tables_are_stopped_naming_the_check(model, table, message):
    with pytest.raises(OFAError, match=f"violates its contract: .*{message}"):
        validate(table, model, "the table")


def test_the_overhead_cannot_be_a_row_of_a_table_written_here():
    with pytest.raises(OFAError, match="violates its contract: .*notin.* in column 'key'"):
        validate(_lat().assign(key=["stem-r20", "overhead"]), LatencyTable, "lat")


GOOD_TERMS = {"overhead_ms": 0.2, "scales": {"stem+head": 1.0, "blocks-o16": 1.4},
              "input_ms_per_m": -0.3}
RANGE = ("expected a finite number in [-1.5, 5] ms (from minus 95% of the smallest subnet's "
         "layer sum to the largest subnet's)")
BOUNDS = (-1.5, 5.0)   # a table whose smallest subnet sums to ~1.58 ms, its largest to 5 ms
SCALES = "expected a finite number in [0.5, 3] (a fitted scale)"


@pytest.mark.parametrize("terms,message", [
    ({"overhead_ms": -1000.0}, f"t.parquet: overhead_ms is -1000; {RANGE}"),
    ({"overhead_ms": -1.501}, f"overhead_ms is -1.501; {RANGE}"),
    ({"overhead_ms": float("-inf")}, f"overhead_ms is -inf; {RANGE}"),
    ({"overhead_ms": float("nan")}, f"overhead_ms is nan; {RANGE}"),
    ({"overhead_ms": float("inf")}, f"overhead_ms is inf; {RANGE}"),
    ({"overhead_ms": 1e9}, f"overhead_ms is 1e+09; {RANGE}"),
    ({"overhead_ms": 5.01}, f"overhead_ms is 5.01; {RANGE}"),
    ({"overhead_ms": "0.2"}, f"overhead_ms is '0.2'; {RANGE}"),
    ({"overhead_ms": True}, f"overhead_ms is True; {RANGE}"),
    ({"overhead_ms": None}, f"overhead_ms is None; {RANGE}"),
    ({"scales": {"stem+head": float("nan")}}, f"scales['stem+head'] is nan; {SCALES}"),
    ({"scales": {"blocks-o16": 0.0}}, f"scales['blocks-o16'] is 0; {SCALES}"),
    ({"scales": {"blocks-o16": -1.0}}, f"scales['blocks-o16'] is -1; {SCALES}"),
    ({"scales": {"blocks-o16": float("inf")}}, f"scales['blocks-o16'] is inf; {SCALES}"),
    ({"scales": {"blocks-o16": 0.49}}, f"scales['blocks-o16'] is 0.49; {SCALES}"),
    ({"scales": {}}, "scales is {}; expected a mapping of calibration group"),
    ({"input_ms_per_m": float("nan")}, "input_ms_per_m is nan; expected a finite number in "
                                       "[-1000, 1000] ms per million input values"),
    ({"input_ms_per_m": 1e4}, "input_ms_per_m is 10000; expected a finite number in [-1000, 1000]"),
])
def test_a_latency_tables_terms_are_held_to_their_ranges(terms, message):
    from ofa.contracts import check_latency_terms

    with pytest.raises(OFAError) as err:
        check_latency_terms(GOOD_TERMS | terms, "latency table t.parquet", bounds=BOUNDS)
    assert message in str(err.value) and str(err.value).startswith("latency table t.parquet: ")


def test_good_terms_pass_and_the_overhead_needs_to_be_there():
    from ofa.contracts import SCALE_RANGE, check_latency_terms
    from ofa.latency.calibrate import STAGE_SCALE_RANGE

    assert check_latency_terms(GOOD_TERMS, "t", bounds=BOUNDS) == 0.2
    assert check_latency_terms(GOOD_TERMS | {"overhead_ms": 0}, "t", bounds=BOUNDS) == 0.0
    assert check_latency_terms(GOOD_TERMS | {"overhead_ms": 5.0}, "t", bounds=BOUNDS) == 5.0
    # the fits may put it below 0 (layers timed alone over-price a network), not by half the
    # smallest subnet
    assert check_latency_terms(GOOD_TERMS | {"overhead_ms": -0.001}, "t", bounds=BOUNDS) == -0.001
    assert check_latency_terms(GOOD_TERMS | {"overhead_ms": -1.5}, "t", bounds=BOUNDS) == -1.5
    assert check_latency_terms({"overhead_ms": 1e5}, "t") == 1e5      # no space: the cap only
    assert check_latency_terms({"overhead_ms": -1e5}, "t") == -1e5
    with pytest.raises(OFAError, match=r"t: its metadata lacks overhead_ms; expected it exactly "
                                       r"once, a finite number in \[-1.5, 5\] ms"):
        check_latency_terms({"scales": {"stem+head": 1.0}}, "t", bounds=BOUNDS)
    assert SCALE_RANGE == STAGE_SCALE_RANGE   # the fits keep every scale where the contract does
