"""The smoke-preset DVC repository the pipeline and flow tests share (reproduced once)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
TRAIN = "training/dvc.yaml:"  # how DVC names the training pipeline's stages


def stage_env(tmp: Path) -> dict:
    """The stages' environment: `ofa-cli` is tests/trace_cli.py, recording the params keys
    each command reads into tmp/../traces (see test_stages_declare_every_params_key_they_read)."""
    shim = tmp.parent / f"{tmp.name}-shim"
    if not (shim / "ofa-cli").is_file():
        shim.mkdir(exist_ok=True)
        (shim / "ofa-cli").write_text(f'#!/bin/sh\nexec "{sys.executable}" '
                                      f'"{ROOT / "tests" / "trace_cli.py"}" "$@"\n')
        (shim / "ofa-cli").chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{shim}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}",
               OFA_TRACE_DIR=str(tmp.parent / f"{tmp.name}-traces"), DVC_NO_ANALYTICS="1",
               DVC_SITE_CACHE_DIR=str(tmp.parent / f"{tmp.name}-site-cache"), OMP_NUM_THREADS="2",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    return env


def run(args: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline")
    (repo / "training").mkdir()
    for name in ("dvc.yaml", "params.yaml", "training/dvc.yaml"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / "ofa", repo / "ofa", ignore=shutil.ignore_patterns("__pycache__"))
    # the runs trained alone are kept in git and read by the report stage
    shutil.copytree(ROOT / "reports" / "scratch", repo / "reports" / "scratch")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["preset"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = stage_env(repo)
    run(["git", "init", "-q"], repo, env)
    run([str(BIN / "dvc"), "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "smoke"], repo, env)
    run([str(BIN / "dvc"), "repro"], repo, env)
    return repo


@pytest.fixture()
def repo_copy(smoke_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the reproduced smoke repository (git, DVC cache and outputs)."""
    copy = tmp_path / "repo"
    shutil.copytree(smoke_repo, copy, symlinks=True, ignore=shutil.ignore_patterns("dvc-site-cache"))
    return copy


def dag_edges(dot: str) -> list[tuple[str, str]]:
    """(from, to) stage pairs of a `dvc dag --dot` graph."""
    return [tuple(part.strip().strip('";') for part in line.split("->"))
            for line in dot.splitlines() if "->" in line]


def downstream(dot: str, stages: set[str]) -> set[str]:
    """`stages` and every stage after them in a `dvc dag --dot` graph: what `dvc repro` runs
    when they changed (`dvc repro --dry` cannot say: it hashes the new stages' missing deps)."""
    return _reach(dag_edges(dot), stages)


def upstream(dot: str, stage: str) -> set[str]:
    """Every stage `stage` depends on, directly or not, in a `dvc dag --dot` graph."""
    return _reach([(b, a) for a, b in dag_edges(dot)], {stage}) - {stage}


def _reach(edges: list[tuple[str, str]], start: set[str]) -> set[str]:
    out, grew = set(start), True
    while grew:
        more = {b for a, b in edges if a in out} - out
        out |= more
        grew = bool(more)
    return out


def ran_stages(out: str) -> set[str]:
    """The stages a `dvc repro` output says it ran."""
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
