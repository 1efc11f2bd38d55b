"""Typed parameters, loaded once from params.yaml with strict checking.

Every key is declared here; unknown, missing or out-of-range keys are refused with a message
naming the dotted key, so a typo in params.yaml never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ofa.config_space import Activation, ConvSpec, SpaceConfig, StageSpec  # noqa: F401
from ofa.config_specialize import (ConstraintsConfig, DeviceConfig, LatencyConfig,
                                   OrchestrationConfig, PredictorConfig, SearchConfig,
                                   VerifyConfig)
from ofa.errors import (SAFE_NAME, SAFE_NAME_RULE, OFAError, Range, bounded, optional, require,
                        safe_name)
from ofa.yaml_io import read_yaml, strict_yaml  # noqa: F401 - read_yaml: the loader's door


@dataclass(frozen=True)
class DataConfig:
    name: Literal["fashion_mnist", "cifar10", "imagefolder"]
    root: str
    val_size: int = 10000
    split_seed: int = 0
    image_size: int = 28
    augment: bool = False  # in memory: 2-px shifts and flips; a folder: random resized crops
    subset: int = 0  # 0 = use every training image; >0 caps the training split (smoke runs)
    # image folders stream from disk: DataLoader worker processes per loader (0 = in-process)
    workers: int = optional(2, omit_at_default=True)
    # per-channel normalisation (e.g. ImageNet's); unset: computed from the training images
    mean: tuple[float, ...] | None = optional(None, omit_at_default=True)
    std: tuple[float, ...] | None = optional(None, omit_at_default=True)

    def __post_init__(self) -> None:
        _require(self.val_size > 0, "data.val_size", "must be positive")
        _require(self.subset >= 0, "data.subset", "must be >= 0")
        _require(self.image_size >= 8, "data.image_size", "must be at least 8")
        _require(0 <= self.workers <= 64, "data.workers", "must be in [0, 64]")
        _require((self.mean is None) == (self.std is None), "data.std" if self.std is None
                 else "data.mean", "data.mean and data.std go together (give both or neither)")
        if self.mean is not None and self.std is not None:
            _require(len(self.mean) == len(self.std) > 0, "data.std",
                     f"needs one value per channel, as data.mean ({len(self.mean)})")
            _require(all(v > 0 for v in self.std), "data.std", "must be positive")

    @property
    def augment_batches(self) -> bool:
        """Whether training batches go through `ofa.data.augment` (in-memory data): a folder
        augments while it decodes (random resized crop and flip, ofa/data_folder.py)."""
        return self.augment and self.name != "imagefolder"


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    eval_batch_size: int
    threads: int
    channels_last: bool
    momentum: float = bounded("[0, 1)")
    nesterov: bool = field()
    weight_decay: float = bounded("[0, 1]")
    label_smoothing: float = bounded("[0, 1)")
    bn_calib_images: int = field()
    eval_images: int = field()  # validation images for per-epoch metrics (0 = whole split)
    # runs the validation and test passes of `ofa-cli evaluate` and the export's test pass
    eval_backend: Literal["torch", "onnxruntime"] = field()
    final_eval_images: int = 0  # images per split for `ofa-cli evaluate` (0 = whole split)
    processes: int = optional(2)  # local data-parallel training workers (ofa/launch.py)
    checkpoint_dir: str = optional("data/checkpoints")
    report_dir: str = optional("reports/train")
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "train.batch_size", "must be positive")
        _require(self.eval_batch_size > 0, "train.eval_batch_size", "must be positive")
        _require(self.threads >= 0, "train.threads", "must be >= 0 (0 = torch default)")
        _require(1 <= self.processes <= 256, "train.processes", "must be in [1, 256]")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        _require(self.bn_calib_images > 0, "train.bn_calib_images", "must be positive")
        _require(self.eval_images >= 0, "train.eval_images", "must be >= 0")
        _require(self.final_eval_images >= 0, "train.final_eval_images", "must be >= 0 (0 = all)")
        _require(0.0 <= self.momentum < 1.0, "train.momentum", "must be in [0, 1)")
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")


@dataclass(frozen=True)
class PhaseConfig:
    kernel: tuple[int, ...]
    expand: tuple[int, ...]
    depth: tuple[int, ...]
    epochs: int
    lr: float = bounded("(0, 10]")
    warmup_epochs: float = bounded("[0, 1000]")
    images_per_epoch: int = field()  # 0 = the whole training split
    subnets_per_step: int = field()
    kd_ratio: float = bounded("[0, 100]")
    init_from: str | None = optional(None)
    elastic_resolution: bool = optional(True)
    # where the soft labels come from: the teacher phase's checkpoint (the paper), or the
    # step's own largest subnet (BigNAS's in-place distillation; needs a sandwich sampling)
    kd_from: Literal["teacher", "largest"] = optional("teacher")
    fixed: str | None = optional(None)  # one subnet only (a from-scratch baseline: the supernet
    # restricted to this config, at its resolution); written by `ofa-cli train-scratch`

    def __post_init__(self) -> None:
        _require(self.epochs > 0, "epochs", "must be positive")
        _require(self.lr > 0, "lr", "must be positive")
        _require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
                 f"must be in [0, epochs] = [0, {self.epochs}]")
        _require(self.images_per_epoch >= 0, "images_per_epoch", "must be >= 0")
        _require(self.subnets_per_step >= 1, "subnets_per_step", "must be >= 1")
        _require(self.kd_ratio >= 0, "kd_ratio", "must be >= 0")


@dataclass(frozen=True)
class SamplingConfig:
    """What the shrinking phases draw (ofa/sampling.py): one switch between the paper's
    progressive shrinking, the sandwich rule and everything elastic at once."""

    rule: Literal["progressive", "progressive_sandwich", "naive", "naive_sandwich"] = \
        "progressive_sandwich"
    # once: importance-sort channels before the first elastic-width phase; nested: also the
    # paper authors' nested re-sort before a phase that opens narrower widths
    channel_sort: Literal["once", "nested"] = "nested"


@dataclass(frozen=True)
class Params:
    data: DataConfig
    space: SpaceConfig
    train: TrainConfig
    phases: dict[str, PhaseConfig] = field(default_factory=dict)
    sampling: SamplingConfig = optional(SamplingConfig())
    predictor: PredictorConfig = PredictorConfig()
    latency: LatencyConfig = LatencyConfig()
    search: SearchConfig = SearchConfig()
    verify: VerifyConfig = optional(VerifyConfig())
    devices: dict[str, DeviceConfig] = field(default_factory=dict)
    constraints: dict[str, ConstraintsConfig] = field(default_factory=dict)
    orchestration: OrchestrationConfig = OrchestrationConfig()

    def __post_init__(self) -> None:
        _require(len(self.phases) > 0, "phases", "needs at least one phase")
        for section, names in (("phases", self.phases), ("devices", self.devices),
                               ("constraints", self.constraints)):
            for name in names:  # each becomes part of a file name
                _require(SAFE_NAME.fullmatch(name) is not None, f"{section}[{name!r}]",
                         f"not a safe name for files ({SAFE_NAME_RULE})")
        for name, ph in self.phases.items():
            key = f"phases.{name}"
            for dim, allowed, chosen in (("kernel", self.space.kernel_choices, ph.kernel),
                                         ("expand", self.space.expand_choices, ph.expand),
                                         ("depth", self.space.depth_choices, ph.depth)):
                bad = sorted(set(chosen) - set(allowed))
                _require(len(chosen) > 0 and not bad, f"{key}.{dim}",
                         f"values {bad or chosen} not in the space's choices {list(allowed)}")
            if ph.init_from is not None:
                _require(ph.init_from in self.phases and ph.init_from != name,
                         f"{key}.init_from", f"unknown phase {ph.init_from!r}")
            _require(ph.kd_from == "teacher" or (
                ph.init_from is not None and ph.subnets_per_step >= 2
                and self.sampling.rule.endswith("_sandwich")), f"{key}.kd_from",
                "'largest' needs a shrinking phase with subnets_per_step >= 2 and a sandwich "
                "rule (sampling.rule: progressive_sandwich or naive_sandwich)")
        _require("teacher" in self.phases, "phases.teacher",
                 "the full-network phase 'teacher' is required (it is the distillation teacher)")
        for name in self.devices:
            _require(name in self.constraints, f"constraints.{name}",
                     f"missing: device {name!r} needs its limits (latency_ms, latency_frac, flops_m)")
        for name in self.constraints:
            _require(name in self.devices, f"constraints.{name}",
                     f"no device {name!r} is registered under devices")

    def chain(self, name: str) -> list[str]:
        """The phases a phase's checkpoint went through, in order: teacher -> ... -> name."""
        out = [name]
        while (prev := self.phase(out[-1]).init_from) is not None and prev not in out:
            out.append(prev)
        return out[::-1]

    def shrinking_order(self) -> list[str]:
        """The longest init_from chain: teacher -> kernel -> ... (ablations branch off it)."""
        return max((self.chain(n) for n in self.phases), key=len)

    def device(self, name: str) -> DeviceConfig:
        if name not in self.devices:
            known = ", ".join(self.devices) or "none"
            raise OFAError(f"unknown device {name!r}; params.yaml registers: {known}")
        return self.devices[name]

    def constraints_of(self, name: str) -> ConstraintsConfig:
        self.device(name)
        return self.constraints[name]

    def phase(self, name: str) -> PhaseConfig:
        if name not in self.phases:
            raise OFAError(f"unknown phase {name!r}; params.yaml defines: {', '.join(self.phases)}")
        return self.phases[name]


_require = require


def _build(tp: Any, value: Any, key: str) -> Any:
    """Convert parsed YAML into the annotated type, refusing anything that does not fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise OFAError(f"params: {key}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise OFAError(f"params: {key + '.' if key else ''}{unknown[0]}: unknown key "
                           f"(allowed: {', '.join(sorted(names))})")
        kwargs = {}
        for f in dataclasses.fields(tp):
            sub = f"{key}.{f.name}" if key else f.name
            if f.name in value:
                kwargs[f.name] = _build(hints[f.name], value[f.name], sub)
                if "range" in f.metadata:
                    _check_range(kwargs[f.name], f.metadata["range"], sub)
            elif not f.metadata.get("optional"):
                raise OFAError(f"params: {sub}: missing key")
        try:
            return tp(**kwargs)
        except OFAError as exc:
            msg = str(exc)
            for cls, prefix in ((DeviceConfig, "params: devices.*"),
                                (ConstraintsConfig, "params: constraints.*")):
                if tp is cls and msg.startswith(prefix):
                    raise OFAError(f"params: {key}{msg[len(prefix):]}") from None
            if tp is PhaseConfig and msg.startswith("params: "):
                raise OFAError(f"params: {key}.{msg[len('params: '):]}") from None
            raise
    if origin is Literal:
        if value not in args:
            raise OFAError(f"params: {key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _build(inner[0], value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise OFAError(f"params: {key}: expected a list, got {value!r}")
        return tuple(_build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise OFAError(f"params: {key}: expected a mapping")
        return {str(k): _build(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise OFAError(f"params: {key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OFAError(f"params: {key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OFAError(f"params: {key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise OFAError(f"params: {key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise OFAError(f"params: {key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} at {key}")


def _check_range(value: Any, interval: Range, key: str) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for i, v in enumerate(values):
        if v not in interval:
            where = f"{key}[{i}]" if isinstance(value, tuple) else key
            raise OFAError(f"params: {where}: must be in {interval}, got {v!r}")


def deep_merge(base: dict, override: dict) -> dict:
    """Overlay a preset on parsed params; mappings merge, everything else replaces."""
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_path(name: str) -> Path:
    """The file of an overlay shipped with the package (every DVC stage depends on the
    active one: dvc.yaml's `ofa/presets/${preset}.yaml`)."""
    safe_name("preset", name)
    return Path(str(resources.files("ofa.presets") / f"{name}.yaml"))


def preset(name: str) -> dict:
    """An overlay shipped with the package (e.g. 'smoke': a few hundred images per phase;
    'default': none)."""
    ref = preset_path(name)
    if not ref.is_file():
        raise OFAError(f"unknown preset {name!r}")
    raw = strict_yaml(ref.read_text(), f"preset {ref}") or {}
    if not isinstance(raw, dict):
        raise OFAError(f"preset {ref} must hold a mapping at the top level")
    return raw


def params_from_dict(raw: dict) -> Params:
    return _build(Params, raw, "")


def space_from_dict(raw: Any) -> SpaceConfig:
    """A search space as a checkpoint's metadata records it (`to_dict`), strictly checked."""
    return _build(SpaceConfig, raw, "space")


def load_params(path: str | Path = "params.yaml", preset_name: str | None = None) -> Params:
    """Read params; a preset (named by the argument, else by the file's `preset` key) overlays it.

    The `preset` key lets DVC switch the whole pipeline, e.g. `dvc exp run -S preset=smoke`.
    """
    raw = read_yaml(Path(path))
    chosen = preset_name if preset_name is not None else raw.pop("preset", None)
    raw.pop("preset", None)
    if chosen is not None:
        if not isinstance(chosen, str):
            raise OFAError(f"params: preset: expected a preset name, got {chosen!r}")
        raw = deep_merge(raw, preset(chosen))
    return params_from_dict(raw)


def to_dict(obj: Any) -> Any:
    """Plain-data view (lists, dicts, numbers) for JSON and checkpoint metadata."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_at_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
