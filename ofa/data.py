"""Datasets, fixed splits, batching, augmentation and resizing.

Fashion-MNIST (IDX files, Debian's dataset-fashion-mnist) and CIFAR-10 (python batches, read
with an unpickler that only admits numpy arrays) are held in memory as uint8 tensors (`Split`);
ImageNet-layout folders stream from disk (`ofa.data_folder.FolderSplit`, the same small
interface). `batches` is the one loop over either: the same (uint8 images, labels) batches,
so training and evaluation share one preprocessing path.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from ofa.config import DataConfig, SpaceConfig
from ofa.data_folder import FolderSplit, load_image_folder
from ofa.errors import OFAError

STATS_IMAGES = 1000  # a folder without data.mean/std: its statistics from this many images
STATS_SEED = 4321


@dataclass(frozen=True)
class Split:
    """Images held in memory; `FolderSplit` offers the same methods for a folder on disk."""

    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N
    random_transform = False  # (class constant) augmentation is the caller's: `augment`
    streams = False  # (class constant) held in memory: a pass's inputs may be kept (InputCache)

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.images[idx], self.labels[idx])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]

    def at(self, resolution: int) -> "Split":
        """The split for passes at `resolution`: the same images (`to_input` resizes them)."""
        return self

    def read(self, chunks: Sequence[torch.Tensor], seeds: Sequence[torch.Tensor] | None = None,
             sizes: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        return (self.images[idx] for idx in chunks)


AnySplit = Union[Split, FolderSplit]


@dataclass(frozen=True)
class Dataset:
    train: AnySplit
    val: AnySplit
    test: AnySplit
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int


# -- readers ---------------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise OFAError(f"cannot read IDX file {path}: {exc}") from None


def _find(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def load_fashion_mnist(root: Path) -> tuple[Split, Split]:
    names = {"train-images": "train-images-idx3-ubyte", "train-labels": "train-labels-idx1-ubyte",
             "test-images": "t10k-images-idx3-ubyte", "test-labels": "t10k-labels-idx1-ubyte"}
    found = {k: _find(root, v) for k, v in names.items()}
    if any(p is None for p in found.values()):
        raise OFAError(f"Fashion-MNIST not found in {root}: install it with "
                       "`apt-get install dataset-fashion-mnist` or point data.root in params.yaml "
                       "at a folder holding the four IDX files")
    out = []
    for part in ("train", "test"):
        x = torch.from_numpy(_read_idx(found[f"{part}-images"]).copy()).unsqueeze(1)
        y = torch.from_numpy(_read_idx(found[f"{part}-labels"]).astype(np.int64))
        if x.shape[0] != y.shape[0]:
            raise OFAError(f"Fashion-MNIST {part} images and labels differ in count")
        out.append(Split(x, y))
    return out[0], out[1]


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles; admit only what numpy arrays need, never arbitrary code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        if not isinstance(d, dict):
            raise ValueError(f"expected a dict, found {type(d).__name__}")
        data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(d[b"labels"], dtype=np.int64).reshape(-1)
        if len(labels) != len(data):
            raise ValueError(f"{len(data)} images but {len(labels)} labels")
        return data, labels
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise OFAError(f"cannot read CIFAR-10 batch {path}: {exc}") from None


def load_cifar10(root: Path) -> tuple[Split, Split]:
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    files = [base / f"data_batch_{i}" for i in range(1, 6)]
    if not all(f.is_file() for f in files) or not (base / "test_batch").is_file():
        raise OFAError(f"CIFAR-10 (python format) not found in {root}: expected data_batch_1..5 "
                       "and test_batch (optionally inside cifar-10-batches-py/)")
    parts = [_cifar_batch(f) for f in files]
    train = Split(torch.from_numpy(np.concatenate([p[0] for p in parts])),
                  torch.from_numpy(np.concatenate([p[1] for p in parts])))
    tx, ty = _cifar_batch(base / "test_batch")
    return train, Split(torch.from_numpy(tx), torch.from_numpy(ty))


# -- splits ----------------------------------------------------------------------------------
def load_dataset(cfg: DataConfig, space: SpaceConfig | None = None) -> Dataset:
    """Read the data and hold out a fixed-seed validation split from the training images;
    with `space`, refuse data the network cannot take (channels, more classes than outputs).

    Normalisation: data.mean/std when given, else computed from the training images (all of
    them in memory; for a folder a seeded sample of STATS_IMAGES, so the whole set is never
    read for it)."""
    root = Path(cfg.root)
    if cfg.name == "fashion_mnist":
        train_full, test = load_fashion_mnist(root)
    elif cfg.name == "cifar10":
        train_full, test = load_cifar10(root)
    else:
        train_full, test = load_image_folder(root, cfg.image_size, cfg.workers)
    if cfg.val_size >= len(train_full):
        raise OFAError(f"params: data.val_size: {cfg.val_size} leaves no training images "
                       f"(the training set has {len(train_full)})")
    if train_full.image_shape[-1] != cfg.image_size:
        raise OFAError(f"params: data.image_size: {cfg.image_size} does not match the data's "
                       f"{train_full.image_shape[-1]} px")
    perm = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(cfg.split_seed))
    val_idx, train_idx = perm[:cfg.val_size], perm[cfg.val_size:]
    if cfg.subset:
        train_idx = train_idx[:cfg.subset]
    train, val = train_full.subset(train_idx), train_full.subset(val_idx)
    channels = train.image_shape[0]
    if cfg.mean is not None:
        mean, std = tuple(cfg.mean), tuple(cfg.std)
        if len(mean) != channels:
            raise OFAError(f"params: data.mean: {len(mean)} values for {channels}-channel images")
    elif isinstance(train, FolderSplit):
        mean, std = sample_mean_std(train, STATS_IMAGES)
    else:
        x = train.images.float().div_(255)
        mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
        std = tuple(x.std(dim=(0, 2, 3)).tolist())
    if isinstance(train, FolderSplit):  # a folder's augmentation is its training transform
        train = train.training(cfg.augment)
    num_classes = int(max(train_full.labels.max(), test.labels.max())) + 1
    if space is not None and channels != space.in_channels:
        raise OFAError(f"params: space.in_channels: {space.in_channels}, but the {cfg.name} "
                       f"images have {channels} channel(s)")
    if space is not None and num_classes > space.num_classes:
        raise OFAError(f"params: space.num_classes: {space.num_classes} is fewer than the "
                       f"data's {num_classes} classes")
    return Dataset(train, val, test, mean, std, num_classes)


def sample_mean_std(split: AnySplit, limit: int, batch_size: int = 100
                    ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of a seeded sample of `limit` images, summed in
    float64 batch by batch: bounded memory, whatever the size of the split."""
    gen = torch.Generator().manual_seed(STATS_SEED)
    s1 = s2 = torch.zeros(split.image_shape[0], dtype=torch.float64)
    n = 0
    for x, _ in batches(split, batch_size, generator=gen, limit=limit):
        v = x.transpose(0, 1).flatten(1).double().div_(255)  # C x pixels
        s1, s2, n = s1 + v.sum(1), s2 + (v * v).sum(1), n + v.shape[1]
    var = (s2 - s1 * s1 / n) / max(n - 1, 1)
    return tuple((s1 / n).tolist()), tuple(var.clamp_min(0).sqrt().tolist())


# -- batches ---------------------------------------------------------------------------------
def batches(split: AnySplit, batch_size: int, *, generator: torch.Generator | None = None,
            limit: int = 0, rank: int = 0, world: int = 1, drop_last: bool = False,
            sizes: Sequence[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled (with `generator`) or ordered uint8 batches; each DDP rank takes its own share.

    A split with a random transform (a folder's training split) also gets one seed per image,
    drawn from `generator` after the order (from a fixed one without) and before the ranks
    take their shares: an image's crop then depends on neither rank nor worker count.
    `sizes`: each batch's resolution, for a split that decodes at it (a folder: the training
    step's sampled resolution); in-memory images come as stored and `to_input` resizes them."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if limit:
        order = order[:limit]
    seeds = None
    if split.random_transform:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        seeds = torch.randint(0, 2**62, (len(order),), generator=gen)[rank::world]
    order = order[rank::world]
    last = len(order) - batch_size + 1 if drop_last else len(order)
    starts = range(0, max(last, 0), batch_size)
    chunks = [order[s:s + batch_size] for s in starts]
    seed_chunks = None if seeds is None else [seeds[s:s + batch_size] for s in starts]
    for idx, x in zip(chunks, split.read(chunks, seed_chunks, sizes)):
        yield x, split.labels[idx]


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random shifts of up to `pad` pixels and horizontal flips (uint8 in, uint8 out)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).tolist()
    out = torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(offs)])
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def to_input(x: torch.Tensor, resolution: int, mean: tuple[float, ...], std: tuple[float, ...],
             channels_last: bool) -> torch.Tensor:
    """uint8 images -> normalised float at the requested resolution (train and eval alike)."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    out = (x.float().div_(255) - m) / s
    if out.shape[-1] != resolution:
        out = F.interpolate(out, size=(resolution, resolution), mode="bilinear",
                            align_corners=False, antialias=resolution < out.shape[-1])
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
