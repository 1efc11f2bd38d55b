"""Training and evaluation as Prefect flows over the pipeline's DVC stages (flows/stages.py).

The raw data passes its Great Expectations gate (training/dvc.yaml's `validate-data` stage)
before any phase trains, and the training summary (`train-report`) closes the run. A failed phase is retried once: training resumes from the phase's last complete epoch,
so a retry after a lost worker costs at most one epoch. Up-to-date stages are skipped by DVC.
"""

from __future__ import annotations

from prefect import flow

from flows.stages import phase_stage, project_root, run_stage, training_stage
from ofa.config import load_params


@flow(name="progressive-shrinking", log_prints=True)
def progressive_shrinking(params_path: str = "params.yaml",
                          phases: list[str] | None = None) -> list[str]:
    """Gate the raw data, train the phases in order (default: the whole shrinking chain), then
    summarize the training."""
    root = project_root(params_path)
    params = load_params(params_path)
    order = phases or params.shrinking_order()
    for name in order:
        params.phase(name)  # an unknown phase fails before any work
    return [run_stage(root, training_stage("validate-data"))] + [
        run_stage(root, phase_stage(name), retries=1) for name in order] + [
        run_stage(root, training_stage("train-report"))]


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params_path: str = "params.yaml") -> str:
    """min/mid/max subnets of params' supernet at every resolution, BN recalibrated, on
    validation and test."""
    return run_stage(project_root(params_path), "evaluate", retries=1)


if __name__ == "__main__":
    progressive_shrinking()
