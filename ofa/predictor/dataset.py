"""The accuracy dataset: sampled subnets, BN-recalibrated, measured on the validation split.

Measuring is a pure function of (supernet, configs), so chunks of configs can run anywhere
(a Dask worker, another machine) and give the same rows as one sequential run.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from ofa.checkpoint import atomic_write
from ofa.config import Params
from ofa.contracts import AccDataset, validate
from ofa.data import load_dataset
from ofa.errors import OFAError
from ofa.evaluate import EvalSettings, InputCache, prepare_subnet
from ofa.inference import accuracy, split_hits
from ofa.nn.static import count_macs, count_params
from ofa.progress import make_progress
from ofa.space import SearchSpace, SubnetConfig
from ofa.weights import load_for_inference

COLUMNS = ("config", "resolution", "accuracy", "accuracy_half", "macs", "params")


def sample_configs(space: SearchSpace, n: int, seed: int) -> list[SubnetConfig]:
    """n distinct canonical configs: the min (smallest resolution) and max (largest) first."""
    rng = random.Random(seed)
    out = [space.canonical(space.min_config()), space.canonical(space.max_config())]
    seen = set(out)
    for _ in range(100 * n):  # bounded: the space holds far more than n subnets
        if len(out) >= n:
            break
        cfg = space.canonical(space.sample(rng))
        if cfg not in seen:
            seen.add(cfg)
            out.append(cfg)
    if len(out) < n:
        raise OFAError(f"predictor.n_subnets: the space has fewer than {n} distinct subnets")
    return out[:n]


def measure_configs(supernet, configs: Sequence[SubnetConfig], data, settings,
                    val_images: int, progress=None, backend: str = "torch") -> list[dict]:
    """One row per config: BN-recalibrated top-1 on the first `val_images` validation images
    (and on the first half of them, for the noise estimate). BN statistics always come from
    torch; `backend` runs the validation pass (ofa/inference.py)."""
    rows, inputs = [], InputCache(data, settings)
    for cfg in configs:
        net = prepare_subnet(supernet, cfg, data, settings, inputs)
        labelled = inputs.split("val", cfg.r, val_images)
        right = split_hits(net, [labelled], backend)[0]
        half = max(len(right) // 2, 1)
        rows.append({"config": str(cfg), "resolution": cfg.r,
                     "accuracy": accuracy(right),
                     "accuracy_half": int(right[:half].sum()) / half,
                     "macs": int(count_macs(net, cfg.r, supernet.space.cfg.in_channels)),
                     "params": int(count_params(net))})
        if progress is not None:
            progress(cfg)
    return rows


def measure_supernet(params: Params, net, configs: Sequence[SubnetConfig],
                     progress=None) -> list[dict]:
    """measure_configs with the params' data, evaluation settings and backend."""
    return measure_configs(net, configs, load_dataset(params.data, params.space),
                           EvalSettings.of(params), params.predictor.val_images,
                           progress, params.predictor.backend)


def measure_checkpoint(params: Params, checkpoint: Path, configs: Sequence[SubnetConfig],
                       progress=None) -> list[dict]:
    """Load the supernet of `checkpoint` and measure these subnets (any process, any host)."""
    net = load_for_inference(params, checkpoint, params.predictor.backend)
    return measure_supernet(params, net, configs, progress)


def write_dataset(rows: list[dict], path: Path):
    df = validate(pd.DataFrame(rows, columns=list(COLUMNS)), AccDataset, f"accuracy dataset {path}")
    atomic_write(Path(path), lambda p: df.to_parquet(p, index=False))
    return df


def _measure_share(params: Params, checkpoint: str, configs: list[str], threads: int,
                   done) -> list[dict]:
    """One worker process's share: its own supernet copy, data and input cache."""
    torch.set_num_threads(threads)
    return measure_checkpoint(params, Path(checkpoint), [SubnetConfig.parse(c) for c in configs],
                              lambda cfg: done.put(str(cfg)))


def measure_in_workers(params: Params, checkpoint: Path, configs: Sequence[SubnetConfig],
                       workers: int, progress=None) -> list[dict]:
    """measure_configs split over `workers` local processes (every k-th config each), rows in
    the order of `configs`: the same rows as one sequential run (a test checks it)."""
    threads = max(1, (params.train.threads or 1) // workers)
    names = [str(c) for c in configs]
    ctx = mp.get_context("spawn")  # no fork of a process holding torch's thread pools
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        done = manager.Queue()
        futures = [pool.submit(_measure_share, params, str(checkpoint), names[i::workers],
                               threads, done) for i in range(workers) if names[i::workers]]
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=0.5)
            while True:
                try:
                    name = done.get_nowait()
                except queue.Empty:
                    break
                if progress is not None:
                    progress(name)
        by_config = {row["config"]: row for f in futures for row in f.result()}
    return [by_config[n] for n in names]


def build_acc_dataset(params: Params, checkpoint: Path, out: Path | None = None, *,
                      n: int | None = None, show_progress: bool = True):
    """Sample, measure and write `predictor.dataset_path` (or `out`); returns the DataFrame."""
    pc = params.predictor
    # also refuses a foreign checkpoint early
    net = load_for_inference(params, Path(checkpoint), pc.backend)
    configs = sample_configs(net.space, n or pc.n_subnets, pc.seed)
    with make_progress(show_progress) as bar:
        task = bar.add_task("accuracy dataset", total=len(configs), info="")

        def advance(cfg) -> None:
            bar.update(task, advance=1, info=str(cfg)[:24])

        if pc.workers > 1:
            rows = measure_in_workers(params, Path(checkpoint), configs, pc.workers, advance)
        else:
            rows = measure_supernet(params, net, configs, advance)
    return write_dataset(rows, Path(out or pc.dataset_path))


def read_dataset(params: Params, path: Path | None = None):
    """The dataset, checked: columns present, accuracies in [0, 1], configs inside the space."""
    path = Path(path or params.predictor.dataset_path)
    if not path.is_file():
        raise OFAError(f"accuracy dataset {path} does not exist: run `ofa-cli acc-dataset` first")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise OFAError(f"accuracy dataset {path} is not a parquet file ({exc})") from None
    missing = [c for c in ("config", "accuracy") if c not in df.columns]
    if missing:
        raise OFAError(f"accuracy dataset {path} lacks the column {missing[0]!r}")
    if len(df) < 10:
        raise OFAError(f"accuracy dataset {path} has {len(df)} rows; the predictor needs >= 10")
    if not df["accuracy"].between(0, 1).all():
        raise OFAError(f"accuracy dataset {path} has accuracies outside [0, 1]")
    df = validate(df, AccDataset, f"accuracy dataset {path}")
    space = SearchSpace(params.space)
    try:
        configs = [space.validate(SubnetConfig.parse(c)) for c in df["config"]]
    except OFAError as exc:
        raise OFAError(f"accuracy dataset {path}: {exc}") from None
    return df, configs
