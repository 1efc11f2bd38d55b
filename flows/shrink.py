"""Training and evaluation as Prefect flows, calling the same `ofa` functions as the CLI.

The raw data passes its Great Expectations gate before any phase trains. A failed phase is
retried once: training resumes from the phase's last complete epoch, so a retry after a lost
worker costs at most one epoch.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows.gates import gate_task
from ofa import paths
from ofa.config import load_params
from ofa.distributed import set_threads
from ofa.evaluate import run_evaluate
from ofa.launch import run_phase


@task(name="train-phase", retries=1, retry_delay_seconds=5)
def train_phase_task(params_path: str, phase: str, preset: str | None = None) -> dict:
    params = load_params(params_path, preset)
    set_threads(params.train.threads)
    result = run_phase(params, Path(params_path), preset, phase, progress=False)
    last = result.history[-1] if result.history else {}
    return {"phase": phase, "checkpoint": str(result.checkpoint),
            **{k: v for k, v in last.items() if k.startswith("val_acc")}}


@task(name="evaluate", retries=1, retry_delay_seconds=5)
def evaluate_task(params_path: str, phase: str | None = None, preset: str | None = None,
                  output: str = "reports/evaluate.json") -> dict:
    params = load_params(params_path, preset)
    phase = phase or params.shrinking_order()[-1]
    rows = run_evaluate(params, paths.checkpoint(params, phase), [], ("val", "test"), Path(output),
                        show_progress=False, phase=phase)
    return {"output": output, **{f"{r['name']}_r{r['resolution']}_test_acc": r["test_acc"]
                                 for r in rows}}


@flow(name="progressive-shrinking", log_prints=True)
def progressive_shrinking(params_path: str = "params.yaml", phases: list[str] | None = None,
                          preset: str | None = None) -> list[dict]:
    """Gate the raw data, then train the phases in order (default: the whole shrinking chain)."""
    order = phases or load_params(params_path, preset).shrinking_order()
    gate_task(params_path, "data", None, preset)
    return [train_phase_task(params_path, name, preset) for name in order]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml", phase: str | None = None,
                  preset: str | None = None, output: str = "reports/evaluate.json") -> dict:
    """min/mid/max subnets at every resolution, BN recalibrated, on validation and test."""
    return evaluate_task(params_path, phase, preset, output)


if __name__ == "__main__":
    progressive_shrinking()
