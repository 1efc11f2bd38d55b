"""The supernet's record (ofa/provenance.py): the training summary the training pipeline ends
with, an import's record, and the refusals of either (one line each)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ofa import paths
from ofa.config import Params, SupernetConfig, load_params
from ofa.errors import OFAError
from ofa.provenance import read_provenance, write_import_record, write_training_summary
from tests.conftest import ROOT

PHASES = ("teacher", "kernel", "depth1", "depth2", "expand1", "expand2")


def _params(tmp: Path, supernet: SupernetConfig = SupernetConfig()) -> Params:
    p = load_params(ROOT / "params.yaml")
    return replace(p, train=replace(p.train, report_dir=str(tmp / "reports/train"),
                                    checkpoint_dir=str(tmp / "ckpt")), supernet=supernet)


def _phase_report(params: Params, phase: str, seconds: float) -> None:
    path = paths.train_report(params, phase)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "phase": phase, "complete": True, "epochs": 2, "train_seconds": seconds,
        "val_acc_max": 0.9, "val_acc_min": None if phase == "teacher" else 0.85,
        "history": [{"epoch": e, "train_loss": 1.0 / e, "val_acc_max": 0.9} for e in (1, 2)]}))


def test_the_training_summary_is_the_supernets_record(tmp_path):
    params = _params(tmp_path)
    for i, phase in enumerate(PHASES):
        _phase_report(params, phase, 60.0 * (i + 1))
    out = write_training_summary(params)
    assert out == tmp_path / "reports/training.json" == paths.supernet_record(params)
    summary = json.loads(out.read_text())
    assert summary["train_minutes"] == 21.0 and list(summary["phases"]) == list(PHASES)
    assert "val_acc_min" not in summary["phases"]["teacher"]  # not measured: left out
    assert "| all | | 1260 (21.0 min) | |" in out.with_suffix(".md").read_text()
    assert paths.training_curves(params).stat().st_size > 0
    origin = read_provenance(params)
    assert origin.imported is None
    assert [r["phase"] for r in origin.reports] == list(PHASES)
    assert origin.reports[1] == {"phase": "kernel", "epochs": 2, "train_seconds": 120.0,
                                 "val_acc_max": 0.9, "val_acc_min": 0.85}


def test_a_summary_needs_every_phase(tmp_path):
    params = _params(tmp_path)
    for phase in PHASES[:-1]:
        _phase_report(params, phase, 1.0)
    with pytest.raises(OFAError, match="no training report of phase 'expand2'"):
        write_training_summary(params)
    assert not paths.training_summary(params).exists()


def test_an_import_record_names_where_the_supernet_came_from(tmp_path):
    ckpt = tmp_path / "imported/net.pt"
    ckpt.parent.mkdir()
    info = {"source": "theirs", "file": "/x/ofa_w10", "sha256": "ab" * 32, "width_mult": 1.0}
    record = write_import_record(ckpt, info)
    assert record == tmp_path / "imported/net.json"
    params = _params(tmp_path, SupernetConfig(str(ckpt), str(record)))
    assert paths.supernet(params) == ckpt
    origin = read_provenance(params)
    assert (origin.reports, origin.imported) == ([], info)


@pytest.mark.parametrize("content, needle", [
    (None, "does not exist: train the supernet (dvc repro) or import one"),
    ("{not json", "is unreadable"),
    ('{"phases": {}}', "is neither a training summary"),
    ('{"phases": {"teacher": {"epochs": 1, "train_seconds": NaN}}}', "is neither a training summary"),
    ('[1, 2]', "is neither a training summary"),
])
def test_a_bad_record_is_refused_in_one_line(tmp_path, content, needle):
    record = tmp_path / "rec.json"
    if content is not None:
        record.write_text(content)
    params = _params(tmp_path, SupernetConfig(str(tmp_path / "net.pt"), str(record)))
    with pytest.raises(OFAError, match="supernet.record") as exc:
        read_provenance(params)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_only_one_path_left_at_the_trained_supernet_is_refused(tmp_path):
    trained = _params(tmp_path)
    moved = SupernetConfig(str(paths.last_checkpoint(trained)), "reports/training.json")
    with pytest.raises(OFAError, match="supernet.record: the other path is the trained"):
        paths.supernet(_params(tmp_path, moved))
