"""Where the supernet comes from (params `supernet`): with an imported one, `dvc repro` runs no
training stage, only the supernet's evaluation and the specialization (issue 20)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from tests.pipeline_support import (DVC, ROOT, TRAIN, downstream, ran_stages, run, stage_env,
                                    upstream)


def test_the_trained_supernet_pulls_training_in():
    """On the defaults the report stands on the whole training pipeline."""
    dot = run([DVC, "dag", "--dot"], ROOT, dict(os.environ))
    above = upstream(dot, "report")
    assert {f"{TRAIN}teacher", f"{TRAIN}shrink@expand2", f"{TRAIN}train-report",
            f"{TRAIN}validate-data", "evaluate"} <= above, above


@pytest.mark.slow
def test_an_imported_supernet_is_specialized_without_training(repo_copy: Path):
    """A user who never trained: the supernet is a file with an import record, the training
    outputs are gone. The DAG then has no training stage above the report; `dvc repro` would
    run the evaluation and every specialization stage that reads the supernet and none that
    trains; the evaluation, run for real, says where the supernet came from."""
    from ofa.provenance import write_import_record

    env = stage_env(repo_copy)
    imported = repo_copy / "data/imported/supernet.pt"
    imported.parent.mkdir(parents=True)
    shutil.copy(repo_copy / "data/checkpoints/expand2.pt", imported)
    record = write_import_record(imported, {"source": "a supernet trained elsewhere",
                                            "width_mult": None, "file": "elsewhere.pt",
                                            "sha256": "0" * 64})
    shutil.rmtree(repo_copy / "data/checkpoints")
    for p in [*sorted((repo_copy / "reports/train").glob("*.json")), repo_copy / "reports/training.json"]:
        p.unlink()
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["supernet"] = {"checkpoint": "data/imported/supernet.pt",
                          "record": str(record.relative_to(repo_copy))}
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    dot = run([DVC, "dag", "--dot"], repo_copy, env)
    assert not {s for s in upstream(dot, "report") if s.startswith(TRAIN)}, dot
    devices = list(params["devices"])
    # the stages whose own deps changed: those that read the supernet (the training stages
    # are out of date too, their outputs deleted, but nothing runs them)
    reads = {"evaluate", "acc-dataset", *(f"export@{d}" for d in devices)}
    stale = set(json.loads(run([DVC, "status", "--json"], repo_copy, env)))
    assert stale - {s for s in stale if s.startswith(TRAIN)} == reads, stale
    assert ran_stages(run([DVC, "repro", "--dry"], repo_copy, env)) == reads
    # and what `dvc repro` runs: those and every stage after them, no training
    assert downstream(dot, reads) == reads | {"fit-predictor", "report",
                                              *(f"search@{d}" for d in devices)}
    out = run([DVC, "repro", "--single-item", "evaluate"], repo_copy, env)
    assert ran_stages(out) == {"evaluate"}, out
    evaluation = json.loads((repo_copy / "reports/evaluate.json").read_text())
    assert evaluation["checkpoint"] == "data/imported/supernet.pt"
    assert evaluation["imported"]["file"] == "elsewhere.pt" and "train_minutes" not in evaluation
    assert "Imported, not trained here: a supernet trained elsewhere" in \
        (repo_copy / "reports/evaluate.md").read_text()
