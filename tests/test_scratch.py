"""`ofa-cli train-scratch`: one subnet trained alone by the one training loop (the from-scratch
baseline of issue 18), through the CLI as a user runs it, on tiny real training."""

from __future__ import annotations

import dataclasses

import json
import signal
import subprocess
import time
from pathlib import Path

import torch

from ofa.checkpoint import load_checkpoint
from ofa.config import load_params
from ofa.space import SearchSpace
from ofa.paths import export_record
from tests.cli_support import CLI, assert_clean_error, cli, params_dict, write_params

RESUME = {"data": {"subset": 512}, "train": {"processes": 1},
          "scratch": {"epochs": 3, "images_per_epoch": 512, "warmup_epochs": 0.3}}


def _min_config(path: Path) -> str:
    return str(SearchSpace(load_params(path).space).min_config(24))


def test_a_subnet_trains_alone_in_two_workers_and_reports_its_cost(tmp_path: Path):
    path = write_params(tmp_path, params_dict(tmp_path, {"train": {"processes": 2}}))
    cfg = _min_config(path)
    proc = cli(["--params", str(path), "train-scratch", "--config", cfg, "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    name = f"scratch-{cfg}"
    ckpt = load_checkpoint(tmp_path / "ckpt" / f"{name}.pt")
    assert ckpt["meta"]["complete"] and ckpt["meta"]["world"] == 2
    assert ckpt["meta"]["phase_config"]["fixed"] == cfg
    assert ckpt["meta"]["phase_config"]["init_from"] is None  # random initialisation
    report = json.loads((tmp_path / "scratch" / f"{name}.json").read_text())
    assert report["config"] == cfg and not report["distilled"]
    assert 0.0 <= report["test_acc"] <= 1.0 and report["train_seconds"] > 0
    assert report["images_seen"] == 64  # params scratch's budget here: 64 images, batch 32
    # the data it was trained and measured on, so the report never sets it beside a supernet
    # trained on other data (augmented, another split)
    params = load_params(path)
    assert report["data"] == params.data.fingerprint()
    assert dataclasses.replace(params.data, augment=True).fingerprint() != report["data"]
    assert dataclasses.replace(params.data, root="/elsewhere", workers=0).fingerprint() == report["data"]
    history = json.loads((tmp_path / "reports" / f"{name}.json").read_text())["history"]
    assert [set(h) >= {"val_acc_max"} and "val_acc_min" not in h for h in history] == [True]


def test_distillation_needs_the_teacher(tmp_path: Path):
    path = write_params(tmp_path, params_dict(tmp_path, {"train": {"processes": 1}}))
    proc = cli(["--params", str(path), "train-scratch", "--config", _min_config(path),
                "--distill", "--no-progress"], tmp_path)
    assert proc.returncode != 0 and "ofa-cli train --phase teacher" in proc.stderr, proc.stderr


def test_a_devices_shipped_subnets_train_alone_in_turn(tmp_path: Path):
    """`--device D`: every architecture D's export shipped, each with its own report; exactly
    one of --config and --device, and a device without an export is one error line."""
    path = write_params(tmp_path, params_dict(tmp_path, {"train": {"processes": 1}}))
    params = load_params(path)
    space = SearchSpace(params.space)
    shipped = [str(space.min_config(24)), str(space.min_config(20))]
    record = tmp_path / export_record(params, "cpu1-b1")   # relative to the project folder
    for args, needle in (([], "exactly one of --config and --device"),
                         (["--config", shipped[0], "--device", "cpu1-b1"], "exactly one of"),
                         (["--device", "cpu1-b1"], "export record models/cpu1-b1/export.json does not exist")):
        assert_clean_error(cli(["--params", str(path), "train-scratch", *args], tmp_path), needle)
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"device": "cpu1-b1", "chosen": [{"config": c} for c in shipped]}))
    proc = cli(["--params", str(path), "train-scratch", "--device", "cpu1-b1", "--no-progress"],
               tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for cfg in shipped:
        assert json.loads((tmp_path / "scratch" / f"scratch-{cfg}.json").read_text())["config"] == cfg


def _start(workdir: Path, cfg: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--params", "params.yaml", "train-scratch", "--config", cfg,
                             "--no-progress"], cwd=workdir, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_killed_scratch_run_resumes_to_the_same_weights(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        write_params(d, params_dict(d, RESUME))
    cfg = _min_config(a / "params.yaml")
    name = f"scratch-{cfg}"
    resume, final = b / "ckpt" / ".resume" / f"{name}.pt", b / "ckpt" / f"{name}.pt"
    run_b = _start(b, cfg)
    deadline = time.monotonic() + 300
    while not resume.exists() and run_b.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run_b.send_signal(signal.SIGKILL)
    run_b.communicate(timeout=60)
    assert resume.exists() and not final.exists(), "not killed mid-run"
    killed_at = load_checkpoint(resume)["meta"]["epoch"]
    outs = {}
    for d in (b, a):  # b resumes; a runs uninterrupted
        proc = _start(d, cfg)
        outs[d], err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert f"resuming phase {name} after epoch {killed_at}" in outs[b]
    assert "resuming" not in outs[a]
    wa = load_checkpoint(a / "ckpt" / f"{name}.pt")["model"]
    wb = load_checkpoint(final)["model"]
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_the_scratch_recipe_is_its_own_key_not_the_teachers(tmp_path: Path):
    """A preset that shortens the teacher phase leaves the baseline's recipe as it was."""
    from ofa.scratch import with_scratch_phase

    raw = params_dict(tmp_path, {"phases": {"teacher": {"epochs": 2, "lr": 0.05, "lr_end": 0.04}},
                                 "scratch": {"epochs": 5, "lr": 0.2, "warmup_epochs": 0.5,
                                             "images_per_epoch": 96}})
    params = load_params(write_params(tmp_path, raw))
    cfg = SearchSpace(params.space).min_config(24)
    tuned, name = with_scratch_phase(params, cfg, False)
    ph = tuned.phase(name)
    assert (ph.epochs, ph.lr, ph.warmup_epochs, ph.images_per_epoch) == (5, 0.2, 0.5, 96)
    assert ph.lr_end == 0.0   # a teacher handing its lr on to the next phase: not the baseline
    assert ph.fixed == str(cfg) and ph.init_from is None and not ph.elastic_resolution
    assert tuned.phase("teacher").epochs == 2   # the teacher itself is unchanged
