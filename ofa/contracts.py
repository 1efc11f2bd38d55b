"""Data contracts (pandera) for the tables that pass between steps.

Each table is checked where it is written and where it is read; a violation is one OFAError
naming the table, the failed check and the column, and nothing downstream is written.
"""

from __future__ import annotations

from typing import Optional

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from ofa.errors import OFAError

CONFIG_PATTERN = r"^r\d+-d\d+-k\d+-e\d+$"


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
    """One layer per row, timed on one device."""

    key: Series[str] = pa.Field(unique=True)
    median_ms: Series[float] = pa.Field(gt=0.0)
    spread_ms: Series[float] = pa.Field(ge=0.0, nullable=True)
    count: Series[int] = pa.Field(ge=0, nullable=True)  # timings per layer; 0 = unknown (imported)

    @pa.check("median_ms", name="finite")
    def _finite(cls, s: Series[float]) -> Series[bool]:  # noqa: N805 - pandera's signature
        return s.abs() < float("inf")

    class Config:
        strict = False  # layer fields and costs ride along
        coerce = True


class SearchResults(pa.DataFrameModel):
    """One chosen subnet per constraint of one device."""

    constraint: Series[str] = pa.Field(unique=True)
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


class ParetoRows(SearchResults):
    """Search results plus what export measured on the device."""

    test_acc: Series[float] = pa.Field(ge=0.0, le=1.0)
    measured_latency_ms: Series[float] = pa.Field(gt=0.0)


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
