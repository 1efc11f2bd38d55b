"""`ofa-cli` as a user runs it (a real subprocess, real training on a few batches).

Every bad input must end with a non-zero exit, exactly one stderr line `error: ...` naming the
problem, no traceback, and no file written or changed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from ofa.checkpoint import FORMAT, save_checkpoint
from ofa.config import deep_merge, load_params, preset, read_yaml
from ofa.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("ofa-cli")
CLI = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ofa.cli"]
PHASES = ("teacher", "kernel", "depth1", "depth2", "expand1", "expand2", "naive")

# A few batches per phase: one phase trains in a few seconds on one thread.
TINY = {
    "data": {"subset": 256},
    "train": {"batch_size": 32, "eval_batch_size": 64, "eval_images": 64, "bn_calib_images": 64,
              "final_eval_images": 64, "threads": 1},
    "phases": {name: {"epochs": 1, "images_per_epoch": 64} for name in PHASES},
}


def params_dict(workdir: Path, overrides: dict | None = None) -> dict:
    """params.yaml + the smoke preset + TINY, writing checkpoints and reports inside workdir."""
    raw = deep_merge(read_yaml(ROOT / "params.yaml"), preset("smoke"))
    raw = deep_merge(raw, TINY)
    raw = deep_merge(raw, {"train": {"checkpoint_dir": str(workdir / "ckpt"),
                                     "report_dir": str(workdir / "reports")}})
    return deep_merge(raw, overrides or {})


def write_params(workdir: Path, raw: dict | None = None, name: str = "params.yaml") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(yaml.safe_dump(params_dict(workdir) if raw is None else raw, sort_keys=False))
    return path


def cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OFA_DEBUG", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, one `error:` line on stderr holding every needle, no traceback."""
    shown = f"rc={proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-2000:]}"
    assert proc.returncode != 0, shown
    assert "Traceback" not in proc.stdout + proc.stderr, shown
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), shown
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below folder (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


@dataclass(frozen=True)
class Trained:
    dir: Path
    params: Path
    proc: subprocess.CompletedProcess

    @property
    def checkpoint(self) -> Path:
        return self.dir / "ckpt" / "teacher.pt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """The teacher phase trained once, for real, through the CLI."""
    tmp = tmp_path_factory.mktemp("teacher")
    params = write_params(tmp)
    proc = cli(["--params", str(params), "train", "--phase", "teacher", "--no-progress"], tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Trained(tmp, params, proc)


@pytest.fixture(scope="module")
def other_space_checkpoint(tmp_path_factory) -> Path:
    """A teacher trained on a different space (first stage 32 channels wide instead of 24)."""
    tmp = tmp_path_factory.mktemp("other-space")
    raw = params_dict(tmp)
    raw["space"]["stages"][0]["width"] = 32
    params = write_params(tmp, raw)
    proc = cli(["--params", str(params), "train", "--phase", "teacher", "--no-progress"], tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "ckpt" / "teacher.pt"


# -- the happy path --------------------------------------------------------------------------
def test_help_exits_zero_quickly(tmp_path: Path):
    start = time.perf_counter()
    proc = cli(["--help"], tmp_path, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "benchmark"):
        assert command in proc.stdout
    assert elapsed < 10, f"--help took {elapsed:.1f} s: heavy imports at module level?"


def test_train_then_evaluate(trained: Trained, tmp_path: Path):
    assert "Traceback" not in trained.proc.stdout + trained.proc.stderr
    assert trained.checkpoint.is_file()
    assert f"wrote {trained.checkpoint}" in trained.proc.stdout
    assert not (trained.dir / "ckpt" / ".resume" / "teacher.pt").exists()
    report = json.loads((trained.dir / "reports" / "teacher.json").read_text())
    assert report["complete"] and report["epochs"] == 1 and len(report["history"]) == 1
    assert 0.0 <= report["val_acc_max"] <= 1.0

    params = write_params(tmp_path)
    proc = cli(["--params", str(params), "evaluate", "--checkpoint", str(trained.checkpoint),
                "--splits", "val", "--output", "out.json"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["checkpoint"] == str(trained.checkpoint)
    space = SearchSpace(load_params(params).space)
    resolutions = space.cfg.resolutions
    rows = {(r["name"], r["resolution"]): r for r in result["rows"]}
    assert len(rows) == len(result["rows"]) == 3 * len(resolutions)
    for name in ("min", "mid", "max"):
        for res in resolutions:
            row = rows[(name, res)]
            assert row["config"] == str(getattr(space, f"{name}_config")(res))
            assert 0.0 <= row["val_acc"] <= 1.0 and "test_acc" not in row
            assert row["macs"] > 0 and row["params"] > 0
    for res in resolutions:  # the bigger subnet costs more at every resolution
        assert rows[("min", res)]["macs"] < rows[("mid", res)]["macs"] < rows[("max", res)]["macs"]
    assert "| subnet |" in (tmp_path / "out.md").read_text()


# -- bad params ------------------------------------------------------------------------------
def _pop_stages(raw: dict) -> None:
    del raw["space"]["stages"]


def _misspell_epochs(raw: dict) -> None:
    raw["phases"]["teacher"]["epoch"] = raw["phases"]["teacher"].pop("epochs")


def _negative_lr(raw: dict) -> None:
    raw["phases"]["teacher"]["lr"] = -0.1


def _kernel_outside_space(raw: dict) -> None:
    raw["phases"]["teacher"]["kernel"] = [9]


def _string_batch_size(raw: dict) -> None:
    raw["train"]["batch_size"] = "big"


@pytest.mark.parametrize("edit, needle", [
    (_pop_stages, "space.stages: missing key"),
    (_misspell_epochs, "phases.teacher.epoch: unknown key"),
    (_negative_lr, "phases.teacher.lr: must be positive"),
    (_kernel_outside_space, "phases.teacher.kernel"),
    (_string_batch_size, "train.batch_size: expected an integer"),
], ids=["missing-key", "misspelled-key", "out-of-range", "outside-space", "wrong-type"])
def test_bad_params_value(tmp_path: Path, edit: Callable[[dict], None], needle: str):
    raw = params_dict(tmp_path)
    edit(raw)
    params = write_params(tmp_path, raw)
    before = snapshot(tmp_path)
    assert_clean_error(cli(["--params", str(params), "train", "--phase", "teacher"], tmp_path),
                       needle)
    assert snapshot(tmp_path) == before  # nothing written: no checkpoint, no report


@pytest.mark.parametrize("content, needle", [
    (None, "nope.yaml does not exist"),
    ("space: [\n", "not valid YAML"),
    ("- a list\n", "mapping at the top level"),
], ids=["missing-file", "invalid-yaml", "not-a-mapping"])
def test_bad_params_file(tmp_path: Path, content: str | None, needle: str):
    if content is not None:
        (tmp_path / "nope.yaml").write_text(content)
    before = snapshot(tmp_path)
    assert_clean_error(cli(["--params", "nope.yaml", "train", "--phase", "teacher"], tmp_path),
                       needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, needle", [
    (["train", "--phase", "nope"], "unknown phase 'nope'"),
    (["evaluate", "--phase", "nope"], "unknown phase 'nope'"),
    (["evaluate", "--splits", "train"], "unknown split 'train'"),
    (["--preset", "nope", "train", "--phase", "teacher"], "unknown preset 'nope'"),
], ids=["train-phase", "evaluate-phase", "split", "preset"])
def test_bad_argument(tmp_path: Path, args: list[str], needle: str):
    params = write_params(tmp_path)
    before = snapshot(tmp_path)
    assert_clean_error(cli(["--params", str(params), *args], tmp_path), needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args", [["train"], ["train", "--phase"], ["train", "--phase", "teacher",
                                                                   "--bogus"]],
                         ids=["missing-option", "missing-value", "unknown-option"])
def test_usage_error_is_one_line(tmp_path: Path, args: list[str]):
    params = write_params(tmp_path)
    assert_clean_error(cli(["--params", str(params), *args], tmp_path))


# -- subnet configs outside the space --------------------------------------------------------
K7, E6 = "7" * 16, "6" * 16


@pytest.mark.parametrize("config, needle", [
    (f"r28-d4444-k{'9' * 16}-e{E6}", "kernel size 9 is outside the space"),
    (f"r28-d5444-k{K7}-e{E6}", "depth 5 is outside the space"),
    (f"r30-d4444-k{K7}-e{E6}", "resolution 30 is outside the space"),
    (json.dumps({"ks": [7] * 16, "e": [6] * 16, "d": [4, 4, 4, 4], "r": 30}),
     "resolution 30 is outside the space"),
    (f"r28-d444-k{K7}-e{E6}", "needs 4 depths"),
    ("r28-banana", "cannot parse subnet config"),
], ids=["kernel-9", "depth-5", "resolution-30", "json-resolution-30", "three-depths", "garbage"])
def test_config_outside_the_space(trained: Trained, tmp_path: Path, config: str, needle: str):
    """A real checkpoint, so the only thing wrong is the config; it is refused up front."""
    params = write_params(tmp_path)
    proc = cli(["--params", str(params), "evaluate", "--checkpoint", str(trained.checkpoint),
                "--splits", "val", "--output", "out.json", "--config", config], tmp_path)
    assert_clean_error(proc, needle)
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "out.md").exists()
    assert "max" not in proc.stdout  # no subnet was evaluated (the table lists min/mid/max)


# -- bad checkpoints -------------------------------------------------------------------------
def _missing(path: Path, good: Path, request) -> Path:
    return path


def _truncated(path: Path, good: Path, request) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _foreign_dict(path: Path, good: Path, request) -> Path:
    torch.save({"a": torch.zeros(3)}, path)
    return path


def _random_bytes(path: Path, good: Path, request) -> Path:
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def _empty(path: Path, good: Path, request) -> Path:
    path.write_bytes(b"")
    return path


def _other_space(path: Path, good: Path, request) -> Path:
    """Trained for real on a space whose first stage is wider: the tensors do not fit."""
    return request.getfixturevalue("other_space_checkpoint")


def _other_dropout(path: Path, good: Path, request) -> Path:
    """The same tensor shapes, but the space says dropout 0.3: still a different space."""
    payload = torch.load(good, weights_only=True)
    payload["meta"]["space"]["dropout"] = 0.3
    torch.save(payload, path)
    return path


def _wrong_tensors(path: Path, good: Path, request) -> Path:
    """The OFA format and the right space in the metadata, but tensors of another network."""
    meta = torch.load(good, weights_only=True)["meta"]
    save_checkpoint(path, {"stem.0.weight": torch.zeros(3, 3)}, meta)
    return path


@pytest.mark.parametrize("make, needle", [
    (_missing, "does not exist"),
    (_truncated, "is truncated or not a torch file"),
    (_foreign_dict, f"is not an OFA supernet checkpoint ({FORMAT})"),
    (_random_bytes, "is truncated or not a torch file"),
    (_empty, "is truncated or not a torch file"),
    (_other_space, "different search space"),
    (_other_dropout, "different search space"),
    (_wrong_tensors, "bad.pt"),
], ids=["missing", "truncated", "foreign-dict", "random-bytes", "empty", "other-space",
        "other-dropout", "wrong-tensors"])
def test_bad_checkpoint(trained: Trained, tmp_path: Path, request, make, needle: str):
    ckpt = make(tmp_path / "bad.pt", trained.checkpoint, request)
    params = write_params(tmp_path)
    before = snapshot(ckpt.parent)
    proc = cli(["--params", str(params), "evaluate", "--checkpoint", str(ckpt), "--splits", "val",
                "--output", "out.json"], tmp_path)
    line = assert_clean_error(proc, needle)
    assert str(ckpt) in line  # the message names the file
    assert not (tmp_path / "out.json").exists()
    assert snapshot(ckpt.parent) == before


def test_missing_start_checkpoint(tmp_path: Path):
    params = write_params(tmp_path)
    assert_clean_error(cli(["--params", str(params), "train", "--phase", "kernel"], tmp_path),
                       str(tmp_path / "ckpt" / "teacher.pt"), "does not exist",
                       "ofa-cli train --phase teacher")
    assert not (tmp_path / "ckpt" / "kernel.pt").exists()
    assert not (tmp_path / "ckpt" / ".resume" / "kernel.pt").exists()
    assert not (tmp_path / "reports").exists()


# -- a failure damages nothing ---------------------------------------------------------------
def _kernel_lr(raw: dict, ckpt: Path) -> None:
    raw["phases"]["kernel"]["lr"] = -1  # refused while reading params


def _kernel_tiny_epoch(raw: dict, ckpt: Path) -> None:
    raw["phases"]["kernel"]["images_per_epoch"] = 16  # refused inside train_phase, after loading


def _teacher_truncated(raw: dict, ckpt: Path) -> None:
    data = (ckpt / "teacher.pt").read_bytes()  # the starting point cannot be read
    (ckpt / "teacher.pt").write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("break_it, needle", [
    (_kernel_lr, "phases.kernel.lr: must be positive"),
    (_kernel_tiny_epoch, "fewer images per epoch than one batch"),
    (_teacher_truncated, "is truncated or not a torch file"),
], ids=["bad-param", "bad-epoch-size", "bad-start-checkpoint"])
def test_failure_damages_nothing(trained: Trained, tmp_path: Path, break_it, needle: str):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(trained.checkpoint, ckpt / "teacher.pt")
    shutil.copy(trained.checkpoint, ckpt / "kernel.pt")  # an existing result of the phase
    raw = params_dict(tmp_path)
    break_it(raw, ckpt)
    params = write_params(tmp_path, raw)
    before = snapshot(tmp_path)
    proc = cli(["--params", str(params), "train", "--phase", "kernel", "--no-progress"], tmp_path)
    assert_clean_error(proc, needle)
    after = snapshot(tmp_path)
    assert after.keys() == before.keys()  # no temp file, resume state or report left behind
    assert after["ckpt/kernel.pt"] == before["ckpt/kernel.pt"] == trained.checkpoint.read_bytes()
    assert after == before
