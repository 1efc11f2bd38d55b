"""Typed params of specialization: accuracy predictor, devices, latency tables, search.

Kept apart from the training params (config.py) so each file stays small; `Params` holds both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ofa.errors import bounded, optional, require

Backend = Literal["torch", "torchscript", "onnxruntime"]


@dataclass(frozen=True)
class SupernetConfig:
    """The supernet that evaluation and every specialization step use, with its record: the
    last shrinking phase's checkpoint and the training summary (null: those; `dvc repro` then
    runs training/dvc.yaml's stages first), or a file `ofa-cli import-official` wrote and the
    record beside it (then `dvc repro` runs no training stage). DVC reads both paths from
    params.yaml for the stages' deps, so a preset must not set them."""

    checkpoint: str | None = None
    record: str | None = None

    def __post_init__(self) -> None:
        require((self.checkpoint is None) == (self.record is None), "supernet",
                "give both checkpoint and record (the training summary, or the import's record "
                "beside the checkpoint), or neither")
        for key, value in (("checkpoint", self.checkpoint), ("record", self.record)):
            require(value is None or (value.strip() != "" and "\0" not in value),
                    f"supernet.{key}", "must be a file path")


@dataclass(frozen=True)
class PredictorConfig:
    """The accuracy dataset (measured subnets) and the MLP fitted on it."""

    n_subnets: int = 200          # subnets measured for the dataset (min and max always included)
    val_images: int = 0           # validation images per subnet (0 = the whole split)
    seed: int = 0
    hidden: int = 400             # the paper: 3 hidden layers of 400
    layers: int = 3
    epochs: int = 300
    lr: float = bounded("(0, 10]", 1.0e-3)
    batch_size: int = 64
    weight_decay: float = bounded("[0, 1]", 1.0e-4)
    split: tuple[float, ...] = bounded("(0, 1)", (0.7, 0.15, 0.15))  # train / validation / test, by config
    workers: int = optional(1)    # local processes measuring subnets (threads shared among them)
    backend: Literal["torch", "onnxruntime"] = optional("onnxruntime")  # the validation pass
    dataset_path: str = optional("data/predictor/acc_dataset.parquet")
    weights_path: str = optional("data/predictor/mlp.safetensors")
    report_path: str = optional("reports/predictor.json")

    def __post_init__(self) -> None:
        require(self.n_subnets >= 10, "predictor.n_subnets", "must be at least 10")
        require(self.val_images >= 0, "predictor.val_images", "must be >= 0 (0 = all)")
        require(1 <= self.workers <= 256, "predictor.workers", "must be in [1, 256]")
        require(self.hidden > 0 and self.layers > 0, "predictor.hidden/layers", "must be positive")
        require(self.epochs > 0 and self.lr > 0 and self.batch_size > 0,
                "predictor.epochs/lr/batch_size", "must be positive")
        require(self.weight_decay >= 0, "predictor.weight_decay", "must be >= 0")
        require(len(self.split) == 3 and all(s > 0 for s in self.split)
                and abs(sum(self.split) - 1.0) < 1e-6, "predictor.split",
                "needs three positive fractions summing to 1 (train, validation, test)")


@dataclass(frozen=True)
class DeviceConfig:
    """One deployment target: how to run a subnet there (what its latency table measures)."""

    backend: Backend
    threads: int = optional(1)
    batch_size: int = optional(1)
    device: Literal["cpu", "cuda"] = optional("cpu")
    table: str | None = optional(None)    # a table measured elsewhere (a phone): skip measuring

    def __post_init__(self) -> None:
        require(self.threads >= 1, "devices.*.threads", "must be at least 1")
        require(self.batch_size >= 1, "devices.*.batch_size", "must be at least 1")


@dataclass(frozen=True)
class ConstraintsConfig:
    """What to specialize a device for; kept apart from `DeviceConfig` so that a changed limit
    reruns the search and export but not the device's latency table."""

    latency_ms: tuple[float, ...] = bounded("(0, 100000]", (), is_optional=True)  # latency limits in ms
    # latency limits as fractions of the way from the device's fastest subnet (0) to its
    # slowest (1), resolved against its own table: portable to machines of unknown speed
    latency_frac: tuple[float, ...] = bounded("(0, 1]", (), is_optional=True)
    flops_m: tuple[float, ...] = bounded("(0, 1000000]", (), is_optional=True)  # MMAC limits

    def __post_init__(self) -> None:
        require(all(v > 0 for v in self.latency_ms + self.flops_m),
                "constraints.*.latency_ms/flops_m", "limits must be positive")
        require(all(0 < v <= 1 for v in self.latency_frac), "constraints.*.latency_frac",
                "fractions must be in (0, 1]")
        require(bool(self.latency_ms or self.latency_frac or self.flops_m), "constraints.*",
                "needs at least one limit: latency_ms, latency_frac or flops_m")
        for kind in ("latency_ms", "latency_frac", "flops_m"):
            values = getattr(self, kind)
            require(len(set(values)) == len(values), f"constraints.*.{kind}",
                    "repeats a limit (each one is a folder and a report row)")

    def specs(self) -> list[tuple[str, float]]:
        """Each limit as the user wrote it, in order: (kind, value), e.g. ('latency_frac', 0.15)."""
        return ([("latency_ms", v) for v in self.latency_ms]
                + [("latency_frac", v) for v in self.latency_frac]
                + [("flops_m", v) for v in self.flops_m])


@dataclass(frozen=True)
class LatencyConfig:
    warmup: int = 3
    repeats: int = 31             # timings per layer; the table keeps median and spread
    min_seconds: float = bounded("[0, 3600]", 20.0, is_optional=True)  # more rounds while the timed ones took less (fast devices)
    check_subnets: int = 30       # random full subnets timed end to end to check the table
    # timing sessions of the check at most, while the machine's speed drifts (the one whose
    # drift is closest to 1 is reported)
    check_sessions: int = optional(1)
    seed: int = 0
    calibration_subnets: int = optional(24)  # subnets timed end to end to fit scales and overhead
    table_dir: str = optional("data/latency")
    report_dir: str = optional("reports/latency")

    def __post_init__(self) -> None:
        require(self.warmup >= 0, "latency.warmup", "must be >= 0")
        require(self.repeats >= 3, "latency.repeats", "must be at least 3")
        require(self.min_seconds >= 0, "latency.min_seconds", "must be >= 0")
        require(self.check_subnets >= 2, "latency.check_subnets", "must be at least 2")
        require(1 <= self.check_sessions <= 10, "latency.check_sessions", "must be in [1, 10]")
        require(self.calibration_subnets >= 3, "latency.calibration_subnets",
                "must be at least 3 (the smallest, the largest and a random subnet)")


@dataclass(frozen=True)
class SearchConfig:
    """The paper's regularized evolution settings (and NSGA-II's for the Pareto mode)."""

    population: int = 100
    generations: int = 500
    parent_ratio: float = bounded("(0, 1)", 0.25)
    mutation_ratio: float = bounded("(0, 1)", 0.5)
    mutation_prob: float = bounded("[0, 1]", 0.1)
    seed: int = 0
    max_tries: int = 1000         # bound on rejection sampling of feasible subnets
    threads: int = 2              # torch threads scoring the predictor
    output_dir: str = optional("data/search")
    models_dir: str = optional("models")  # export: models/<device>/<constraint>/

    def __post_init__(self) -> None:
        require(self.population >= 4, "search.population", "must be at least 4")
        require(self.generations >= 1, "search.generations", "must be at least 1")
        require(0 < self.parent_ratio < 1, "search.parent_ratio", "must be in (0, 1)")
        require(0 < self.mutation_ratio < 1, "search.mutation_ratio", "must be in (0, 1)")
        require(0 <= self.mutation_prob <= 1, "search.mutation_prob", "must be in [0, 1]")
        require(self.max_tries >= 1, "search.max_tries", "must be at least 1")
        require(self.threads >= 1, "search.threads", "must be at least 1")


@dataclass(frozen=True)
class VerifyConfig:
    """Final selection by measurement (ofa/verify.py): each constraint's best candidates are
    timed on the device and evaluated on the validation split before one ships."""

    candidates: int = 4           # K best distinct candidates measured per constraint
    over_margin: float = bounded("[0, 1]", 0.1)  # also candidates predicted up to this share over a latency limit
    under_margin: float = bounded("[0, 1)", 0.1)  # and one predicted at least this share under it
    tighten_rounds: int = 2       # searches again with the limit tightened, at most this often
    reference_subnets: int = 4    # the table's first calibration subnets, timed in the same rounds
    rounds: int = 15              # interleaved timing rounds (more for fast subnets: latency.min_seconds)
    val_images: int = 0           # validation images per candidate (0 = the whole split)

    def __post_init__(self) -> None:
        require(self.candidates >= 1, "verify.candidates", "must be at least 1")
        require(self.tighten_rounds >= 1, "verify.tighten_rounds", "must be at least 1")
        require(self.reference_subnets >= 1, "verify.reference_subnets", "must be at least 1")
        require(self.rounds >= 3, "verify.rounds", "must be at least 3")
        require(self.val_images >= 0, "verify.val_images", "must be >= 0 (0 = all)")


@dataclass(frozen=True)
class OrchestrationConfig:
    """Prefect deployments and the Dask cluster that fans evaluation out."""

    new_devices_cron: str = "*/30 * * * *"   # how often `new-devices` looks for new entries
    dask_address: str | None = None          # a scheduler address; None = a LocalCluster
    dask_workers: int = 2                    # LocalCluster workers

    def __post_init__(self) -> None:
        require(_valid_cron(self.new_devices_cron), "orchestration.new_devices_cron",
                f"{self.new_devices_cron!r} is not a valid 5-field cron expression")
        require(self.dask_workers >= 1, "orchestration.dask_workers", "must be at least 1")


CRON_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))  # minute hour day month weekday
CRON_NAMES = ({}, {}, {}, {m: i + 1 for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split())},
    {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})


def _valid_cron(expr: str) -> bool:
    """A standard 5-field cron expression (lists, ranges, steps, month/day names), checked
    here so that loading params never has to import Prefect."""
    fields = expr.split()
    if len(fields) != 5:
        return False

    def value(tok: str, i: int) -> int | None:
        v = CRON_NAMES[i].get(tok.lower(), tok)
        if isinstance(v, str) and not v.isdigit():
            return None
        v = int(v)
        lo, hi = CRON_FIELDS[i]
        return v if lo <= v <= hi else None

    for i, field_ in enumerate(fields):
        for part in field_.split(","):
            rng, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return False
            if rng == "*":
                continue
            ends = rng.split("-")
            vals = [value(e, i) for e in ends]
            if len(ends) > 2 or None in vals or (len(vals) == 2 and vals[0] > vals[1]):
                return False
            if step and len(ends) == 1:
                return False
    return True
