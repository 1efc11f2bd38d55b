"""Hostile input, class by class (issue 17): names that become paths, numbers that are not
finite or out of range, YAML that repeats a key, training that diverges, runs that were killed
or run twice. Each is refused in one line naming the problem, and nothing written before is
damaged. Subnet configs: test_space.py; latency tables: test_latency.py."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_params
from ofa import paths
from ofa.config import Params, deep_merge, load_params, read_yaml
from ofa.errors import OFAError, Range
from ofa.locks import exclusive
from ofa.publish import STAGING, atomic_write, publish_files, staging_dir
from tests.cli_support import assert_clean_error, cli

ROOT = Path(__file__).resolve().parents[1]

HOSTILE_NAMES = ["../../../../elsewhere/x", "a/b", "", ".hidden", "..", ".", "a\\b", "a b",
                 "a\x00b", "x" * 65, "-rf", "~root", "$HOME", "ü", "a:b", "*", "con\n"]


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _base() -> dict:
    return read_yaml(ROOT / "params.yaml")


# -- names that become paths -------------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE_NAMES)
@pytest.mark.parametrize("section", ["devices", "phases", "preset"])
def test_unsafe_names_are_refused(tmp_path: Path, section: str, name: str):
    raw = _base()
    if section == "devices":
        raw["devices"][name] = {"backend": "torch"}
        raw["constraints"][name] = {"flops_m": [5.0]}
    elif section == "phases":
        raw["phases"][name] = dict(raw["phases"]["kernel"])
    else:
        raw["preset"] = name
    with pytest.raises(OFAError, match="safe") as exc:
        load_params(_write(tmp_path, raw))
    assert "\n" not in str(exc.value).strip()


@pytest.mark.parametrize("name", ["../../x", "a/b", "", ".hidden"])
def test_unsafe_preset_argument_is_refused(name: str):
    with pytest.raises(OFAError, match="not a safe file name"):
        load_params(ROOT / "params.yaml", preset_name=name)


@pytest.mark.parametrize("name", ["cpu1-b1", "ort1-b1", "Pixel_7.fp16", "a" * 64])
def test_safe_names_stay_accepted(tmp_path: Path, name: str):
    raw = _base()
    raw["devices"][name] = {"backend": "torch"}
    raw["constraints"][name] = {"flops_m": [5.0]}
    params = load_params(_write(tmp_path, raw))
    assert paths.latency_table(params, name).name == f"{name}.parquet"


def test_a_path_that_resolves_outside_its_folder_is_refused(tmp_path: Path, params: Params):
    tables = tmp_path / "lat"
    tables.mkdir()
    (tables / "evil.parquet").symlink_to(tmp_path / "elsewhere.parquet")
    moved = dataclasses.replace(params, latency=dataclasses.replace(params.latency,
                                                                    table_dir=str(tables)))
    with pytest.raises(OFAError, match="resolves outside"):
        paths.latency_table(moved, "evil")
    assert paths.latency_table(moved, "good") == tables / "good.parquet"


# -- numbers -----------------------------------------------------------------------------------
BAD_NUMBERS = [
    ("phases.teacher.lr", [math.inf, 1e300, 11.0, 0.0, -0.1, math.nan]),
    ("phases.kernel.kd_ratio", [math.inf, 1e3, -1.0, math.nan]),
    ("phases.kernel.warmup_epochs", [math.inf, 3.0, -0.5]),   # kernel trains 2 epochs
    ("phases.kernel.lr_end", [math.inf, math.nan, -0.01, 0.2]),  # above kernel's lr 0.0985
    ("train.weight_decay", [math.inf, 2.0, -1e-4, math.nan]),
    ("train.momentum", [math.inf, 1.0, -0.1]),
    ("train.label_smoothing", [1.0, math.inf, -0.1]),
    ("space.bn_eps", [math.inf, 0.0, 2.0, math.nan]),
    ("space.bn_momentum", [math.inf, 0.0, 1.5]),
    ("space.dropout", [1.0, math.nan, -0.1]),
    ("predictor.lr", [math.inf, 0.0, 100.0]),
    ("predictor.weight_decay", [math.inf, 5.0]),
    ("latency.min_seconds", [math.inf, -1.0, 1e9]),
    ("latency.check_sessions", [0, 11, -1]),
    ("search.mutation_prob", [math.nan, 1.5]),
    ("search.parent_ratio", [math.inf, 0.0, 1.0]),
]
BAD_LISTS = [
    ("constraints.cpu1-b1.latency_ms", [[math.inf], [math.nan], [0.0], [1e300], [5.0, -1.0]]),
    ("constraints.cpu1-b1.latency_frac", [[1.5], [math.inf], [0.0]]),
    ("constraints.cpu1-b1.flops_m", [[math.inf], [-3.0], [1e12]]),
    ("predictor.split", [[math.nan, 0.5, 0.5], [math.inf, 0.5, 0.5], [1.0, 0.0, 0.0]]),
]


def _set(raw: dict, dotted: str, value) -> dict:
    *head, last = dotted.split(".")
    node = raw
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


@pytest.mark.parametrize("key,value", [(k, v) for k, vs in BAD_NUMBERS + BAD_LISTS for v in vs])
def test_non_finite_and_out_of_range_numbers_are_refused(tmp_path: Path, key: str, value):
    path = _write(tmp_path, _set(_base(), key, value))  # YAML's .inf / .nan
    with pytest.raises(OFAError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert key.split(".")[-1] in msg, msg
    assert "finite" in msg or "must be in [" in msg or "must be in (" in msg, msg


def _float_fields(tp, seen: set) -> list[str]:
    out = []
    if tp in seen or not dataclasses.is_dataclass(tp):
        return out
    seen.add(tp)
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        hint = hints[f.name]
        inner = [hint, *typing.get_args(hint)]
        for sub in inner:
            for deeper in [sub, *typing.get_args(sub)]:
                out += [f"{tp.__name__}.{f.name}.{x}" for x in _float_fields(deeper, seen)]
        if float in inner and not isinstance(f.metadata.get("range"), Range):
            out.append(f"{tp.__name__}.{f.name}")
    return out


def test_every_float_param_declares_its_range():
    assert _float_fields(Params, set()) == []


def test_the_defaults_and_presets_stay_valid():
    for preset in (None, "smoke", "default"):
        load_params(ROOT / "params.yaml", preset_name=preset)


# -- YAML that repeats a key -------------------------------------------------------------------
@pytest.mark.parametrize("where", ["train", "top", "phase", "device"])
def test_duplicate_yaml_keys_are_refused_naming_key_and_line(tmp_path: Path, where: str):
    text = (ROOT / "params.yaml").read_text()
    anchor, dup = {
        "train": ("  batch_size: 128\n", "  batch_size: 128\n  batch_size: 64\n"),
        "top": ("preset: default", "preset: default\npreset: smoke"),
        "phase": ("epochs: 13, lr: 0.1,", "epochs: 13, lr: 0.1, lr: 0.2,"),
        "device": ("  ort1-b1: {backend", "  cpu1-b1: {backend: torch}\n  ort1-b1: {backend"),
    }[where]
    assert anchor in text
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(anchor, dup, 1))
    with pytest.raises(OFAError, match=r"duplicate key '\S+' at line \d+ \(first at line \d+\)"):
        load_params(path)


# -- training that diverges --------------------------------------------------------------------
def test_training_that_diverges_stops_keeping_the_last_resume_point(tmp_path: Path, monkeypatch):
    from ofa import train as train_mod

    tiny_params(tmp_path, teacher={"epochs": 2})
    params = load_params(tmp_path / "params.yaml")
    steps = train_mod.epoch_steps(params.phase("teacher"), 512 - 0, params.train.batch_size)
    real, calls = train_mod.to_input, []

    def poisoned(x, *args):  # the second epoch's images become NaN
        calls.append(1)
        out = real(x, *args)
        return out * math.nan if len(calls) > steps else out

    monkeypatch.setattr(train_mod, "to_input", poisoned)
    with pytest.raises(OFAError, match=r"phase teacher: training diverged \(loss nan\) at epoch 2, "
                                       r"step 1 of \d+, subnet r\d+-.*resume point after epoch 1"):
        train_mod.train_phase(params, "teacher", show_progress=False)
    assert not paths.checkpoint(params, "teacher").exists()
    resume = torch.load(paths.resume_state(params, "teacher"), weights_only=True)
    assert resume["meta"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in resume["model"].values() if t.is_floating_point())
    monkeypatch.setattr(train_mod, "to_input", real)
    done = train_mod.train_phase(params, "teacher", show_progress=False)
    assert [h["epoch"] for h in done.history] == [1, 2]


def test_diverging_first_epoch_writes_nothing(tmp_path: Path, monkeypatch):
    from ofa import train as train_mod

    tiny_params(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    real = train_mod.to_input
    monkeypatch.setattr(train_mod, "to_input", lambda x, *a: real(x, *a) * math.inf)
    with pytest.raises(OFAError, match="epoch 1, step 1 .*nothing was written"):
        train_mod.train_phase(params, "teacher", show_progress=False)
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.pt"))


def test_predictor_fit_that_diverges_stops():
    import numpy as np

    from ofa.config_specialize import PredictorConfig
    from ofa.predictor.model import fit_mlp

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 8)), rng.random(40)
    y[3] = np.nan
    with pytest.raises(OFAError, match="predictor's fit diverged .* epoch 1"):
        fit_mlp(x, y, x[:5], y[:5] * 0, PredictorConfig(epochs=3), seed=0)


# -- resume points that no longer fit ----------------------------------------------------------
def test_a_resume_point_of_another_space_is_discarded_in_one_line(tmp_path: Path, capsys):
    from ofa.checkpoint import save_checkpoint
    from ofa.config import to_dict
    from ofa.train import train_phase

    tiny_params(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    other = to_dict(params.space) | {"num_classes": 7}
    save_checkpoint(paths.resume_state(params, "teacher"), {"w": torch.ones(2)},
                    {"space": other, "fingerprint": "old", "epoch": 1, "history": []})
    result = train_phase(params, "teacher", show_progress=False)
    out = capsys.readouterr().out
    assert "discarded the resume point" in out and "starting phase teacher afresh" in out
    assert [h["epoch"] for h in result.history] == [1]


# -- two runs of one phase ---------------------------------------------------------------------
def test_a_second_training_of_the_same_phase_is_refused(tmp_path: Path):
    params_path = tiny_params(tmp_path)
    params = load_params(params_path)
    with exclusive(paths.phase_lock(params, "teacher"), "training of phase teacher"):
        proc = cli(["--params", str(params_path), "train", "--phase", "teacher", "--no-progress"],
                   tmp_path)
    assert proc.returncode == 2
    assert_clean_error(proc, "training of phase teacher is already running in process "
                       f"{os.getpid()}")
    assert not paths.checkpoint(params, "teacher").exists()


def test_the_lock_dies_with_its_holder(tmp_path: Path):
    lock = tmp_path / "x.lock"
    code = ("import os, sys; from ofa.locks import exclusive\n"
            f"with exclusive({str(lock)!r}, 'x'): os._exit(0)\n")  # killed while holding it
    subprocess.run([sys.executable, "-c", code], check=True)
    with exclusive(lock, "x"):
        assert lock.read_text() == str(os.getpid())
    assert not lock.exists()


# -- steps that write several files ------------------------------------------------------------
def test_publish_files_replaces_all_or_none(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    a.write_text("old a")
    b.parent.mkdir()
    b.write_text("old b")

    def boom(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        publish_files({a: lambda p: p.write_text("new a"), b: boom})
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]
    (tmp_path / "dir.json").mkdir()  # a rename that would fail: refused before any rename
    with pytest.raises(IsADirectoryError):
        publish_files({a: lambda p: p.write_text("new a"),
                       tmp_path / "dir.json": lambda p: p.write_text("{}")})
    assert a.read_text() == "old a"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_runs_are_cleaned_by_the_next_write(tmp_path: Path):
    target = tmp_path / "teacher.pt"
    dead = tmp_path / f".teacher.pt.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".teacher.pt.{os.getppid()}.def456.tmp"   # a live writer's: kept
    other = tmp_path / f".kernel.pt.{_dead_pid()}.abc123.tmp"     # another output's: its turn
    for p in (dead, live, other):
        p.write_text("partial")
    atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"
    assert not dead.exists() and live.exists() and other.exists()


def test_staging_folders_lie_outside_the_outputs_and_are_cleaned(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = Path("models") / "cpu1-b1"
    stale = tmp_path / STAGING / f"cpu1-b1.{_dead_pid()}.x1y2z3"
    stale.mkdir(parents=True)
    staged = staging_dir(folder)
    assert staged.parent == tmp_path / STAGING and not stale.exists()
    assert not Path("models").exists() or list(Path("models").iterdir()) == []


def test_evaluate_refuses_a_corrupt_training_report_before_evaluating(tmp_path: Path):
    from ofa.evaluation_report import run_evaluate

    tiny_params(tmp_path)
    params = load_params(tmp_path / "params.yaml")
    report = paths.train_report(params, "teacher")
    report.parent.mkdir(parents=True)
    report.write_text('{"phase": "teacher", "history": [')
    out = tmp_path / "evaluate.json"
    out.write_text("old")
    with pytest.raises(OFAError, match="training report .*teacher.json is unreadable"):
        run_evaluate(params, tmp_path / "absent.pt", [], ("val",), out, False, "teacher")
    assert out.read_text() == "old" and not out.with_suffix(".md").exists()


def test_an_unwritable_output_is_one_error_line(tmp_path: Path):
    """A system error (here: a file where the reports folder should be) is an `error:` line
    with exit 2, as every other input error, and the phase leaves no checkpoint."""
    params_path = tiny_params(tmp_path)
    raw = read_yaml(params_path)
    (tmp_path / "blocker").write_text("a file, not a folder")
    raw["train"]["report_dir"] = str(tmp_path / "blocker" / "reports")
    _write(tmp_path, raw)
    proc = cli(["--params", str(params_path), "train", "--phase", "teacher", "--no-progress"],
               tmp_path)
    assert proc.returncode == 2
    assert_clean_error(proc, "blocker")
    assert not (tmp_path / "ckpt" / "teacher.pt").exists()
