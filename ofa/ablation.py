"""The seeded comparison of training recipes with subnets trained alone (`ablation/dvc.yaml`).

A recipe is a preset (ofa/presets: its phases, learning rates and sampling rule) under a
sampling rule, `own` being the preset's: every preset runs under every rule listed (recipes
`sandwich_cosine12.own`, reported as `sandwich_cosine12`; `default.naive_sandwich`). Each run lives in its
own folder under `runs/` with its own params file (the main params with the recipe's preset in
place of the main one, plus the run's seed and folders), so the main pipeline's checkpoints are
never touched: `teachers/<preset>-s<seed>` trains a preset's teacher; `<recipe>-s<seed>` starts
from it, trains the shrinking phases, optionally fine-tunes the scratch configs briefly, and
evaluates every compared subnet; `scratch-<config>-s<seed>` trains one subnet alone
(`ofa.scratch`, the main params' scratch recipe). A run skips the phases it already completed
with the same params and code, and a killed phase resumes, so the pipeline may run in parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path

import yaml

from ofa import paths
from ofa.ablation_config import AblationConfig, recipe_label, recipe_raw, split_recipe
from ofa.checkpoint import atomic_write_text, load_checkpoint
from ofa.config import Params, load_params
from ofa.errors import OFAError
from ofa.report_inputs import shipped_configs

TEACHERS = "teachers"   # runs/teachers/<preset>-s<seed>


def main_params(cfg: AblationConfig) -> Params:
    return load_params(Path(cfg.main_params))


def run_dir(cfg: AblationConfig, name: str) -> Path:
    """A run's folder: runs/<name>, the teachers' in runs/teachers/ (a recipe stage depends on
    that folder, not on `runs`, which holds its own output)."""
    if name.startswith(TEACHERS + "/"):
        return paths.inside(Path(cfg.runs_dir) / TEACHERS, "ablation run", name[len(TEACHERS) + 1:])
    return paths.inside(cfg.runs_dir, "ablation run", name)


def run_params(cfg: AblationConfig, name: str, seed: int, recipe: str | None = None) -> tuple[Params, Path]:
    """The run's params (written to its folder, which the training workers read)."""
    folder = run_dir(cfg, name)
    path = folder / "params.yaml"
    atomic_write_text(path, yaml.safe_dump(recipe_raw(cfg, recipe, seed, folder), sort_keys=False))
    return load_params(path), path


# What a trained phase depends on beyond its params: a run's finished phase is kept only if
# these files are unchanged since (the stage reruns, e.g., when only its evaluation changed).
TRAINING_CODE = ("train.py", "sampling.py", "space.py", "data.py", "distributed.py", "bn.py",
                 "seeding.py", "scratch.py", "nn")


def code_hash() -> str:
    root = Path(__file__).parent
    files = sorted(f for name in TRAINING_CODE for f in ([root / name] if (root / name).is_file()
                   else (root / name).rglob("*.py")))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def _inputs_hash(params: Params, phase: str) -> str:
    """The checkpoints a phase starts from and distils from, by content."""
    ph = params.phase(phase)
    digest = hashlib.sha256()
    for name in dict.fromkeys([ph.init_from, "teacher" if ph.kd_ratio > 0 else None]):
        if name is not None and name != phase and paths.checkpoint(params, name).is_file():
            digest.update(paths.checkpoint(params, name).read_bytes())
    return digest.hexdigest()[:16]


def _done_path(params: Params) -> Path:
    return Path(params.train.checkpoint_dir) / "done.json"


def _complete(params: Params, phase: str) -> bool:
    """A finished checkpoint of this phase, trained with exactly these params and code."""
    from ofa.train import fingerprint

    path, done = paths.checkpoint(params, phase), _done_path(params)
    if not (path.is_file() and done.is_file()):
        return False
    key = json.loads(done.read_text()).get(phase, {})
    meta = load_checkpoint(path)["meta"]
    return (bool(meta.get("complete")) and key.get("code") == code_hash()
            and key.get("inputs") == _inputs_hash(params, phase)
            and meta.get("fingerprint") == fingerprint(params, phase) == key.get("fingerprint"))


def _train(params: Params, path: Path, phase: str, progress: bool,
           command: list[str] | None = None) -> None:
    from ofa.launch import WorkersFailed, run_phase
    from ofa.train import fingerprint

    if _complete(params, phase):
        print(f"{phase}: done with these params and code, kept ({paths.checkpoint(params, phase)})")
        return
    try:
        run_phase(params, path, None, phase, progress, command)
    except WorkersFailed as exc:
        raise OFAError(f"{path.parent.name}: phase {phase} failed in its workers "
                       f"(exit code {exc.code})") from None
    done = _done_path(params)
    record = json.loads(done.read_text()) if done.is_file() else {}
    record[phase] = {"fingerprint": fingerprint(params, phase), "code": code_hash(),
                     "inputs": _inputs_hash(params, phase)}
    atomic_write_text(done, json.dumps(record, indent=2))


def _teacher_run(preset_name: str, seed: int) -> str:
    return f"{TEACHERS}/{preset_name}-s{seed}"


def _copy_teacher(cfg: AblationConfig, preset_name: str, seed: int, params: Params) -> None:
    teacher, _ = run_params(cfg, _teacher_run(preset_name, seed), seed, preset_name)
    for src, dst in ((paths.checkpoint(teacher, "teacher"), paths.checkpoint(params, "teacher")),
                     (paths.train_report(teacher, "teacher"), paths.train_report(params, "teacher"))):
        if not src.is_file():
            raise OFAError(f"{src} does not exist: run the stage teacher@{preset_name}-{seed} "
                           f"(`ofa-cli ablation teacher --preset {preset_name} --seed {seed}`) "
                           "first")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def train_teacher(cfg: AblationConfig, preset_name: str, seed: int, progress: bool = False) -> Path:
    """The preset's teacher phase with this seed, shared by the preset's recipes."""
    params, path = run_params(cfg, _teacher_run(preset_name, seed), seed, preset_name)
    _train(params, path, "teacher", progress)
    return paths.checkpoint(params, "teacher")


def compared_subnets(cfg: AblationConfig, params: Params) -> list[str]:
    """The subnets every recipe is evaluated on beyond min/mid/max (evaluate_checkpoint):
    the scratch configs, seeded random subnets, and the main pipeline's shipped subnets."""
    from ofa.space import SearchSpace

    space = SearchSpace(params.space)
    rng = random.Random(f"ablation-subnets:{cfg.random_seed}")
    out = [str(space.validate(_parse(c))) for c in cfg.scratch]
    out += [str(space.sample(rng)) for _ in range(cfg.random_subnets)]
    root = Path(cfg.main_params).parent  # the main project's outputs are relative to it
    for device in params.devices:
        record = root / paths.export_record(params, device)
        if record.is_file():
            out += shipped_configs(record)
    return list(dict.fromkeys(out))


def _parse(text: str):
    from ofa.space import SubnetConfig

    return SubnetConfig.parse(text)


def train_recipe(cfg: AblationConfig, recipe: str, seed: int, progress: bool = False) -> Path:
    """Shrinking phases of the recipe from its preset's teacher of this seed, the optional
    fine-tunes, and the evaluation of every compared subnet (`eval.json` in the run's folder)."""
    from ofa.evaluate import evaluate_checkpoint

    params, path = run_params(cfg, f"{recipe}-s{seed}", seed, recipe)
    _copy_teacher(cfg, split_recipe(recipe)[0], seed, params)
    order = params.shrinking_order()
    for phase in order[1:]:
        _train(params, path, phase, progress)
    extra = compared_subnets(cfg, params)
    rows = evaluate_checkpoint(params, paths.checkpoint(params, order[-1]), extra,
                               ("val", "test"), progress)
    finetuned = [_finetune(cfg, params, path, c, order[-1], progress)
                 for c in cfg.scratch] if cfg.finetune_epochs else []
    record = {"recipe": recipe_label(recipe), "rule": params.sampling.rule, "seed": seed, "rows": rows,
              "finetuned": finetuned,
              "train_seconds": {p: json.loads(paths.train_report(params, p).read_text())
                                ["train_seconds"] for p in order}}
    out = run_dir(cfg, f"{recipe}-s{seed}") / "eval.json"
    atomic_write_text(out, json.dumps(record, indent=2))
    return out


def _finetune(cfg: AblationConfig, params: Params, path: Path, config: str, last: str,
              progress: bool) -> dict:
    """One subnet fine-tuned alone for a few epochs from the supernet's weights."""
    from ofa.scratch import with_scratch_phase, write_scratch_report
    from ofa.space import SearchSpace

    sub = SearchSpace(params.space).validate(_parse(config))
    tuned, name = with_scratch_phase(params, sub, False)
    name_ft = f"finetune-{sub}"
    phase = dataclasses.replace(tuned.phase(name), init_from=last, epochs=cfg.finetune_epochs,
                                lr=cfg.finetune_lr, warmup_epochs=0.0)
    tuned = dataclasses.replace(params, phases={**params.phases, name_ft: phase})
    # one process: the workers would rebuild params from the file, which lacks this phase
    single = dataclasses.replace(tuned, train=dataclasses.replace(tuned.train, processes=1))
    _train(single, path, name_ft, progress)
    return write_scratch_report(single, name_ft)


def train_scratch(cfg: AblationConfig, config: str, seed: int, mode: str = "scratch",
                  progress: bool = False) -> dict:
    """One scratch config trained alone with this seed (`scratch_kd`: distilled from the
    kd_teacher preset's teacher of this seed), in runs/<mode>-<config>-s<seed>."""
    from ofa.scratch import with_scratch_phase, write_scratch_report
    from ofa.space import SearchSpace

    if mode not in ("scratch", "scratch_kd"):
        raise OFAError(f"scratch mode {mode!r} is not one of scratch, scratch_kd")
    distill = mode == "scratch_kd"
    sub = SearchSpace(main_params(cfg).space).validate(_parse(config))
    params, path = run_params(cfg, f"{mode}-{sub}-s{seed}", seed)
    if distill:
        _copy_teacher(cfg, cfg.kd_teacher, seed, params)
    params, name = with_scratch_phase(params, sub, distill)
    command = ["train-scratch", "--config", str(sub), "--distill" if distill else "--no-distill"]
    _train(params, path, name, progress, command)
    return write_scratch_report(params, name)
