"""The ablation pipeline (ablation/dvc.yaml, ofa/ablation.py): its report from fixture results
(golden figures worked out by hand) and its stages for real on the smoke repository."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from ofa.ablation_report import write_ablation_report
from tests.pipeline_support import DVC, ROOT, ran_stages, run, stage_env

MIN = "r24-d2222-k3333333333333333-e3333333333333333"
MAX = "r32-d4444-k7777777777777777-e6666666666666666"


def _eval(runs: Path, recipe: str, seed: int, accs: dict[str, float], seconds: float) -> None:
    folder = runs / f"{recipe}-s{seed}"
    folder.mkdir(parents=True)
    rows = [{"name": "min" if c == MIN else "max", "config": c, "resolution": int(c[1:3]),
             "macs": 3.7e6 if c == MIN else 34e6, "test_acc": a, "val_acc": a} for c, a in accs.items()]
    (folder / "eval.json").write_text(json.dumps({
        "recipe": recipe, "rule": recipe.rpartition(".")[2], "seed": seed, "rows": rows,
        "train_seconds": {"teacher": seconds, "kernel": 10.0},
        "finetuned": [{"config": MIN, "test_acc": accs[MIN] + 0.01}]}))


def _scratch(runs: Path, seed: int, acc: float) -> None:
    folder = runs / f"scratch-{MIN}-s{seed}" / "scratch"
    folder.mkdir(parents=True)
    (folder / f"scratch-{MIN}.json").write_text(json.dumps({
        "name": f"scratch-{MIN}", "config": MIN, "distilled": False, "test_acc": acc,
        "val_acc": acc, "macs": 3.7e6, "params": 1, "train_seconds": 500.0,
        "images_seen": 640000}))


def test_report_from_fixture_results(tmp_path: Path):
    runs = tmp_path / "runs"
    _eval(runs, "progressive", 0, {MIN: 0.890, MAX: 0.915}, 100.0)
    _eval(runs, "progressive", 1, {MIN: 0.894, MAX: 0.917}, 110.0)
    _eval(runs, "naive_sandwich", 0, {MIN: 0.900, MAX: 0.918}, 90.0)
    _eval(runs, "naive_sandwich", 1, {MIN: 0.902, MAX: 0.916}, 92.0)
    _scratch(runs, 0, 0.922)
    _scratch(runs, 1, 0.924)
    summary = write_ablation_report(runs, tmp_path / "out")
    mn = summary["subnets"][MIN]
    assert mn["progressive"]["mean"] == pytest.approx(89.2)
    assert mn["progressive"]["sd"] == pytest.approx(statistics.stdev([89.0, 89.4]))
    assert mn["scratch"]["mean"] == pytest.approx(92.3)
    assert mn["naive_sandwich + fine-tune"]["mean"] == pytest.approx(91.1)
    against = mn["against_scratch"]["naive_sandwich"]
    assert against["diffs"] == pytest.approx([-2.2, -2.2])
    assert against["diff_mean"] == pytest.approx(-2.2) and against["exceeds_spread"] is True
    pair = summary["recipes_paired"]["naive_sandwich - progressive"]
    assert pair["subnets"] == 2 and pair["a_ahead"] == 2 and pair["b_ahead"] == 0
    assert pair["mean_diff"] == pytest.approx(((90.1 - 89.2) + (91.7 - 91.6)) / 2)
    # MAX: +0.1 mean difference, spread 0.14 (progressive) and 0.14 (naive): not beyond
    assert pair["exceeding_spread"] == 1
    assert summary["cost"]["progressive"]["train_seconds"] == pytest.approx(115.0)
    page = (tmp_path / "out" / "ablation.md").read_text()
    assert f"| `{MIN}` | naive_sandwich | -2.20 | -2.20, -2.20 | yes |" in page
    assert (tmp_path / "out" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "ablation.json").read_text()) == \
        json.loads(json.dumps(summary))


def test_one_seed_reports_no_spread(tmp_path: Path):
    runs = tmp_path / "runs"
    _eval(runs, "progressive", 0, {MIN: 0.890, MAX: 0.915}, 100.0)
    _scratch(runs, 0, 0.922)
    summary = write_ablation_report(runs, tmp_path / "out")
    assert summary["subnets"][MIN]["against_scratch"]["progressive"]["exceeds_spread"] is None
    assert "n/a (one seed)" in (tmp_path / "out" / "ablation.md").read_text()


def test_recipe_seeds_against_one_scratch_seed_compare_with_its_value(tmp_path: Path):
    """Two recipe seeds, one scratch seed: each recipe seed is set against that run, and the
    recipe's own spread decides whether the gap exceeds it."""
    runs = tmp_path / "runs"
    _eval(runs, "sandwich_cosine12", 0, {MIN: 0.918, MAX: 0.925}, 100.0)
    _eval(runs, "sandwich_cosine12", 1, {MIN: 0.920, MAX: 0.926}, 100.0)
    _scratch(runs, 0, 0.923)
    summary = write_ablation_report(runs, tmp_path / "out")
    against = summary["subnets"][MIN]["against_scratch"]["sandwich_cosine12"]
    assert against["diffs"] == pytest.approx([-0.5, -0.3])
    assert against["exceeds_spread"] is True       # mean -0.4 beyond the recipe's sd 0.14
    assert summary["seeds"] == [0, 1] and summary["scratch_seeds"] == [0]
    assert "subnets trained alone: [0]" in (tmp_path / "out" / "ablation.md").read_text()


ABLATION = {"seeds": [0, 1], "presets": ["progressive13", "sandwich_cosine12"],
            "rules": ["own", "naive_sandwich"], "scratch": [MIN],
            "scratch_seeds": [0], "scratch_kd": [], "kd_teacher": "progressive13", "random_subnets": 2,
            "random_seed": 1}


@pytest.mark.parametrize("change, needle", [
    ({"presets": ["progressive13", "nosuch"]}, "'nosuch', which is not a preset"),
    ({"presets": ["default", "default"]}, "presets: needs distinct presets"),
    ({"rules": ["own", "sideways"]}, "'sideways' is not own or a sampling rule"),
    ({"rules": []}, "rules: needs distinct sampling rules"),
    ({"scratch_seeds": [2]}, "scratch_seeds: must be among seeds"),
    ({"kd_teacher": "smoke"}, "kd_teacher: 'smoke' is not among presets"),
    ({"rules": ["own", "progressive"]},   # sandwich_cosine12 distils from the largest subnet
     "recipe 'sandwich_cosine12.progressive' .presets x rules. cannot run: params: phases[.].*kd_from"),
])
def test_bad_ablation_params_are_refused(tmp_path: Path, change: dict, needle: str):
    from ofa.ablation_config import load_ablation
    from ofa.errors import OFAError

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(ABLATION | {"main_params": str(ROOT / "params.yaml")} | change))
    with pytest.raises(OFAError, match=needle):
        load_ablation(path)


def test_a_recipe_runs_its_preset_under_its_rule(tmp_path: Path):
    """`progressive13.naive_sandwich`: the preset's phases (its 13-epoch teacher) under that
    rule; `default.own`: the main params' phases and rule (the main preset, smoke
    here, is not applied)."""
    from ofa.ablation import run_params
    from ofa.ablation_config import load_ablation

    main = yaml.safe_load((ROOT / "params.yaml").read_text()) | {"preset": "smoke"}
    (tmp_path / "main.yaml").write_text(yaml.safe_dump(main))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(ABLATION | {"main_params": str(tmp_path / "main.yaml"),
                                               "runs_dir": str(tmp_path / "runs")}))
    cfg = load_ablation(path)
    tuned, _ = run_params(cfg, "a-s1", 1, "progressive13.naive_sandwich")
    plain, _ = run_params(cfg, "b-s0", 0, "default.own")
    assert tuned.sampling.rule == "naive_sandwich" and tuned.phase("teacher").epochs == 13
    assert tuned.train.seed == 1 and tuned.train.checkpoint_dir == str(tmp_path / "runs" / "a-s1" / "ckpt")
    assert plain.sampling.rule == main["sampling"]["rule"]
    assert plain.phase("teacher").epochs == main["phases"]["teacher"]["epochs"]   # not smoke's


def test_the_ablation_stages_on_the_smoke_preset(repo_copy: Path):
    """Teacher, a recipe and a scratch run of one seed, then the report; a second repro runs
    nothing, and a changed evaluation set reruns the recipe's evaluation only, keeping every
    phase it trained. (Two recipes and their comparison: the fixture tests above.)"""
    env = stage_env(repo_copy)
    shutil.copytree(ROOT / "ablation", repo_copy / "ablation",
                    ignore=shutil.ignore_patterns("runs", "dvc.lock"))
    params = {"seeds": [0], "presets": ["smoke"], "rules": ["naive_sandwich"],
              "scratch": [MIN], "scratch_seeds": [0], "kd_teacher": "smoke",
              "random_subnets": 1, "random_seed": 5, "scratch_kd": [],
              "finetune_epochs": 1, "finetune_lr": 0.01}
    (repo_copy / "ablation" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "add", "-A"], repo_copy, env)
    run(["git", "commit", "-qm", "ablation"], repo_copy, env)
    out = run([DVC, "repro", "ablation/dvc.yaml"], repo_copy, env)
    assert ran_stages(out) == {"ablation/dvc.yaml:teacher@smoke-0",
                               "ablation/dvc.yaml:recipe@smoke-naive_sandwich-0",
                               f"ablation/dvc.yaml:scratch@{MIN}-0", "ablation/dvc.yaml:report"}
    summary = json.loads((repo_copy / "reports" / "ablation" / "ablation.json").read_text())
    shipped = {row["config"] for d in ("cpu1-b1", "ts1-b8", "ort1-b1")
               for row in json.loads((repo_copy / "models" / d / "export.json").read_text())["chosen"]}
    assert shipped <= set(summary["subnets"])   # the shipped subnets are compared too
    assert {"smoke.naive_sandwich", "scratch"} <= set(summary["subnets"][MIN])
    assert ran_stages(run([DVC, "repro", "ablation/dvc.yaml"], repo_copy, env)) == set()
    params["random_subnets"] = 2
    (repo_copy / "ablation" / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run([DVC, "repro", "ablation/dvc.yaml"], repo_copy, env)
    assert ran_stages(out) == {"ablation/dvc.yaml:recipe@smoke-naive_sandwich-0",
                               "ablation/dvc.yaml:report"}
    assert out.count("done with these params and code, kept") == 6  # 5 phases + fine-tune
    assert "up to date" in run([DVC, "status", "ablation/dvc.yaml"], repo_copy, env)
