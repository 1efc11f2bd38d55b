"""`ofa-cli` as a user runs it (a real subprocess, real training on a few batches).

Every bad input must end with a non-zero exit, exactly one stderr line `error: ...` naming the
problem, no traceback, and no file written or changed. Bad checkpoints: test_cli_checkpoints.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import pytest
import yaml

from ofa.config import load_params
from ofa.space import SearchSpace
from tests.cli_support import Trained, assert_clean_error, cli, params_dict, snapshot, write_params


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
    (_negative_lr, "phases.teacher.lr: must be in (0, 10], got -0.1"),
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
