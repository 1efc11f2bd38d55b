"""The ablation's params (`ablation/params.yaml`): seeds, the presets x sampling rules that
make its recipes, the subnets trained alone; checked strictly like the main params, and every
recipe's run params built once at load, so that a recipe which cannot run is refused first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from ofa.config import _build, deep_merge, params_from_dict, preset, preset_path, read_yaml
from ofa.config_train import SamplingRule
from ofa.errors import OFAError, optional, require

RULES = get_args(SamplingRule)
OWN = "own"             # the sampling rule the preset (or params.yaml) sets


def split_recipe(recipe: str) -> tuple[str, str | None]:
    """`preset.rule` -> (preset, rule or None: the preset's own)."""
    preset_name, _, rule = recipe.partition(".")
    return preset_name, None if rule in ("", OWN) else rule


def recipe_label(recipe: str) -> str:
    """How the report names a recipe: the preset alone under its own rule."""
    preset_name, rule = split_recipe(recipe)
    return preset_name if rule is None else recipe


@dataclass(frozen=True)
class AblationConfig:
    """ablation/params.yaml, strictly checked like the main params."""

    seeds: tuple[int, ...]
    presets: tuple[str, ...]           # each trains its teacher once per seed
    rules: tuple[str, ...]             # each preset runs under each: `own` or a sampling rule
    scratch: tuple[str, ...]           # subnets trained alone, each at its own resolution
    scratch_seeds: tuple[int, ...]     # their seeds (a run alone serves one subnet: costly)
    scratch_kd: tuple[str, ...]        # configs also trained alone distilled from a teacher,
    kd_teacher: str                    # this preset's (of the same seed)
    random_subnets: int = 12           # random subnets every recipe is evaluated on
    random_seed: int = 2026
    finetune_epochs: int = optional(1)  # OFA + a short fine-tune of the scratch configs (0: off)
    finetune_lr: float = optional(0.01)
    main_params: str = optional("../params.yaml")
    runs_dir: str = optional("runs")
    report_dir: str = optional("../reports/ablation")

    @property
    def recipes(self) -> list[str]:
        return [f"{p}.{r}" for p in self.presets for r in self.rules]

    def __post_init__(self) -> None:
        require(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds), "seeds",
                "needs distinct seeds")
        require(len(self.scratch_seeds) == len(set(self.scratch_seeds)), "scratch_seeds",
                "needs distinct seeds")
        require(len(self.presets) >= 1 and len(set(self.presets)) == len(self.presets),
                "presets", "needs distinct presets")
        for name in self.presets:
            require(preset_path(name).is_file() and "." not in name, "presets",
                    f"names {name!r}, which is not a preset in ofa/presets")
        require(len(self.rules) >= 1 and len(set(self.rules)) == len(self.rules), "rules",
                "needs distinct sampling rules")
        for rule in self.rules:
            require(rule in (OWN, *RULES), "rules",
                    f"{rule!r} is not {OWN} or a sampling rule ({', '.join(RULES)})")
        require(self.kd_teacher in self.presets, "kd_teacher",
                f"{self.kd_teacher!r} is not among presets {list(self.presets)}")
        require(set(self.scratch_seeds) <= set(self.seeds), "scratch_seeds",
                f"must be among seeds {list(self.seeds)} (scratch_kd distils from their teachers)")
        require(len(set(self.scratch_kd)) == len(self.scratch_kd), "scratch_kd",
                "needs distinct configs")
        require(self.random_subnets >= 0, "random_subnets", "must be >= 0")
        require(self.finetune_epochs >= 0, "finetune_epochs", "must be >= 0")
        require(0 < self.finetune_lr <= 10, "finetune_lr", "must be in (0, 10]")


def load_ablation(path: Path = Path("params.yaml")) -> AblationConfig:
    """The ablation's params; each recipe's run params are built once here, so a recipe its
    preset cannot run under (e.g. a sandwich-only distillation under `progressive`) is refused
    before anything trains."""
    cfg = _build(AblationConfig, read_yaml(Path(path)), "")
    for recipe in cfg.recipes:
        try:
            params_from_dict(recipe_raw(cfg, recipe, 0))
        except OFAError as exc:
            raise OFAError(f"recipe {recipe!r} (presets x rules) cannot run: {exc}") from None
    return cfg


def recipe_raw(cfg: AblationConfig, recipe: str | None, seed: int, folder: Path | None = None) -> dict:
    """The main params with the recipe's preset (none: the main params' own) and rule."""
    raw = read_yaml(Path(cfg.main_params))
    chosen = raw.pop("preset", None)
    name_preset, rule = split_recipe(recipe) if recipe else (chosen, None)
    if name_preset:
        raw = deep_merge(raw, preset(name_preset))
    over: dict = {"train": {"seed": seed}}
    if folder is not None:
        over["train"] |= {"checkpoint_dir": str(folder / "ckpt"), "report_dir": str(folder / "train")}
    if rule is not None:
        over["sampling"] = {"rule": rule}
    return deep_merge(raw, over)
