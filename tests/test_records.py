"""The DVC record is complete: every stage lists every project module its command can import
(tests/records.py computes the closure), lists no module that does not exist, and ofa/ has no
import circle. The params keys each stage reads are checked on the smoke pipeline
(tests/test_pipeline.py)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.records import (ROOT, covered, cycles, import_graph, missing_deps, resolved_stages,
                           stage_modules, stale_deps)


@pytest.fixture(scope="module")
def stages():
    return resolved_stages(ROOT)


def test_every_stage_lists_the_modules_its_command_can_import(stages):
    missing = missing_deps(stages)
    assert not missing, "\n".join(f"stage {s}: imports {m}, not in its deps" for s, m in missing)


def test_no_stage_lists_a_module_that_does_not_exist(stages):
    assert not stale_deps(stages)


def test_removing_a_dependency_is_caught(stages):
    """The check fails, naming stage and module, when dvc.yaml loses one dep."""
    teacher = stages["training/dvc.yaml:teacher"]
    assert "ofa/seeding.py" in teacher.deps
    cut = dataclasses.replace(teacher, deps=tuple(d for d in teacher.deps if d != "ofa/seeding.py"))
    assert missing_deps({"teacher": cut}) == [("teacher", "ofa/seeding.py")]


def test_training_does_not_depend_on_device_code(stages):
    """A change to latency tables, search or export never reruns training."""
    for name in ("teacher", "shrink@kernel", "shrink@expand2", "train-report"):
        mods = stage_modules(stages[f"training/dvc.yaml:{name}"])
        assert not {m for m in mods if m.split(".")[:2] in (["ofa", "latency"], ["ofa", "search"],
                                                            ["ofa", "predictor"])}, name
        assert not mods & {"ofa.export", "ofa.specialize", "ofa.report"}, name


def test_closure_follows_function_local_imports(tmp_path):
    """An import inside a function body counts as much as one at the top."""
    from tests.records import closure

    pkg = tmp_path / "ofa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from ofa import b\n")
    (pkg / "b.py").write_text("import ofa.c\n")
    (pkg / "c.py").write_text("")
    assert closure({"ofa.a"}, tmp_path) == {"ofa", "ofa.a", "ofa.b", "ofa.c"}


def test_no_import_circle_among_ofa_modules():
    assert cycles(import_graph()) == []


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_an_undeclared_params_read_is_caught(stages):
    """A key read by a stage's command but missing from its params is named; keys absent from
    params.yaml (optional ones) and commands of no stage are handled as documented."""
    from tests.records import undeclared_reads

    raw = {"train": {"batch_size": 128}, "phases": {"teacher": {"lr": 0.1}}}
    teacher = dataclasses.replace(stages["training/dvc.yaml:teacher"],
                                  params=("preset", "phases.teacher"))
    trace = {"argv": ["train", "--phase", "teacher", "--no-progress"],
             "reads": ["train.batch_size", "phases.teacher.lr", "train.report_dir"]}
    assert undeclared_reads({"teacher": teacher}, [trace], raw) == [("teacher", "train.batch_size")]
    stray = {"argv": ["report"], "reads": []}
    assert undeclared_reads({"teacher": teacher}, [stray], raw) == [("?", "report")]


def test_every_stage_depends_on_the_preset_file_the_config_loader_reads(stages):
    """Besides params.yaml (whose keys DVC tracks), the config loader reads the active preset
    overlay, ofa/presets/<preset>.yaml: every stage must list it, or editing it goes unseen."""
    import yaml

    from ofa.config import preset_path

    active = yaml.safe_load((ROOT / "params.yaml").read_text())["preset"]
    read = preset_path(active).relative_to(ROOT).as_posix()
    missing = [name for name, st in stages.items() if not covered(read, st.deps)]
    assert not missing, f"stages not depending on {read}: {missing}"
