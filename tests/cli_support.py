"""Running `ofa-cli` as a user does (a real subprocess) on tiny real training, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ofa.config import deep_merge, preset, read_yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("ofa-cli")
CLI = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ofa.cli"]
PHASES = ("teacher", "kernel", "depth1", "depth2", "expand1", "expand2")

# A few batches per phase: one phase trains in a few seconds on one thread.
TINY = {
    "data": {"subset": 256},
    "train": {"batch_size": 32, "eval_batch_size": 64, "eval_images": 64, "bn_calib_images": 64,
              "final_eval_images": 64, "threads": 1},
    "phases": {name: {"epochs": 1, "images_per_epoch": 64} for name in PHASES},
    "scratch": {"epochs": 1, "images_per_epoch": 64},
}


def params_dict(workdir: Path, overrides: dict | None = None) -> dict:
    """params.yaml + the smoke preset + TINY, writing checkpoints and reports inside workdir."""
    raw = deep_merge(read_yaml(ROOT / "params.yaml"), preset("smoke"))
    raw = deep_merge(raw, TINY)
    raw = deep_merge(raw, {"train": {"checkpoint_dir": str(workdir / "ckpt"),
                                     "report_dir": str(workdir / "reports")}})
    raw.pop("supernet")  # the trained one, wherever checkpoint_dir puts it
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


def train_teacher(workdir: Path, raw: dict | None = None) -> Trained:
    """The teacher phase trained for real through the CLI, inside workdir."""
    params = write_params(workdir, raw)
    proc = cli(["--params", str(params), "train", "--phase", "teacher", "--no-progress"], workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return Trained(workdir, params, proc)
