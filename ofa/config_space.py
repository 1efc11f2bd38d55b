"""Typed params of the search space: the stem, the stage table and the elastic choices.

Kept apart from config.py (data, training, phases) so each file stays small; `Params` holds all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ofa.errors import bounded, optional, require as _require

Activation = Literal["relu", "hswish"]


@dataclass(frozen=True)
class ConvSpec:
    """A fixed layer outside the elastic stages (stem, first block)."""

    width: int
    stride: int
    act: Activation
    se: bool = optional(False)

    def __post_init__(self) -> None:
        _require(self.width > 0 and self.stride in (1, 2), "space.stem/first_block",
                 "width must be positive and stride 1 or 2")


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage, in the spirit of torchvision's MobileNetV3 block table."""

    width: int
    stride: int
    act: Activation
    se: bool


@dataclass(frozen=True)
class SpaceConfig:
    in_channels: int
    num_classes: int
    stem: ConvSpec
    first_block: ConvSpec
    stages: tuple[StageSpec, ...]
    final_expand_width: int
    feature_width: int
    kernel_choices: tuple[int, ...]
    expand_choices: tuple[int, ...]
    depth_choices: tuple[int, ...]
    resolutions: tuple[int, ...]
    dropout: float = bounded("[0, 1)", 0.1)
    bn_eps: float = bounded("(0, 1]", 1e-5)
    bn_momentum: float = bounded("(0, 1]", 0.1)
    # a bias in the feature-mix layer (the classifier's first Linear, after the global pool).
    # The paper authors' layer has none: their pretrained supernets import with it off
    # (ofa/official.py). Left out of to_dict() while on, so older artifacts keep their
    # fingerprints.
    feature_bias: bool = optional(True, omit_at_default=True)

    def __post_init__(self) -> None:
        _require(len(self.stages) >= 1, "space.stages", "needs at least one stage")
        for name, values in (("kernel_choices", self.kernel_choices),
                             ("expand_choices", self.expand_choices),
                             ("depth_choices", self.depth_choices)):
            _require(len(values) > 0 and len(set(values)) == len(values), f"space.{name}",
                     "must be a non-empty list without repeats")
            _require(all(1 <= v <= 9 for v in values), f"space.{name}", "values must be in 1..9")
        _require(min(self.expand_choices) >= 2, "space.expand_choices",
                 "expand ratios must be at least 2 (ratio 1 has no expansion layer to make elastic)")
        _require(all(k % 2 == 1 for k in self.kernel_choices), "space.kernel_choices",
                 "kernel sizes must be odd")
        _require(len(self.resolutions) > 0 and all(r >= 8 for r in self.resolutions),
                 "space.resolutions", "must list resolutions of at least 8 px")
        _require(0.0 <= self.dropout < 1.0, "space.dropout", "must be in [0, 1)")
        _require(len(set(self.resolutions)) == len(self.resolutions), "space.resolutions",
                 "must not repeat a resolution")
        _require(self.in_channels >= 1, "space.in_channels", "must be at least 1")
        _require(self.num_classes >= 2, "space.num_classes", "must be at least 2")
        _require(self.final_expand_width > 0 and self.feature_width > 0,
                 "space.final_expand_width/feature_width", "must be positive")
        _require(self.bn_eps > 0, "space.bn_eps", "must be positive")
        _require(0 < self.bn_momentum <= 1, "space.bn_momentum", "must be in (0, 1]")
        for i, st in enumerate(self.stages):
            _require(st.width > 0 and st.width % 8 == 0, f"space.stages[{i}].width",
                     "must be a positive multiple of 8")
            _require(st.stride in (1, 2), f"space.stages[{i}].stride", "must be 1 or 2")
