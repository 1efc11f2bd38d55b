"""Progressive shrinking as a Prefect flow, calling the same `ofa.train.train_phase` as the CLI.

A failed phase is retried once: training resumes from the phase's last complete epoch, so a
retry after a lost worker costs at most one epoch.
"""

from __future__ import annotations

from prefect import flow, task

from ofa.config import load_params


@task(name="train-phase", retries=1, retry_delay_seconds=5)
def train_phase_task(params_path: str, phase: str, preset: str | None = None) -> dict:
    from ofa.distributed import set_threads
    from ofa.train import train_phase

    params = load_params(params_path, preset)
    set_threads(params.train.threads)
    result = train_phase(params, phase, show_progress=False)
    last = result.history[-1] if result.history else {}
    return {"phase": phase, "checkpoint": str(result.checkpoint),
            **{k: v for k, v in last.items() if k.startswith("val_acc")}}


@flow(name="progressive-shrinking", log_prints=True)
def progressive_shrinking(params_path: str = "params.yaml", phases: list[str] | None = None,
                          preset: str | None = None) -> list[dict]:
    """Train the phases in order (default: the whole shrinking chain from params.yaml)."""
    order = phases or load_params(params_path, preset).shrinking_order()
    return [train_phase_task(params_path, name, preset) for name in order]


if __name__ == "__main__":
    progressive_shrinking()
