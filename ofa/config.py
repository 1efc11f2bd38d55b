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
from ofa.config_train import (DataConfig, PhaseConfig, SamplingConfig,  # noqa: F401
                              ScratchConfig, TrainConfig)
from ofa.config_specialize import (ConstraintsConfig, DeviceConfig, LatencyConfig,
                                   OrchestrationConfig, PredictorConfig, SearchConfig,
                                   SupernetConfig, VerifyConfig)
from ofa.errors import (SAFE_NAME, SAFE_NAME_RULE, OFAError, Range, optional, require,
                        safe_name)
from ofa.yaml_io import read_yaml, strict_yaml  # noqa: F401 - read_yaml: the loader's door


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
    scratch: ScratchConfig = optional(ScratchConfig(), omit_at_default=True)
    devices: dict[str, DeviceConfig] = field(default_factory=dict)
    constraints: dict[str, ConstraintsConfig] = field(default_factory=dict)
    orchestration: OrchestrationConfig = OrchestrationConfig()
    supernet: SupernetConfig = optional(SupernetConfig(), omit_at_default=True)

    def __post_init__(self) -> None:
        _require(len(self.phases) > 0, "phases", "needs at least one phase")
        for section, names in (("phases", self.phases), ("devices", self.devices),
                               ("constraints", self.constraints)):
            for name in names:  # each becomes part of a file name
                _require(SAFE_NAME.fullmatch(name) is not None, f"{section}[{name!r}]",
                         f"not a safe name for files ({SAFE_NAME_RULE})")
        _require("teacher" in self.phases, "phases.teacher",
                 "the full-network phase 'teacher' is required (it is the distillation teacher)")
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
    if "supernet" in raw:  # the stages' deps come from params.yaml's path, not an overlay's
        raise OFAError(f"preset {ref}: supernet: set it in params.yaml, not in a preset "
                       "(DVC reads the path there for the stages' dependencies)")
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
