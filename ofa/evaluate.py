"""Evaluate subnets: export, recalibrate BN on training images, measure top-1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ofa.bn import BnRecal, recalibrate
from ofa.config import Params
from ofa.data import Dataset, Split, batches, load_dataset, to_input
from ofa.inference import accuracy, split_hits
from ofa.nn.static import count_macs, count_params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.progress import make_progress
from ofa.space import SearchSpace, SubnetConfig
from ofa.weights import load_for_inference

CALIB_SEED = 1234  # the calibration images are a fixed sample of the training split


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int
    calib_images: int
    channels_last: bool
    bn_recal: BnRecal = "exact"   # how BN statistics are re-estimated (ofa/bn.py)

    @classmethod
    def of(cls, params: Params) -> "EvalSettings":
        tc = params.train
        return cls(tc.eval_batch_size, tc.bn_calib_images, tc.channels_last, params.data.bn_recal)


def calibration_inputs(data: Dataset, resolution: int, s: EvalSettings) -> list[torch.Tensor]:
    """A fixed sample of the training split as its batches come: for an image folder with
    data.augment, random resized crops (the paper authors calibrate BN on their training
    loader's transform), seeded, so the same every time; in-memory data unaugmented."""
    gen = torch.Generator().manual_seed(CALIB_SEED)
    return [to_input(x, resolution, data.mean, data.std, s.channels_last)
            for x, _ in batches(data.train.at(resolution), s.batch_size, generator=gen,
                                limit=s.calib_images)]


class InputCache:
    """Model inputs per (split, resolution, limit), resized and normalised once.

    Many subnets evaluated at a few resolutions (the accuracy dataset, `ofa-cli evaluate`)
    would otherwise resize the same images again for every subnet. The caller owns the cache
    and decides how long it lives."""

    def __init__(self, data: Dataset, s: EvalSettings) -> None:
        self.data, self.s = data, s
        self._memo: dict[tuple, list] = {}

    def calibration(self, resolution: int) -> list[torch.Tensor]:
        key = ("calibration", resolution)
        if key not in self._memo:
            self._memo[key] = calibration_inputs(self.data, resolution, self.s)
        return self._memo[key]

    def split(self, name: str, resolution: int, limit: int = 0) -> "list | Streamed":
        """The split's labelled model inputs: kept for in-memory data, read again on every
        pass for a folder (an ImageNet split as floats would not fit in memory)."""
        split = getattr(self.data, name)
        if split.streams:
            return Streamed(split, resolution, self.data, self.s, limit)
        key = (name, resolution, limit)
        if key not in self._memo:
            self._memo[key] = list(Streamed(split, resolution, self.data, self.s, limit))
        return self._memo[key]


@dataclass(frozen=True)
class Streamed:
    """A split's labelled model inputs in evaluation order, decoded batch by batch on each
    pass (len: the number of batches)."""
    split: object
    resolution: int
    data: Dataset
    s: EvalSettings
    limit: int = 0

    def __iter__(self):
        d, s = self.data, self.s
        for x, y in batches(self.split.at(self.resolution), s.batch_size, limit=self.limit):
            yield to_input(x, self.resolution, d.mean, d.std, s.channels_last), y

    def __len__(self) -> int:
        n = len(self.split) if self.limit <= 0 else min(self.limit, len(self.split))
        return -(-n // self.s.batch_size)


def top1(model: nn.Module, split: Split, resolution: int, data: Dataset, s: EvalSettings,
         limit: int = 0, backend: str = "torch") -> float:
    return accuracy(split_hits(model, [Streamed(split, resolution, data, s, limit)], backend)[0])


def prepare_subnet(supernet: OFAMobileNetV3, cfg: SubnetConfig, data: Dataset,
                   s: EvalSettings, inputs: InputCache | None = None) -> nn.Module:
    """The static subnet with its own BN statistics, ready for evaluation or export."""
    net = supernet.export(cfg)
    if s.channels_last:
        net = net.to(memory_format=torch.channels_last)
    recalibrate(net, (inputs or InputCache(data, s)).calibration(cfg.r), s.bn_recal)
    return net.eval()


def evaluate_subnet(supernet: OFAMobileNetV3, cfg: SubnetConfig, data: Dataset, s: EvalSettings,
                    splits: tuple[str, ...] = ("val",), limit: int = 0,
                    inputs: InputCache | None = None, backend: str = "torch") -> dict:
    """BN-recalibrated top-1 of one subnet per split; pass one `inputs` for many subnets.
    `backend` runs the passes over the splits (ofa/inference.py)."""
    inputs = inputs or InputCache(data, s)
    net = prepare_subnet(supernet, cfg, data, s, inputs)
    row = {"config": str(cfg), "resolution": cfg.r, "params": count_params(net),
           "macs": count_macs(net, cfg.r, supernet.space.cfg.in_channels)}
    passes = split_hits(net, [inputs.split(name, cfg.r, limit) for name in splits], backend)
    for name, right in zip(splits, passes):
        row[f"{name}_acc"] = accuracy(right)
    return row


def evaluate_checkpoint(params: Params, path: Path, extra: list[str],
                        splits: tuple[str, ...], show_progress: bool = True) -> list[dict]:
    """min/mid/max subnets at every resolution, plus any given configs, on the given splits."""
    space = SearchSpace(params.space)
    jobs = [(name, getattr(space, f"{name}_config")(r))
            for name in ("min", "mid", "max") for r in params.space.resolutions]
    jobs += [(f"given{i}", space.validate(SubnetConfig.parse(t))) for i, t in enumerate(extra)]
    net = load_for_inference(params, path, params.train.eval_backend)
    data = load_dataset(params.data, params.space)
    settings = EvalSettings.of(params)
    rows, inputs = [], InputCache(data, settings)
    with make_progress(show_progress) as bar:
        task = bar.add_task("evaluate", total=len(jobs), info="")
        for name, cfg in jobs:
            rows.append({"name": name, **evaluate_subnet(net, cfg, data, settings, splits,
                                                         params.train.final_eval_images,
                                                         inputs, params.train.eval_backend)})
            bar.update(task, advance=1, info=f"{name} r{cfg.r}")
    return rows
