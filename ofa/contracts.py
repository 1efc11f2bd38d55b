"""Data contracts (pandera) for the tables that pass between steps.

Each table is checked where it is written and where it is read; a violation is one OFAError
naming the table, the failed check and the column, and nothing downstream is written.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Optional

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from ofa.errors import OFAError

CONFIG_PATTERN = r"^r\d+-d\d+-k\d+-e\d+$"

# -- A latency table's per-network terms (its parquet metadata, not rows) -------------------
# One contract, checked where a table is written, read and imported (ofa.latency.table) and
# by its Great Expectations gate (ofa.validation), which uses the same ranges.
OVERHEAD_KEY = "overhead"       # the row key that carries the overhead in an imported CSV
MAX_TIMING_MS = 1e6             # a layer entry (or the overhead) of 1000 s is no timing
# Fitted scales (a layer's cost inside a network relative to alone): the fits only keep
# scales in this range (ofa.latency.calibrate: outside it the fit chased noise), and the
# stem and head keep 1. Zero, negative or non-finite is a corrupt table.
SCALE_RANGE = (0.5, 3.0)
# The one-scale fit's input term (ms per million input values; negative for ONNX Runtime,
# whose timed layers each convert their input layout). 1000 ms per million values is 1 us a
# value, about 1000x a memory copy: beyond it the term is garbage, not a layout cost.
INPUT_MS_PER_M_RANGE = (-1000.0, 1000.0)


def _number(value) -> float | None:
    """A JSON/CSV number as a float (None for text, booleans, null or containers)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    return float(value)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


OverheadBounds = tuple[float, float]   # (lowest, highest) overhead in ms for one table


def overhead_range(bounds: OverheadBounds | None = None) -> tuple[float, float, str]:
    """(lowest, highest, what they are) for a table's overhead in ms. With the table's
    `bounds` (ofa.latency.table_io.overhead_bounds): from minus 95% of the smallest
    subnet's layer sum to the largest subnet's; without: the cap on any timing either way."""
    if bounds is not None and all(math.isfinite(b) for b in bounds) \
            and -MAX_TIMING_MS < bounds[0] <= 0.0 <= bounds[1] < MAX_TIMING_MS:
        return (float(bounds[0]), float(bounds[1]),
                "from minus 95% of the smallest subnet's layer sum to the largest subnet's")
    return -MAX_TIMING_MS, MAX_TIMING_MS, "within the cap on any timing"


def check_overhead(value, what: str, field: str = "overhead_ms",
                   bounds: OverheadBounds | None = None) -> float:
    """The per-network overhead as a float, or one OFAError naming `what`, the field and the
    range. The fits may put it below 0 (the layers timed alone over-price every network by a
    constant; in ONNX Runtime by half the smallest subnet's sum), never by all of it (that
    would price the smallest subnet at 0 ms); above
    all the layers of the largest subnet together it is a unit mix-up or a total typed in."""
    lo, hi, bound = overhead_range(bounds)
    v = _number(value)
    if v is None or not math.isfinite(v) or not lo <= v <= hi:
        shown = repr(value) if v is None else _fmt(v)
        raise OFAError(f"{what}: {field} is {shown}; expected a finite number in "
                       f"[{_fmt(lo)}, {_fmt(hi)}] ms ({bound})")
    return v


def check_fitted_terms(meta: dict, what: str) -> None:
    """Every fitted scale in SCALE_RANGE and the input term in INPUT_MS_PER_M_RANGE, all
    finite (where the metadata has them: an imported table need not), or one OFAError."""
    scales = meta.get("scales")
    lo, hi = SCALE_RANGE
    if scales is not None:
        if not isinstance(scales, dict) or not scales:
            raise OFAError(f"{what}: scales is {scales!r}; expected a mapping of calibration "
                           f"group to a finite number in [{_fmt(lo)}, {_fmt(hi)}]")
        for group, value in scales.items():
            v = _number(value)
            if v is None or not math.isfinite(v) or not lo <= v <= hi:
                shown = repr(value) if v is None else _fmt(v)
                raise OFAError(f"{what}: scales[{group!r}] is {shown}; expected a finite "
                               f"number in [{_fmt(lo)}, {_fmt(hi)}] (a fitted scale)")
    if "input_ms_per_m" in meta:
        value, (lo, hi) = meta["input_ms_per_m"], INPUT_MS_PER_M_RANGE
        v = _number(value)
        if v is None or not math.isfinite(v) or not lo <= v <= hi:
            shown = repr(value) if v is None else _fmt(v)
            raise OFAError(f"{what}: input_ms_per_m is {shown}; expected a finite number in "
                           f"[{_fmt(lo)}, {_fmt(hi)}] ms per million input values")


def check_latency_terms(meta: dict, what: str, bounds: OverheadBounds | None = None) -> float:
    """A table's metadata terms: `overhead_ms` present (exactly once: the JSON reader refuses
    a repeated key) and in range (`check_overhead`), the fitted terms in theirs; returns the
    overhead."""
    if "overhead_ms" not in meta:
        lo, hi, _ = overhead_range(bounds)
        raise OFAError(f"{what}: its metadata lacks overhead_ms; expected it exactly once, a "
                       f"finite number in [{_fmt(lo)}, {_fmt(hi)}] ms")
    overhead = check_overhead(meta["overhead_ms"], what, "overhead_ms", bounds)
    check_fitted_terms(meta, what)
    return overhead


class AccDataset(pa.DataFrameModel):
    """One measured subnet per row (predictor dataset)."""

    config: Series[str] = pa.Field(str_matches=CONFIG_PATTERN, unique=True)
    accuracy: Series[float] = pa.Field(ge=0.0, le=1.0)
    # top-1 on the first half of the images measured: the halves' disagreement is the
    # measurement noise no predictor can learn (fit-predictor reports it as its floor)
    accuracy_half: Optional[Series[float]] = pa.Field(ge=0.0, le=1.0)
    resolution: Optional[Series[int]] = pa.Field(gt=0)
    macs: Optional[Series[int]] = pa.Field(gt=0)
    params: Optional[Series[int]] = pa.Field(gt=0)

    class Config:
        strict = True
        coerce = True


class LatencyTable(pa.DataFrameModel):
    """One layer per row, timed on one device (the per-network overhead lives in the metadata,
    never as a row: see `check_latency_terms`)."""

    key: Series[str] = pa.Field(unique=True, notin=[OVERHEAD_KEY])
    median_ms: Series[float] = pa.Field(gt=0.0)
    spread_ms: Series[float] = pa.Field(ge=0.0, nullable=True)
    count: Series[int] = pa.Field(ge=0, nullable=True)  # timings per layer; 0 = unknown (imported)

    @pa.check("median_ms", name="finite")
    def _finite(cls, s: Series[float]) -> Series[bool]:  # noqa: N805 - pandera's signature
        return s.abs() < float("inf")

    class Config:
        strict = False  # layer fields and costs ride along
        coerce = True


class Candidate(pa.DataFrameModel):
    """One subnet as the search records it, under one constraint."""

    name: Series[str] = pa.Field(isin=["latency_ms", "flops_m"])
    limit: Series[float] = pa.Field(gt=0.0)
    config: Series[str] = pa.Field(str_matches=CONFIG_PATTERN)
    predicted_acc: Series[float] = pa.Field(ge=-0.5, le=1.5)
    predicted_latency_ms: Series[float] = pa.Field(gt=0.0)
    macs: Series[int] = pa.Field(gt=0)
    params: Series[int] = pa.Field(gt=0)

    class Config:
        strict = False
        coerce = True


class SearchResults(Candidate):
    """One chosen subnet per constraint of one device."""

    constraint: Series[str] = pa.Field(unique=True)


class ParetoRows(SearchResults):
    """Search results plus what export measured on the device."""

    test_acc: Series[float] = pa.Field(ge=0.0, le=1.0)
    measured_latency_ms: Series[float] = pa.Field(gt=0.0)   # the raw median (ofa/verify.py)
    verified_latency_ms: Series[float] = pa.Field(gt=0.0)   # at the latency table's speed
    p90_latency_ms: Series[float] = pa.Field(gt=0.0)
    val_acc: Series[float] = pa.Field(ge=0.0, le=1.0)
    regret: Series[float] = pa.Field(ge=-1.0, le=1.0)
    first_choice_test_acc: Series[float] = pa.Field(ge=0.0, le=1.0)


class VerificationRows(Candidate):
    """Every candidate verified specialization measured on a device (ofa/verify.py): what the
    search predicted, what the device and the validation split measured, and the verdict."""

    constraint: Series[str]
    search_limit: Series[float] = pa.Field(gt=0.0)
    round: Series[int] = pa.Field(ge=0)
    raw_latency_ms: Series[float] = pa.Field(gt=0.0)
    p90_latency_ms: Series[float] = pa.Field(gt=0.0)
    verified_latency_ms: Series[float] = pa.Field(gt=0.0)
    drift: Series[float] = pa.Field(gt=0.0)
    val_acc: Series[float] = pa.Field(ge=0.0, le=1.0, nullable=True)   # None: over, not evaluated
    meets_limit: Series[bool]
    verdict: Series[str] = pa.Field(isin=["shipped", "over the limit",
                                          "less accurate than the shipped one"])
    origin: Optional[Series[str]] = pa.Field(   # records written before 2026-12-08 lack it
        isin=["search", "uniform min", "uniform mid", "uniform max"])

    @pa.dataframe_check(name="finite timings")
    def _finite(cls, df: pd.DataFrame) -> Series[bool]:  # noqa: N805 - pandera's signature
        cols = ["limit", "search_limit", "predicted_latency_ms", "raw_latency_ms",
                "p90_latency_ms", "verified_latency_ms", "drift"]
        return df[cols].abs().lt(float("inf")).all(axis=1)

    @pa.dataframe_check(name="val_acc measured wherever it could ship")
    def _evaluated(cls, df: pd.DataFrame) -> Series[bool]:  # noqa: N805
        return ~(df["meets_limit"].astype(bool) & df["val_acc"].isna())


def validate(df: pd.DataFrame, model: type[pa.DataFrameModel], what: str) -> pd.DataFrame:
    """The validated (coerced) table, or one OFAError naming the first failed check."""
    try:
        return model.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        row = cases.iloc[0]
        col = row.get("column")
        where = f" in column {col!r}" if isinstance(col, str) else ""
        raise OFAError(f"{what} violates its contract: check {row['check']!s}{where} failed "
                       f"({len(cases)} failure(s), e.g. {row['failure_case']!r})") from None


def validate_records(rows: list[dict], model: type[pa.DataFrameModel], what: str) -> list[dict]:
    validate(pd.DataFrame(rows), model, what)
    return rows
