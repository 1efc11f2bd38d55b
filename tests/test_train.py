"""Training: checkpoints, sampling, and the loss pieces (resume after a kill: test_checkpoint)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from conftest import tiny_params
from ofa.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from ofa.config import load_params
from ofa.errors import OFAError
from ofa.sampling import step_configs
from ofa.train import lr_at, soft_cross_entropy


def test_changed_params_do_not_resume(tmp_path: Path):
    tiny_params(tmp_path, teacher={"epochs": 1})
    from ofa.train import train_phase

    params = load_params(tmp_path / "params.yaml")
    first = train_phase(params, "teacher", show_progress=False)
    save_checkpoint(tmp_path / "ckpt" / ".resume" / "teacher.pt", first.model.state_dict(),
                    {"space": load_checkpoint(first.checkpoint)["meta"]["space"], "fingerprint": "x",
                     "epoch": 1, "history": []})
    again = train_phase(params, "teacher", show_progress=False)
    assert len(again.history) == 1  # started afresh instead of resuming a foreign state


def test_checkpoint_round_trip_and_refusals(tmp_path: Path, params):
    from ofa.config import to_dict

    path = tmp_path / "c.pt"
    space = to_dict(params.space)
    save_checkpoint(path, {"w": torch.ones(3)}, {"space": space, "epoch": 2})
    payload = torch.load(path, weights_only=True)
    assert payload["meta"]["epoch"] == 2
    assert torch.equal(load_checkpoint(path, space)["model"]["w"], torch.ones(3))
    other = {**space, "num_classes": 3}
    with pytest.raises(OFAError, match="different search space"):
        load_checkpoint(path, other)
    with pytest.raises(OFAError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def boom(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("phase", ["depth1", "expand2"])
def test_step_configs(space, params, phase):
    ph = params.phase(phase)
    ch = space.phase_choices(ph)
    plain = step_configs(space, random.Random(0), ch, 24, 4, sandwich=False)
    sand_rng = random.Random(0)
    sand = step_configs(space, sand_rng, ch, 24, 4, sandwich=True)
    assert sand[0] == space.largest(ch, 24) and sand[1] == space.smallest(ch, 24)
    assert sand[2:] == plain[2:]
    for cfg in plain:
        assert set(cfg.ks) <= set(ph.kernel) and set(cfg.e) <= set(ph.expand) and cfg.r == 24


def test_schedule_and_losses():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(99, 100, 10, 1.0) < 0.01
    # a phase ending where the next one starts: the cosine lands on lr_end, never below it
    ends = [lr_at(s, 100, 10, 1.0, 0.4) for s in range(100)]
    assert ends[10] == pytest.approx(1.0) and ends[-1] == pytest.approx(0.4, abs=1e-3)
    assert min(ends[10:]) >= 0.4 and ends[10:] == sorted(ends[10:], reverse=True)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    target = torch.softmax(logits, 1)
    entropy = -(target * target.log()).sum(1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, target), entropy)
    assert soft_cross_entropy(logits, target.flip(1)) > entropy
