"""torchrun with two CPU processes (gloo): both ranks end a phase with the same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa.checkpoint import load_checkpoint
from ofa.config import load_params
from ofa.train import lr_at
from tests.cli_support import CLI, ROOT, params_dict, write_params

# kernel: 4 steps of 2 subnets each (gradients of both accumulated before every step), KD on.
DDP = {"phases": {"teacher": {"images_per_epoch": 64},
                  "kernel": {"epochs": 1, "images_per_epoch": 128, "subnets_per_step": 2,
                             "warmup_epochs": 0.0}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    for var in ("OFA_DEBUG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(var, None)
    return env


def _train_teacher_then_kernel_on_two_ranks(tmp_path: Path, overrides: dict,
                                            timeout: float = 300) -> subprocess.CompletedProcess:
    """The teacher in one process (ofa-cli), then the kernel phase under torchrun, 2 ranks."""
    params = write_params(tmp_path, params_dict(tmp_path, overrides))
    teacher = subprocess.run([*CLI, "--params", str(params), "train", "--phase", "teacher",
                              "--no-progress"], cwd=tmp_path, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    out = tmp_path / "ranks"
    out.mkdir()
    try:
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
             str(ROOT / "tests" / "ddp_worker.py"), str(params), "kernel", str(out)],
            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # the ranks disagree on the number of steps
        pytest.fail(f"the 2-rank run hung for {timeout:.0f} s:\n{(exc.stderr or b'')[-3000:]!r}")


def _rank_weights(tmp_path: Path) -> list[dict]:
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    return ranks


@pytest.mark.slow
def test_two_ranks_end_with_identical_weights(tmp_path: Path):
    proc = _train_teacher_then_kernel_on_two_ranks(tmp_path, DDP)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = _rank_weights(tmp_path)
    assert ranks[0]["epochs"] == 1  # rank 0 evaluates and keeps the history
    w0, w1 = ranks[0]["model"], ranks[1]["model"]
    teacher_w = load_checkpoint(tmp_path / "ckpt" / "teacher.pt")["model"]
    final = load_checkpoint(tmp_path / "ckpt" / "kernel.pt")
    assert final["meta"]["complete"]
    assert w0.keys() == w1.keys() == teacher_w.keys() == final["model"].keys()
    changed = []
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks 0 and 1 differ in {k}"
        assert torch.equal(w0[k], final["model"][k]), f"the saved checkpoint differs in {k}"
        if w0[k].is_floating_point() and not torch.equal(w0[k], teacher_w[k]):
            changed.append(k)
    # The phase really trained: weights, BN statistics and the kernel transforms (which only
    # the kernel phase's 5x5 and 3x3 subnets use) moved away from the teacher.
    assert any(k.endswith("depthwise.weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)
    assert any("transforms" in k for k in changed)
    report = json.loads((tmp_path / "reports" / "kernel.json").read_text())
    assert report["complete"] and report["epochs"] == 1
    kernel = load_params(tmp_path / "params.yaml").phase("kernel")
    steps = 128 // 32  # the last step's learning rate: exactly `steps` steps were taken
    assert report["history"][0]["lr_end"] == pytest.approx(
        lr_at(steps - 1, steps, 0, kernel.lr, kernel.lr_end))
    assert not (tmp_path / "ckpt" / ".resume" / "kernel.pt").exists()


@pytest.mark.slow
def test_batch_not_divisible_by_ranks(tmp_path: Path):
    """batch_size 3 on 2 ranks: either a clean refusal naming train.batch_size, or a run in
    which both ranks take exactly images_per_epoch // batch_size steps. Never a hang."""
    proc = _train_teacher_then_kernel_on_two_ranks(
        tmp_path, {**DDP, "train": {"batch_size": 3}}, timeout=120)
    if proc.returncode != 0:
        assert "train.batch_size" in proc.stderr, proc.stderr[-3000:]
        assert not (tmp_path / "ckpt" / "kernel.pt").exists()
        return
    ranks = _rank_weights(tmp_path)
    for k, v in ranks[0]["model"].items():
        assert torch.equal(v, ranks[1]["model"][k]), f"ranks 0 and 1 differ in {k}"
    steps = 128 // 3
    lr_end = json.loads((tmp_path / "reports" / "kernel.json").read_text())["history"][0]["lr_end"]
    assert lr_end == pytest.approx(lr_at(steps - 1, steps, 0, 0.03))


def _cli_env() -> dict:
    env = _env()
    env.pop("MASTER_ADDR", None)
    return env


@pytest.mark.slow
def test_train_processes_runs_local_workers(tmp_path: Path):
    """`train.processes: 2`: plain `ofa-cli train` starts two ranks itself; rank 0 writes the
    checkpoint (recording the world size) and prints, the phase then continues from it."""
    params = write_params(tmp_path, params_dict(tmp_path, {**DDP, "train": {"processes": 2,
                                                                            "threads": 2}}))
    for phase in ("teacher", "kernel"):
        proc = subprocess.run([*CLI, "--params", str(params), "train", "--phase", phase,
                               "--no-progress"], cwd=tmp_path, env=_cli_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.stdout.count(f"wrote {tmp_path / 'ckpt' / phase}.pt") == 1, proc.stdout
        meta = load_checkpoint(tmp_path / "ckpt" / f"{phase}.pt")["meta"]
        assert meta["complete"] and meta["world"] == 2


@pytest.mark.slow
def test_a_failing_worker_gives_one_error_line(tmp_path: Path):
    """A phase whose starting checkpoint is missing fails in every worker: one clean line."""
    from tests.cli_support import assert_clean_error

    params = write_params(tmp_path, params_dict(tmp_path, {"train": {"processes": 2}}))
    proc = subprocess.run([*CLI, "--params", str(params), "train", "--phase", "kernel",
                           "--no-progress"], cwd=tmp_path, env=_cli_env(), capture_output=True,
                          text=True, timeout=120)
    assert_clean_error(proc, "does not exist yet")
    assert not (tmp_path / "ckpt" / "kernel.pt").exists()
