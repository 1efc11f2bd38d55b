"""ImageNet-layout folders (`train/<class>/`, `val/<class>/`) streamed from disk.

Only the file list and the labels live in memory; pixels are decoded batch by batch in
DataLoader worker processes (`data.workers`), with the paper authors' transforms: evaluation
resizes the short side to ceil(size / 0.875) and centre-crops `size`; training takes a random
resized crop (scale 0.08-1, ratio 3/4-4/3) at `size` and a random horizontal flip. Every image's
random draws come from its own seed (drawn by `ofa.data.batches` from the caller's generator),
so seeded training batches are bit-identical for any number of workers (0 included).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ofa.errors import OFAError

EVAL_CROP = 0.875  # the authors' evaluation: resize to size / 0.875, centre crop
CROP_SCALE = (0.08, 1.0)  # their random resized crop (torchvision's defaults)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
NO_SEED = -1  # evaluation transform


def crop_box(height: int, width: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop: torchvision's RandomResizedCrop draws, in its
    order, from `gen` instead of the global RNG (a test checks both give the same crops)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(CROP_RATIO))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*CROP_SCALE, generator=gen).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]),
                                                   generator=gen)).item()
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            return top, int(torch.randint(0, width - w + 1, (1,), generator=gen)), h, w
    ratio = width / height  # ten misses: the central crop within the ratio bounds
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        w, h = int(round(height * CROP_RATIO[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def load_image(path: Path, size: int, seed: int = NO_SEED) -> torch.Tensor:
    """One image as uint8 3 x size x size (PIL decodes it): the evaluation transform, or with
    a `seed` the training transform drawn from that seed alone."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    try:
        with Image.open(path) as f:
            img = f.convert("RGB")  # grey, palette, CMYK and alpha images alike
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise OFAError(f"cannot read image {path}: {exc}") from None
    if seed == NO_SEED:
        img = TF.center_crop(TF.resize(img, [int(math.ceil(size / EVAL_CROP))]), [size])
    else:
        gen = torch.Generator().manual_seed(seed)
        top, left, h, w = crop_box(img.height, img.width, gen)
        img = TF.resized_crop(img, top, left, h, w, [size, size])
        if torch.rand(1, generator=gen) < 0.5:
            img = TF.horizontal_flip(img)
    return TF.pil_to_tensor(img)


class _Reader(torch.utils.data.Dataset):
    """What a worker process sees: (file index, seed, size) -> (image, error). A failed read
    comes back as a message, so the main process raises one clean OFAError (not a worker
    traceback)."""

    def __init__(self, split: "FolderSplit") -> None:
        self.root, self.files = split.root, split.files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
        index, seed, size = key
        try:
            return load_image(self.root / os.fsdecode(self.files[index]), size, seed), ""
        except OFAError as exc:
            return torch.zeros(3, size, size, dtype=torch.uint8), str(exc)


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, str]:
    errors = [e for _, e in items if e]
    return torch.stack([x for x, _ in items]), (errors[0] if errors else "")


class _Keys:
    """The DataLoader's batch sampler: our precomputed order, made into keys lazily (an
    ImageNet epoch as Python tuples would take ~150 MB); each batch at its own size."""

    def __init__(self, chunks: Sequence[torch.Tensor], seeds: Sequence[torch.Tensor] | None,
                 sizes: Sequence[int]):
        self.chunks, self.seeds, self.sizes = chunks, seeds, sizes

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for k, idx in enumerate(self.chunks):
            seeds = self.seeds[k].tolist() if self.seeds is not None else [NO_SEED] * len(idx)
            yield [(i, seed, self.sizes[k]) for i, seed in zip(idx.tolist(), seeds)]


@dataclass(frozen=True, eq=False)
class FolderSplit:
    """A split of an image folder: the same small interface as the in-memory `ofa.data.Split`
    (len, labels, image_shape, subset, take, read). `random_crop`: its batches use the
    training transform (the training split when data.augment is on)."""

    root: Path
    files: np.ndarray  # relative paths as numpy bytes: no per-file objects to copy on write
    labels: torch.Tensor  # int64, from the class folders
    classes: tuple[str, ...]
    size: int
    workers: int = 0
    random_crop: bool = False

    streams = True  # read from disk on every pass: nothing of the split is kept (InputCache)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    @property
    def random_transform(self) -> bool:
        return self.random_crop

    def path(self, i: int) -> Path:
        return self.root / os.fsdecode(self.files[i])

    def subset(self, idx: torch.Tensor) -> "FolderSplit":
        return dataclasses.replace(self, files=self.files[idx.numpy()], labels=self.labels[idx])

    def at(self, resolution: int) -> "FolderSplit":
        """The split decoded at `resolution` directly (resize r/0.875 and centre-crop r, or the
        random resized crop at r), as the paper authors do, not at data.image_size and then
        resized again."""
        return dataclasses.replace(self, size=resolution)

    def training(self, on: bool) -> "FolderSplit":
        return dataclasses.replace(self, random_crop=on)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """These images with the evaluation transform, decoded here (a few: the export's
        check images)."""
        return torch.stack([load_image(self.path(i), self.size) for i in idx.tolist()])

    def read(self, chunks: Sequence[torch.Tensor], seeds: Sequence[torch.Tensor] | None,
             sizes: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        """The uint8 batches of `chunks` (file indices) in order, decoded by `workers`
        processes; `seeds` (one per image) select the training transform, `sizes` (one per
        batch, default the split's size) the resolution each batch is decoded at directly."""
        from torch.utils.data import DataLoader

        if sizes is None:
            sizes = [self.size] * len(chunks)
        elif len(sizes) < len(chunks):
            raise ValueError(f"{len(sizes)} batch sizes for {len(chunks)} batches")
        loader = DataLoader(_Reader(self), batch_sampler=_Keys(chunks, seeds, sizes),
                            num_workers=self.workers, collate_fn=_collate,
                            pin_memory=torch.cuda.is_available(),
                            generator=torch.Generator().manual_seed(0))  # not the global RNG
        for x, error in loader:
            if error:
                raise OFAError(error)
            yield x

    def sample_columns(self, n: int, seed: int) -> dict[str, list]:
        """The data gate's columns (one entry per file): pixel range, shape and read error
        ("" if readable) of a seeded sample of `n` files (evaluation transform); None elsewhere."""
        cols: dict[str, list] = {k: [None] * len(self)
                                 for k in ("pixel_min", "pixel_max", "shape", "read_error")}
        sample = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        for i in sample.tolist():
            try:
                img = load_image(self.path(i), self.size)
            except OFAError as exc:
                cols["read_error"][i] = str(exc)
                continue
            cols["pixel_min"][i], cols["pixel_max"][i] = int(img.min()), int(img.max())
            cols["shape"][i], cols["read_error"][i] = str(tuple(img.shape)), ""
        return cols

    def digest(self) -> str:
        """sha256 of every file's relative path, size, mtime and label: cheap (one stat per
        file, no decoding); a copy that resets mtimes changes it too (then training reruns)."""
        h = hashlib.sha256()
        for rel, label in zip(self.files.tolist(), self.labels.tolist()):
            try:
                st = (self.root / os.fsdecode(rel)).stat()
            except OSError as exc:
                raise OFAError(f"image folder {self.root}: {exc}") from None
            h.update(rel + f"\0{label} {st.st_size} {st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def scan_folder(path: Path, size: int, workers: int,
                classes: tuple[str, ...] | None = None) -> FolderSplit:
    """The files of `path/<class>/...` (torchvision's ImageFolder order and extensions); with
    `classes`, refuse a folder whose class folders differ."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        found, class_to_idx = find_classes(str(path))
    except (FileNotFoundError, OSError):
        raise OFAError(f"image folder {path} has no class folders (expected "
                       f"{path}/<class>/<image>)") from None
    if classes is not None and tuple(found) != classes:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise OFAError(f"{path} has other classes than train/: missing {missing[:5]}, "
                       f"extra {extra[:5]}")
    try:
        items = make_dataset(str(path), class_to_idx, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as exc:
        raise OFAError(f"image folder {path}: {exc}") from None
    cut = len(str(path)) + 1  # make_dataset's paths all start with `path/`
    files = np.array([os.fsencode(p[cut:]) for p, _ in items], dtype=bytes)
    labels = torch.tensor([c for _, c in items], dtype=torch.int64)
    return FolderSplit(path, files, labels, tuple(found), size, workers)


def load_image_folder(root: Path, size: int, workers: int = 0) -> tuple[FolderSplit, FolderSplit]:
    """train/ and val/ (or test/) of an ImageNet-layout folder; their classes must agree."""
    test_dir = root / "val" if (root / "val").is_dir() else root / "test"
    if not (root / "train").is_dir() or not test_dir.is_dir():
        raise OFAError(f"ImageNet-layout folder {root} needs train/<class>/ and val/<class>/ "
                       "(or test/<class>/)")
    train = scan_folder(root / "train", size, workers)
    return train, scan_folder(test_dir, size, workers, train.classes)
