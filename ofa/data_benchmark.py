"""Throughput of the image-folder loader against the in-memory loader on the same images.

    python -m ofa.data_benchmark --folder ROOT [--image-size 32] [--workers 0 2] [--rounds 3]

ROOT is an ImageNet-layout folder (train/<class>/, val/<class>/); its training images are
decoded once into memory for the in-memory side. Every side runs `ofa.data.batches` over the
same seeded order in alternating rounds, and the figure is the median over rounds (a shared,
noisy machine slows all sides alike). Not a test: it prints images per second.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from ofa.data import AnySplit, Split, batches
from ofa.data_folder import load_image_folder


def _pass(split: AnySplit, batch_size: int) -> Callable[[], int]:
    def run() -> int:
        gen = torch.Generator().manual_seed(0)
        return sum(len(y) for _, y in batches(split, batch_size, generator=gen))
    return run


def benchmark_loaders(root: Path, image_size: int = 32, batch_size: int = 100,
                      workers: tuple[int, ...] = (0, 2), rounds: int = 3) -> list[dict]:
    """Images per second of one pass over the training images: in memory, and from the folder
    with the evaluation and the training transform at each worker count."""
    folder, _ = load_image_folder(root, image_size)
    sides: dict[str, Callable[[], int]] = {
        "in_memory": _pass(Split(folder.take(torch.arange(len(folder))), folder.labels),
                           batch_size)}
    for w in workers:
        for transform, crop in (("eval", False), ("train", True)):
            split = dataclasses.replace(folder, workers=w, random_crop=crop)
            sides[f"folder_{transform}_w{w}"] = _pass(split, batch_size)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = len(folder) / statistics.median(times["in_memory"])
    return [{"loader": name, "images": len(folder), "image_size": image_size,
             "img_s": len(folder) / statistics.median(t),
             "vs_in_memory": len(folder) / statistics.median(t) / base}
            for name, t in times.items()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = benchmark_loaders(a.folder, a.image_size, a.batch_size, tuple(a.workers), a.rounds)
    for r in rows:
        print(f"{r['loader']:<18} {r['img_s']:>10.0f} img/s  {r['vs_in_memory']:>7.3f}x in-memory"
              f"  ({r['images']} images at {r['image_size']} px)")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
