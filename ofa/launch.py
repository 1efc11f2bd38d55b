"""Local data-parallel training: `train.processes` workers of `ofa-cli train` on this machine.

What `torchrun --standalone --nproc_per_node N -m ofa.cli train ...` does, started by the CLI
(and the Prefect flow) itself so that the DVC stage stays one plain command. On a 2-core CPU
two 1-thread workers train faster than one 2-thread process (a second intra-op thread helps
small subnets' tiny convolutions little; figures in reports/RESULTS.md), so the default params
use 2. Only rank 0 prints; a failing worker stops the others
and its exit code (and, if rank 0 said nothing, its last error line) is what the caller sees;
when another rank fails first, rank 0 gets a few seconds to fail on its own, so an error that
every rank hits (bad input) is reported once, in rank 0's words.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ofa import paths
from ofa.config import Params
from ofa.device import local_workers
from ofa.distributed import init_distributed
from ofa.errors import OFAError
from ofa.locks import HELD_ENV, exclusive
from ofa.train import train_phase

WORLD_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
              "MASTER_PORT", "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
STOP_GRACE_S = 30.0
RANK0_GRACE_S = 5.0  # how long rank 0 may take to report an error every rank hit


def in_world() -> bool:
    """True inside a worker (ours or torchrun's): the process group is described by env vars."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def worker_args(params_path: Path, preset: str | None, command: list[str],
                progress: bool) -> list[str]:
    """`ofa.cli` arguments that run the training `command` (e.g. `train --phase kernel`)
    with the same params file and preset."""
    args = ["--params", str(params_path)]
    if preset:
        args += ["--preset", preset]
    return args + command + ["--progress" if progress else "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker_env(rank: int, world: int, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WORLD_VARS}
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
               LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env.setdefault("OMP_NUM_THREADS", "1")  # the workers set their share from params
    env[HELD_ENV] = "1"  # the phase's lock is this process's
    return env


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _exit_code(proc: subprocess.Popen, timeout: float) -> int | None:
    """proc's exit code once it ends within timeout, else None."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def _last_error(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [""])[-1]


def launch_workers(processes: int, args: list[str], poll_s: float = 0.2) -> int:
    """Run `python -m ofa.cli *args` as `processes` ranks; 0 when every rank succeeded.

    Rank 0 keeps this process's stdout/stderr; the others write theirs to a temporary file
    that is shown (one line) only when they fail first.
    """
    if processes < 2:
        raise ValueError("launch_workers needs at least 2 processes")
    port = _free_port()
    cmd = [sys.executable, "-m", "ofa.cli", *args]
    with tempfile.TemporaryDirectory(prefix="ofa-workers-") as tmp:
        logs = [Path(tmp) / f"rank{r}.log" for r in range(processes)]
        procs: list[subprocess.Popen] = []
        try:
            for rank in range(processes):
                quiet = rank > 0
                out = open(logs[rank], "w") if quiet else None  # noqa: SIM115 - closed below
                procs.append(subprocess.Popen(cmd, env=_worker_env(rank, processes, port),
                                              stdout=out or None, stderr=out or None))
                if out is not None:
                    out.close()
            while True:
                codes = [p.poll() for p in procs]
                failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    rank, code = failed[0]
                    if rank > 0:  # bad input fails every rank: rank 0 may be saying why now
                        code0 = _exit_code(procs[0], RANK0_GRACE_S)
                        if code0 not in (None, 0):
                            _stop(procs)
                            return code0
                    _stop(procs)
                    if rank > 0:
                        print(f"error: training worker {rank} failed: "
                              f"{_last_error(logs[rank])}", file=sys.stderr)
                    return code
                if all(c == 0 for c in codes):
                    return 0
                time.sleep(poll_s)
        except BaseException:
            _stop(procs)
            raise


class WorkersFailed(OFAError):
    """A training worker failed; it has already said why (its `error:` line)."""

    def __init__(self, phase: str, code: int) -> None:
        super().__init__(f"training phase {phase} failed in its workers (exit code {code})")
        self.code = code


@dataclass(frozen=True)
class TrainedPhase:
    checkpoint: Path
    report: Path
    history: list[dict]
    in_workers: bool  # trained by local workers (rank 0 printed what it wrote)


def run_phase(params: Params, params_path: Path, preset: str | None, phase: str,
              progress: bool, command: list[str] | None = None) -> TrainedPhase:
    """Train `phase` in `train.processes` local workers unless this process already is one
    (ours or torchrun's) or one process is asked for; then here. The workers run `command`
    (default `train --phase <phase>`; a phase made up by a command, such as a from-scratch
    run, passes that command). WorkersFailed if a worker failed. One run per phase at a time:
    the first process (not a worker) holds the phase's lock."""
    held = os.environ.get(HELD_ENV) == "1" or int(os.environ.get("RANK", "0")) > 0
    lock = nullcontext() if held else exclusive(paths.phase_lock(params, phase),
                                                f"training of phase {phase}")
    with lock:
        return _run_phase(params, params_path, preset, phase, progress, command)


def _run_phase(params: Params, params_path: Path, preset: str | None, phase: str,
               progress: bool, command: list[str] | None) -> TrainedPhase:
    workers = local_workers(params.train.processes, params.train.device)
    if workers > 1 and not in_world():
        code = launch_workers(workers,
                              worker_args(params_path, preset,
                                          command or ["train", "--phase", phase], progress))
        if code != 0:
            raise WorkersFailed(phase, code)
        report = paths.train_report(params, phase)
        return TrainedPhase(paths.checkpoint(params, phase), report,
                            json.loads(report.read_text())["history"], True)
    result = train_phase(params, phase, init_distributed(params.train.device),
                         show_progress=progress)
    return TrainedPhase(result.checkpoint, result.report, result.history, False)
