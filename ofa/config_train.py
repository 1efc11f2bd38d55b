"""Typed params of the data and of training: the data source, the training loop's settings,
the phases, how the shrinking phases sample, and the recipe of a subnet trained alone.

Kept apart from config.py (the loader and `Params`) so each file stays small; `ofa.config`
re-exports every class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

from ofa.errors import bounded, optional, require

_require = require


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
    # BN recalibration (ofa/bn.py): exact (unbiased batch variances) | authors (the paper
    # authors' set_running_statistics: biased ones; the imagenet presets, for imported nets)
    bn_recal: Literal["exact", "authors"] = optional("exact", omit_at_default=True)

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

    def fingerprint(self) -> str:
        """What decides the images and labels a run trains and is measured on (not where the
        files lie, nor how many processes read them): a scratch run is compared with the
        supernet's subnets only under the same one."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("root", "workers")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

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
    # where training and torch evaluation run (ofa/device.py): auto = CUDA where available
    device: Literal["auto", "cpu", "cuda"] = optional("auto", omit_at_default=True)
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
    # where the phase's cosine decay ends (0: a restart per phase; the next phase's lr: one
    # continuous schedule across the phases)
    lr_end: float = bounded("[0, 10]", 0.0, is_optional=True, omit_at_default=True)
    fixed: str | None = optional(None)  # one subnet only (a from-scratch baseline: the supernet
    # restricted to this config, at its resolution); written by `ofa-cli train-scratch`

    def __post_init__(self) -> None:
        _require(self.epochs > 0, "epochs", "must be positive")
        _require(self.lr > 0, "lr", "must be positive")
        _require(0 <= self.lr_end <= self.lr, "lr_end", f"must be in [0, lr] = [0, {self.lr}]")
        _require(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
                 f"must be in [0, epochs] = [0, {self.epochs}]")
        _require(self.images_per_epoch >= 0, "images_per_epoch", "must be >= 0")
        _require(self.subnets_per_step >= 1, "subnets_per_step", "must be >= 1")
        _require(self.kd_ratio >= 0, "kd_ratio", "must be >= 0")


SamplingRule = Literal["progressive", "progressive_sandwich", "naive", "naive_sandwich"]


@dataclass(frozen=True)
class SamplingConfig:
    """What the shrinking phases draw (ofa/sampling.py): one switch between the paper's
    progressive shrinking, the sandwich rule and everything elastic at once."""

    rule: SamplingRule = "naive_sandwich"
    # once: importance-sort channels before the first elastic-width phase; nested: also the
    # paper authors' nested re-sort before a phase that opens narrower widths
    channel_sort: Literal["once", "nested"] = "nested"


@dataclass(frozen=True)
class ScratchConfig:
    """The recipe of a subnet trained alone (`ofa-cli train-scratch`, the ablation's scratch
    runs): the whole default training's 13 epochs, under its own key so that a recipe's
    teacher does not set the baseline the supernet's subnets are measured against."""

    epochs: int = 13
    lr: float = bounded("(0, 10]", 0.1)
    warmup_epochs: float = bounded("[0, 1000]", 0.3)
    images_per_epoch: int = 0      # 0 = the whole training split

    def __post_init__(self) -> None:
        _require(self.epochs > 0, "scratch.epochs", "must be positive")
        _require(0 <= self.warmup_epochs <= self.epochs, "scratch.warmup_epochs",
                 f"must be in [0, epochs] = [0, {self.epochs}]")
        _require(self.images_per_epoch >= 0, "scratch.images_per_epoch", "must be >= 0")
