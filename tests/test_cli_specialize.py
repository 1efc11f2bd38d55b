"""The specialization commands' bad inputs: one `error:` line, non-zero exit, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ofa.config import read_yaml
from tests.conftest import ROOT

SCRIPT = Path(sys.executable).with_name("ofa-cli")
CLI = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ofa.cli"]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OFA_DEBUG"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _params(tmp: Path, devices: dict | None = None) -> None:
    raw = read_yaml(ROOT / "params.yaml")
    if devices is not None:
        raw["devices"] = devices
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.mark.parametrize("args,message", [
    (["latency", "--device", "phone"], "unknown device 'phone'"),
    (["search", "--device", "phone"], "unknown device 'phone'"),
    (["export", "--device", "phone"], "unknown device 'phone'"),
    (["search", "--device", "cpu1-b1"], "does not exist"),          # no predictor yet
    (["export", "--device", "cpu1-b1"], "does not exist"),          # no search result yet
    (["fit-predictor"], "does not exist"),                         # no accuracy dataset yet
    (["acc-dataset"], "does not exist"),                           # no supernet checkpoint yet
    (["report"], "no device has exported subnets"),
])
def test_missing_inputs(tmp_path, args, message):
    _params(tmp_path)
    before = _files(tmp_path)
    proc = _cli(args, tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert _files(tmp_path) == before


@pytest.mark.parametrize("entry,message", [
    ({"backend": "tflite"}, "devices.bad.backend"),
    ({"backend": "torch", "threads": 0}, "devices.bad.threads"),
    ({"backend": "torch", "latency_ms": [-1.0]}, "devices.bad.latency_ms"),
    ({"backend": "torch", "colour": "red"}, "devices.bad.colour: unknown key"),
    ({"threads": 1}, "devices.bad.backend: missing key"),
])
def test_malformed_device_entries(tmp_path, entry, message):
    _params(tmp_path, {"bad": entry})
    proc = _cli(["latency", "--device", "bad"], tmp_path)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, start", [
    (["latency", "--device", "phone"], "error: unknown"),
    (["search", "--device", "phone"], "error: unknown"),
    (["export", "--device", "phone"], "error: unknown"),
    (["train", "--phase", "nope"], "error: unknown"),
    (["evaluate", "--phase", "nope"], "error: unknown"),
    (["evaluate", "--config", "r30-d4444-k" + "7" * 16 + "-e" + "6" * 16],
     "error: resolution 30 is outside the space"),
])
def test_a_misspelled_name_is_refused_before_torch_loads(tmp_path, args, start):
    """The name (or subnet config) is checked against params before the seconds of torch
    imports."""
    _params(tmp_path)
    code = ("import atexit, sys; atexit.register(lambda: print('torch' in sys.modules)); "
            f"import ofa.cli; sys.argv = ['ofa-cli', *{args!r}]; ofa.cli.main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(start), proc.stderr
    assert proc.stdout.strip() == "False"
