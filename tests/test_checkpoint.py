"""Checkpoints: atomic writes, safe loading, clear refusals, and resuming a killed run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ofa.checkpoint import FORMAT, atomic_write, atomic_write_text, load_checkpoint, save_checkpoint
from ofa.config import load_params, to_dict
from ofa.errors import OFAError
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace
from ofa.train import build_optimizer
from tests.cli_support import CLI, ROOT, params_dict, write_params


@pytest.fixture(scope="module")
def space_dict() -> dict:
    return to_dict(load_params(ROOT / "params.yaml").space)


@pytest.fixture(scope="module")
def trained_state(space_dict: dict) -> tuple[dict, dict]:
    """A real supernet's weights and its SGD state after one step (momentum buffers included)."""
    params = load_params(ROOT / "params.yaml")
    space = SearchSpace(params.space)
    torch.manual_seed(0)
    net = OFAMobileNetV3(space)
    opt = build_optimizer(net, params, 0.1)
    cfg = space.max_config(24)
    net(torch.randn(4, 1, 24, 24), cfg).logsumexp(1).mean().backward()
    opt.step()
    return net.state_dict(), opt.state_dict()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- atomic writes ---------------------------------------------------------------------------
def test_atomic_write_replaces_and_leaves_no_temp_file(tmp_path: Path):
    target = tmp_path / "deep" / "er" / "out.txt"  # parents are created
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("existed", [True, False], ids=["old-file", "no-file"])
def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path, existed: bool):
    target = tmp_path / "model.pt"
    if existed:
        target.write_bytes(b"old bytes")

    def half_then_crash(tmp: Path) -> None:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.pt"] if existed else [])
    if existed:
        assert target.read_bytes() == b"old bytes"


def test_atomic_write_respects_the_umask(tmp_path: Path):
    """Checkpoints and reports get the mode any other new file gets (0644 under umask 022),
    not mkstemp's private 0600."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "report.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644, oct(mode)


# -- save / load round trip ------------------------------------------------------------------
def test_round_trip(tmp_path: Path, space_dict: dict, trained_state: tuple[dict, dict]):
    model, optimizer = trained_state
    meta = {"phase": "teacher", "epoch": 2, "space": space_dict, "complete": False,
            "history": [{"epoch": 1, "train_loss": 2.25, "val_acc_max": 0.5}], "init": None}
    path = tmp_path / "ckpt" / "teacher.pt"
    save_checkpoint(path, model, meta, optimizer)
    assert leftovers(path.parent) == []

    raw = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code needed
    assert raw["format"] == FORMAT and raw["meta"] == meta
    for payload in (raw, load_checkpoint(path, space_dict), load_checkpoint(path)):
        assert payload["model"].keys() == model.keys()
        for k, v in model.items():
            assert torch.equal(payload["model"][k], v), k
        assert payload["optimizer"]["param_groups"] == optimizer["param_groups"]
        assert payload["optimizer"]["state"].keys() == optimizer["state"].keys()
        for i, state in optimizer["state"].items():
            assert torch.equal(payload["optimizer"]["state"][i]["momentum_buffer"],
                               state["momentum_buffer"])

    save_checkpoint(path, model, meta)  # final checkpoints carry no optimizer state
    assert "optimizer" not in load_checkpoint(path, space_dict)


# -- refusals --------------------------------------------------------------------------------
class _Payload:
    """A pickle that would run code on load (it creates a marker file)."""

    marker: Path

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _good(path: Path, space: dict, model: dict) -> None:
    save_checkpoint(path, model, {"space": space})


def _cut(fraction: float):
    def make(path: Path, space: dict, model: dict) -> None:
        _good(path, space, model)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
    return make


def _random(path: Path, space: dict, model: dict) -> None:
    path.write_bytes(random.Random(0).randbytes(10_000))


def _empty(path: Path, space: dict, model: dict) -> None:
    path.write_bytes(b"")


def _foreign(path: Path, space: dict, model: dict) -> None:
    torch.save({"a": torch.ones(3)}, path)


def _a_list(path: Path, space: dict, model: dict) -> None:
    torch.save([torch.ones(3)], path)


def _other_space(path: Path, space: dict, model: dict) -> None:
    other = json.loads(json.dumps(space))
    other["stages"][0]["width"] = 32
    save_checkpoint(path, model, {"space": other})


def _other_resolutions(path: Path, space: dict, model: dict) -> None:
    save_checkpoint(path, model, {"space": {**space, "resolutions": [28]}})


def _directory(path: Path, space: dict, model: dict) -> None:
    path.mkdir()


def _code(path: Path, space: dict, model: dict) -> None:
    evil = _Payload()
    evil.marker = path.with_name("pwned")
    torch.save({"format": FORMAT, "meta": {"space": space}, "model": model, "x": evil}, path)


@pytest.mark.parametrize("make, needle", [
    (None, "does not exist"),
    (_directory, "does not exist"),
    (_empty, "truncated or not a torch file"),
    (_cut(0.5), "truncated or not a torch file"),
    (_cut(0.99), "truncated or not a torch file"),
    (_random, "truncated or not a torch file"),
    (_foreign, "not an OFA supernet checkpoint"),
    (_a_list, "not an OFA supernet checkpoint"),
    (_other_space, "different search space"),
    (_other_resolutions, "different search space"),
    (_code, "truncated or not a torch file"),
], ids=["missing", "directory", "empty", "half", "last-bytes-cut", "random", "foreign-dict",
        "a-list", "other-widths", "other-resolutions", "pickled-code"])
def test_load_refuses(tmp_path: Path, space_dict: dict, make, needle: str):
    path = tmp_path / "bad.pt"
    model = {"w": torch.arange(1000.0)}
    if make is not None:
        make(path, space_dict, model)
    with pytest.raises(OFAError) as info:
        load_checkpoint(path, space_dict)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message, message
    assert not (tmp_path / "pwned").exists()  # nothing in the file ran


# -- resume after a real kill ----------------------------------------------------------------
RESUME = {"data": {"subset": 512},
          "phases": {"teacher": {"epochs": 3, "images_per_epoch": 512, "warmup_epochs": 0.3}}}
TIMING_KEYS = {"seconds", "images_per_s", "eval_seconds"}


def _start(workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OFA_DEBUG", None)
    return subprocess.Popen([*CLI, "--params", "params.yaml", "train", "--phase", "teacher",
                             "--no-progress"], cwd=workdir, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    return out


def test_killed_run_resumes_to_the_same_result(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        write_params(d, params_dict(d, RESUME))
    resume, final = b / "ckpt" / ".resume" / "teacher.pt", b / "ckpt" / "teacher.pt"

    run_a = _start(a)  # uninterrupted, alongside b (one thread each)
    run_b = _start(b)
    deadline = time.monotonic() + 300
    try:
        while not resume.exists() and run_b.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run_b.send_signal(signal.SIGKILL)
        _, err = run_b.communicate(timeout=60)
        assert not final.exists(), (
            "the run finished before it could be killed: increase images_per_epoch in RESUME")
        assert resume.exists(), f"no resume checkpoint within 300 s:\n{err[-2000:]}"
        assert run_b.returncode == -signal.SIGKILL
        killed_at = load_checkpoint(resume)["meta"]["epoch"]
        assert 1 <= killed_at < 3

        out_b = _finish(_start(b))
        out_a = _finish(run_a)
    finally:
        for proc in (run_a, run_b):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert f"resuming phase teacher after epoch {killed_at}" in out_b
    assert "resuming" not in out_a
    assert not resume.exists()
    wa = load_checkpoint(a / "ckpt" / "teacher.pt")["model"]
    wb = load_checkpoint(final)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")

    report_a, report_b = (json.loads((d / "reports" / "teacher.json").read_text()) for d in (a, b))
    assert report_b["complete"] and report_b["epochs"] == 3
    assert [h["epoch"] for h in report_b["history"]] == [1, 2, 3]
    for ha, hb in zip(report_a["history"], report_b["history"], strict=True):  # same numbers
        assert {k: v for k, v in hb.items() if k not in TIMING_KEYS} == \
               {k: v for k, v in ha.items() if k not in TIMING_KEYS}


def test_safetensors_bytes_are_the_same_in_every_process(tmp_path: Path):
    """safetensors orders its header by hash, per process; ours is sorted, so the same
    weights give the same file (DVC does not rerun what follows) and it loads back."""
    import sys

    from safetensors.torch import load

    code = ("import sys, torch; from ofa.checkpoint import safetensors_bytes; "
            "g = torch.Generator().manual_seed(0); "
            "s = {n: torch.randn(3, 5, generator=g) for n in 'qwertyuiopasdfgh'}; "
            "m = {k: k * 3 for k in 'zyxwvutsrqponm'}; "
            "sys.stdout.buffer.write(safetensors_bytes(s, m))")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                           capture_output=True).stdout for _ in range(4)}
    assert len(outs) == 1
    data = outs.pop()
    assert int.from_bytes(data[:8], "little") % 8 == 0
    g = torch.Generator().manual_seed(0)
    want = {n: torch.randn(3, 5, generator=g) for n in "qwertyuiopasdfgh"}
    got = load(data)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {k: k * 3 for k in "zyxwvutsrqponm"}
