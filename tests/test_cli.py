"""The CLI: happy path, and every bad input gets one clear line and a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_params


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OFA_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ofa.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A directory with tiny params and a trained teacher checkpoint."""
    tmp = tmp_path_factory.mktemp("cli")
    tiny_params(tmp)
    proc = cli(["--params", "params.yaml", "train", "--phase", "teacher", "--no-progress"], tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp


def test_help_is_fast():
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ofa.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "train" in proc.stdout
    assert time.perf_counter() - start < 5


def test_train_and_evaluate(trained: Path):
    assert (trained / "ckpt" / "teacher.pt").is_file()
    report = json.loads((trained / "reports" / "teacher.json").read_text())
    assert report["complete"] and report["history"][0]["images_per_s"] > 0
    assert (trained / "reports" / "teacher.csv").read_text().startswith("epoch,")
    proc = cli(["--params", "params.yaml", "evaluate", "--checkpoint", "ckpt/teacher.pt",
                "--splits", "val", "--output", "out/eval.json"], trained)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((trained / "out/eval.json").read_text())["rows"]
    n_res = len(yaml.safe_load((trained / "params.yaml").read_text())["space"]["resolutions"])
    assert len(rows) == 3 * n_res and {r["name"] for r in rows} == {"min", "mid", "max"}
    assert "| subnet |" in (trained / "out/eval.md").read_text()


@pytest.mark.parametrize("config, needle", [
    ("r28-d4444-k" + "9" * 16 + "-e" + "6" * 16, "kernel size 9"),
    ("r28-d5444-k" + "7" * 16 + "-e" + "6" * 16, "depth 5"),
    ("r30-d4444-k" + "7" * 16 + "-e" + "6" * 16, "resolution 30"),
    ("not-a-config", "cannot parse"),
])
def test_config_outside_the_space(trained: Path, config: str, needle: str):
    proc = cli(["--params", "params.yaml", "evaluate", "--checkpoint", "ckpt/teacher.pt",
                "--config", config], trained)
    assert_clean_error(proc, needle)


def _edit(src: Path, dst: Path, edit) -> Path:
    raw = yaml.safe_load(src.read_text())
    edit(raw)
    dst.write_text(yaml.safe_dump(raw))
    return dst


@pytest.mark.parametrize("name, edit, needle", [
    ("missing", lambda r: r["space"].pop("stages"), "space.stages: missing key"),
    ("misspelled", lambda r: r["phases"]["teacher"].update(epoch=r["phases"]["teacher"].pop("epochs")),
     "phases.teacher.epoch: unknown key"),
    ("range", lambda r: r["phases"]["teacher"].update(lr=-1), "phases.teacher.lr"),
])
def test_bad_params(trained: Path, tmp_path: Path, name, edit, needle):
    bad = _edit(trained / "params.yaml", tmp_path / f"{name}.yaml", edit)
    assert_clean_error(cli(["--params", str(bad), "train", "--phase", "teacher"], trained), needle)


def test_bad_params_files(tmp_path: Path):
    assert_clean_error(cli(["--params", "nope.yaml", "train", "--phase", "teacher"], tmp_path),
                       "nope.yaml does not exist")
    (tmp_path / "broken.yaml").write_text("space: [\n")
    assert_clean_error(cli(["--params", "broken.yaml", "train", "--phase", "teacher"], tmp_path),
                       "not valid YAML")


def test_unknown_phase(trained: Path):
    assert_clean_error(cli(["--params", "params.yaml", "train", "--phase", "nope"], trained),
                       "unknown phase 'nope'")


def test_missing_start_checkpoint(tmp_path: Path):
    tiny_params(tmp_path)
    assert_clean_error(cli(["--params", "params.yaml", "train", "--phase", "kernel"], tmp_path),
                       "teacher.pt", "does not exist yet")


@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign", "random"])
def test_bad_checkpoints(trained: Path, tmp_path: Path, kind: str):
    path = tmp_path / "bad.pt"
    good = (trained / "ckpt" / "teacher.pt").read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "foreign":
        torch.save({"a": torch.zeros(2)}, path)
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    needle = {"missing": "does not exist", "truncated": "truncated", "foreign": "not an OFA",
              "random": "truncated"}[kind]
    proc = cli(["--params", "params.yaml", "evaluate", "--checkpoint", str(path)], trained)
    assert_clean_error(proc, needle)


def test_checkpoint_from_another_space(trained: Path, tmp_path: Path):
    other = _edit(trained / "params.yaml", tmp_path / "other.yaml",
                  lambda r: r["space"]["stages"][0].update(width=32))
    proc = cli(["--params", str(other), "evaluate", "--checkpoint", "ckpt/teacher.pt"], trained)
    assert_clean_error(proc, "different search space")


def test_failure_damages_nothing(trained: Path, tmp_path: Path):
    shutil.copytree(trained / "ckpt", tmp_path / "ckpt")
    kernel = tmp_path / "ckpt" / "kernel.pt"
    shutil.copy(tmp_path / "ckpt" / "teacher.pt", kernel)
    before = kernel.read_bytes()
    bad = _edit(trained / "params.yaml", tmp_path / "params.yaml", lambda r: (
        r["train"].update(checkpoint_dir=str(tmp_path / "ckpt")),
        r["phases"]["kernel"].update(kernel=[9])))
    assert_clean_error(cli(["--params", str(bad), "train", "--phase", "kernel"], tmp_path),
                       "phases.kernel.kernel")
    assert kernel.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.pt")) == ["kernel.pt", "teacher.pt"]
