"""The Great Expectations gate as a Prefect task: the flows run it between steps.

A failed expectation raises (one message naming it) and fails the flow before any later step
writes; the same `ofa.validation.gate` backs `ofa-cli validate` in the DVC stages.
"""

from __future__ import annotations

from prefect import task

from ofa.config import load_params
from ofa.validation import gate


@task(name="validation-gate")
def gate_task(params_path: str, what: str, device: str | None = None,
              preset: str | None = None) -> dict:
    """Validate one artifact ('data', 'acc-dataset', 'latency'); returns the suite's summary."""
    res = gate(load_params(params_path, preset), what, device)
    return {"suite": res["suite"], "success": res["success"], "rows": res["rows"]}
