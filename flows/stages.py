"""The flows run the pipeline's DVC stages, so a Prefect run and `dvc repro` leave one record.

Each task is one `dvc repro --single-item <stage>` in the project that holds the params file:
DVC runs the stage's `ofa-cli` command, records it in dvc.lock and caches its outputs, so after
a flow `dvc status` is clean and the next `dvc repro` has nothing to redo. The command's output
goes to the task's log. A failure whose command exited with 2 (ofa-cli's one-line error for a
configuration or input problem: a missing table file, a bad value) is not retried; retries are
for the stages that measure or write (`MEASURES`), where another go can help.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task

from ofa.errors import OFAError

USER_ERROR = 2  # ofa-cli's exit code for an error the user can fix (`error: ...`)


class StageFailed(RuntimeError):
    """A DVC stage failed; `exit_code` is its command's (None when DVC itself failed)."""

    def __init__(self, stage: str, exit_code: int | None, detail: str) -> None:
        super().__init__(f"stage {stage} failed: {detail}")
        self.stage, self.exit_code = stage, exit_code


def project_root(params_path: str | Path) -> Path:
    """The DVC project whose params file this is (DVC reads `params.yaml` beside `dvc.yaml`)."""
    path = Path(params_path).resolve()
    if path.name != "params.yaml" or not (path.parent / "dvc.yaml").is_file():
        raise OFAError(f"{params_path}: the flows run the pipeline's DVC stages, so they need the "
                       "params.yaml of a DVC project (beside its dvc.yaml)")
    return path.parent


def _dvc() -> str:
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else (shutil.which("dvc") or "dvc")


def repro(root: Path, stage: str) -> list[str]:
    """Run one stage through DVC (`--single-item`: upstream stages are the flow's business),
    logging its output line by line; raise StageFailed naming the stage and the error."""
    log = get_run_logger()
    cmd = [_dvc(), "repro", "--single-item", stage]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            lines.append(line)
            log.info(line)
    if proc.wait() != 0:
        code = next((int(m.group(1)) for line in reversed(lines)
                     if (m := re.search(r"exited with (\d+)", line))), None)
        errors = [ln for ln in lines if ln.startswith(("error:", "ERROR:"))]
        raise StageFailed(stage, code, errors[0] if errors else (lines[-1] if lines else "no output"))
    return lines


def _worth_retrying(task_, task_run, state) -> bool:
    """Retry a measurement or I/O failure; never an error the user has to fix."""
    try:
        state.result()
    except StageFailed as exc:
        return exc.exit_code != USER_ERROR
    except Exception:  # noqa: BLE001 - anything else (a lost worker, a busy disk) may pass
        return True
    return False


@task(task_run_name="{stage}", retry_condition_fn=_worth_retrying, retry_delay_seconds=[5, 20])
def stage_task(root: Path, stage: str) -> str:
    """One DVC stage as a task named after it (`latency@cpu1-b1`, `gate-latency@cpu1-b1`)."""
    repro(root, stage)
    return stage


def run_stage(root: Path, stage: str, retries: int = 0) -> str:
    """The stage as a task with `retries` (0 for pure computation and gates)."""
    return stage_task.with_options(retries=retries)(root, stage)


TRAINING = "training/dvc.yaml"  # the training pipeline's stages, addressed as DVC names them


def training_stage(name: str) -> str:
    """A stage of the training pipeline (`validate-data`, `train-report`) by its DVC address."""
    return f"{TRAINING}:{name}"


def phase_stage(phase: str) -> str:
    """The DVC stage that trains a phase (training/dvc.yaml: `teacher`, then `shrink@<phase>`)."""
    return training_stage(phase if phase == "teacher" else f"shrink@{phase}")
