"""Fashion-MNIST from Debian's package, CIFAR-10 and ImageNet-layout folders, splits, batches."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from ofa.config import DataConfig
from ofa.data import augment, batches, load_dataset, to_input
from ofa.errors import OFAError


@pytest.fixture(scope="module")
def fashion(params):
    return load_dataset(params.data)


def test_fashion_mnist_splits(fashion):
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (50000, 10000, 10000)
    assert fashion.train.images.dtype == torch.uint8 and fashion.train.images.shape[1:] == (1, 28, 28)
    assert set(fashion.train.labels.unique().tolist()) == set(range(10))
    assert fashion.num_classes == 10


def test_validation_is_disjoint_and_fixed(params, fashion):
    def keys(split):
        return {hash(img.numpy().tobytes()) for img in split.images}

    val, train = keys(fashion.val), keys(fashion.train)
    # Fashion-MNIST has a handful of duplicate images; the split itself is by index
    assert len(val & train) < 50
    again = load_dataset(params.data)
    assert torch.equal(again.val.labels, fashion.val.labels)
    other = load_dataset(DataConfig(**{**params.data.__dict__, "split_seed": 1}))
    assert not torch.equal(other.val.labels, fashion.val.labels)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(OFAError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path)))


def _cifar_fixture(root, n=4):
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (base / name).write_bytes(pickle.dumps(batch))
    return base


def test_cifar10_python_batches(tmp_path):
    _cifar_fixture(tmp_path)
    ds = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=4, image_size=32))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 4)
    assert ds.train.images.shape[1:] == (3, 32, 32) and len(ds.mean) == 3


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_code_in_pickles(tmp_path):
    base = _cifar_fixture(tmp_path)
    (base / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(OFAError, match="refusing to load"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=4, image_size=32))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", 5), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(n):
                size = (20 + 3 * i, 24)
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).save(tmp_path / part / cls / f"{i}.png")
    ds = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), val_size=2, image_size=16))
    assert ds.train.images.shape == (8, 3, 16, 16) and ds.test.images.shape == (4, 3, 16, 16)
    assert sorted(ds.test.labels.tolist()) == [0, 0, 1, 1]


def test_image_folder_needs_the_layout(tmp_path):
    with pytest.raises(OFAError, match="train/<class>/"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16))


def test_batches_shard_across_ranks(fashion):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    whole = torch.cat([y for _, y in batches(fashion.val, 10, generator=gen(), limit=40)])
    parts = [torch.cat([y for _, y in batches(fashion.val, 5, generator=gen(), limit=40,
                                              rank=r, world=2)]) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 20
    assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())


def test_augment_and_resize(fashion):
    x = fashion.train.images[:8]
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, x)
    out = to_input(a, 20, fashion.mean, fashion.std, channels_last=True)
    assert out.shape == (8, 1, 20, 20) and out.is_contiguous(memory_format=torch.channels_last)
