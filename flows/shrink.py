"""Training and evaluation as Prefect flows, calling the same `ofa` functions as the CLI.

The raw data passes its Great Expectations gate before any phase trains. A failed phase is
retried once: training resumes from the phase's last complete epoch, so a retry after a lost
worker costs at most one epoch.
"""

from __future__ import annotations

import json

from prefect import flow, task

from flows.gates import gate_task
from ofa.config import load_params


@task(name="train-phase", retries=1, retry_delay_seconds=5)
def train_phase_task(params_path: str, phase: str, preset: str | None = None) -> dict:
    from pathlib import Path

    from ofa.distributed import set_threads
    from ofa.launch import in_world, run_training
    from ofa.train import checkpoint_path, train_phase

    params = load_params(params_path, preset)
    if params.train.processes > 1 and not in_world():  # the same local workers as the CLI
        run_training(Path(params_path), preset, phase, params.train.processes, progress=False)
        report = json.loads(Path(params.train.report_dir, f"{phase}.json").read_text())
        history, ckpt = report["history"], checkpoint_path(params, phase)
    else:
        set_threads(params.train.threads)
        result = train_phase(params, phase, show_progress=False)
        history, ckpt = result.history, result.checkpoint
    last = history[-1] if history else {}
    return {"phase": phase, "checkpoint": str(ckpt),
            **{k: v for k, v in last.items() if k.startswith("val_acc")}}


@task(name="evaluate", retries=1, retry_delay_seconds=5)
def evaluate_task(params_path: str, phase: str | None = None, preset: str | None = None,
                  output: str = "reports/evaluate.json") -> dict:
    from pathlib import Path

    from ofa.evaluate import run_evaluate

    params = load_params(params_path, preset)
    phase = phase or params.shrinking_order()[-1]
    ckpt = Path(params.train.checkpoint_dir) / f"{phase}.pt"
    rows = run_evaluate(params, ckpt, [], ("val", "test"), Path(output), show_progress=False,
                        phase=phase)
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
