"""`ofa-cli` with missing, truncated, foreign or mismatched checkpoints, and failures mid-way:
one `error:` line, a non-zero exit, and nothing already written damaged."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from ofa.checkpoint import FORMAT, save_checkpoint
from tests.cli_support import (Trained, assert_clean_error, cli, params_dict, snapshot,
                               train_teacher, write_params)


@pytest.fixture(scope="module")
def other_space_checkpoint(tmp_path_factory) -> Path:
    """A teacher trained on a different space (first stage 32 channels wide instead of 24)."""
    tmp = tmp_path_factory.mktemp("other-space")
    raw = params_dict(tmp)
    raw["space"]["stages"][0]["width"] = 32
    return train_teacher(tmp, raw).checkpoint


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
    (_kernel_lr, "phases.kernel.lr: must be in (0, 10], got -1"),
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
