"""Fashion-MNIST from Debian's package, CIFAR-10 and ImageNet-layout folders, splits, batches."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa.config import DataConfig
from ofa.data import augment, batches, load_dataset, load_fashion_mnist, to_input
from ofa.errors import OFAError


@pytest.fixture(scope="module")
def fashion(params):
    return load_dataset(params.data)


def test_fashion_mnist_splits(fashion):
    assert (len(fashion.train), len(fashion.val), len(fashion.test)) == (50000, 10000, 10000)
    for split in (fashion.train, fashion.val, fashion.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64 and split.images.shape[0] == split.labels.shape[0]
        assert set(split.labels.unique().tolist()) == set(range(10))
    assert fashion.num_classes == 10
    assert len(fashion.mean) == len(fashion.std) == 1
    assert 0.2 < fashion.mean[0] < 0.4 and 0.2 < fashion.std[0] < 0.5


def test_validation_is_a_fixed_disjoint_part_of_training(params, fashion):
    train_full, test = load_fashion_mnist(Path(params.data.root))
    assert torch.equal(test.images, fashion.test.images)
    # the split is a seeded permutation of the training images: val = its first val_size
    perm = torch.randperm(len(train_full),
                          generator=torch.Generator().manual_seed(params.data.split_seed))
    val_idx, train_idx = perm[:params.data.val_size], perm[params.data.val_size:]
    assert not set(val_idx.tolist()) & set(train_idx.tolist())
    assert len(set(val_idx.tolist()) | set(train_idx.tolist())) == 60000
    assert torch.equal(fashion.val.images, train_full.images[val_idx])
    assert torch.equal(fashion.val.labels, train_full.labels[val_idx])
    assert torch.equal(fashion.train.images, train_full.images[train_idx])
    assert torch.equal(fashion.train.labels, train_full.labels[train_idx])
    # reproducible across loads; a different split_seed gives a different split
    again = load_dataset(params.data)
    assert torch.equal(again.val.images, fashion.val.images)
    other = load_dataset(dataclasses.replace(params.data, split_seed=1))
    assert not torch.equal(other.val.labels, fashion.val.labels)
    assert len(other.val) == len(fashion.val)


def test_missing_dataset_says_how_to_install(tmp_path):
    with pytest.raises(OFAError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(DataConfig(name="fashion_mnist", root=str(tmp_path / "nowhere")))


def test_wrong_sizes_are_named(params):
    with pytest.raises(OFAError, match="data.image_size"):
        load_dataset(dataclasses.replace(params.data, image_size=32))
    with pytest.raises(OFAError, match="data.val_size"):
        load_dataset(dataclasses.replace(params.data, val_size=60000))


# -- CIFAR-10 (torchvision's python format) ----------------------------------------------------
N_CIFAR = 3
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_fixture(root: Path) -> dict:
    base = root / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name in CIFAR_FILES:
        batch = {b"batch_label": name.encode(),
                 b"data": rng.integers(0, 256, (N_CIFAR, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, N_CIFAR)]}
        (base / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = batch
    return written


def _cifar_cfg(root: Path) -> DataConfig:
    return DataConfig(name="cifar10", root=str(root), val_size=2, image_size=32)


def test_cifar10_python_batches(tmp_path):
    written = _cifar_fixture(tmp_path)
    ds = load_dataset(_cifar_cfg(tmp_path))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (5 * N_CIFAR - 2, 2, N_CIFAR)
    assert ds.train.images.shape == (5 * N_CIFAR - 2, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert len(ds.mean) == len(ds.std) == 3
    # rows of 3072 bytes are R, G, B planes of 32x32
    test = written["test_batch"]
    expect = torch.from_numpy(test[b"data"].reshape(N_CIFAR, 3, 32, 32))
    assert torch.equal(ds.test.images, expect)
    assert ds.test.labels.tolist() == test[b"labels"]
    # train + val hold every training image, each with its own label
    pairs = {(bytes(r), lab) for n in CIFAR_FILES[:5] for r, lab in zip(written[n][b"data"], written[n][b"labels"])}
    got = {(img.reshape(-1).numpy().tobytes(), int(lab))
           for split in (ds.train, ds.val) for img, lab in zip(split.images, split.labels)}
    assert got == pairs


def test_given_mean_and_std_replace_the_computed_ones(tmp_path):
    _cifar_fixture(tmp_path)
    computed = load_dataset(_cifar_cfg(tmp_path))
    given = load_dataset(dataclasses.replace(_cifar_cfg(tmp_path), mean=(0.4, 0.5, 0.6),
                                             std=(0.2, 0.25, 0.3)))
    assert given.mean == (0.4, 0.5, 0.6) and given.std == (0.2, 0.25, 0.3)
    assert torch.equal(given.train.images, computed.train.images) and given.mean != computed.mean


def test_data_the_network_cannot_take_is_named(tmp_path, params):
    _cifar_fixture(tmp_path)
    with pytest.raises(OFAError, match=r"space.in_channels: 1, but the cifar10 images have 3"):
        load_dataset(_cifar_cfg(tmp_path), params.space)
    three = dataclasses.replace(params.space, in_channels=3, num_classes=5)
    with pytest.raises(OFAError, match=r"space.num_classes: 5 is fewer than the data's 10"):
        load_dataset(_cifar_cfg(tmp_path), three)
    assert load_dataset(_cifar_cfg(tmp_path), dataclasses.replace(three, num_classes=10))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_refuses_code_in_pickles(tmp_path, protocol):
    _cifar_fixture(tmp_path)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _Evil(marker), b"labels": []}, protocol=protocol)
    assert b"system" in evil
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil)
    with pytest.raises(OFAError, match=r"data_batch_3.*refusing to load (posix|os)\.system"):
        load_dataset(_cifar_cfg(tmp_path))
    assert not marker.exists()


def test_cifar10_missing_files_are_named(tmp_path):
    _cifar_fixture(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(OFAError, match="data_batch_1..5 and test_batch"):
        load_dataset(_cifar_cfg(tmp_path))


@pytest.mark.parametrize("content", [[1, 2], {b"data": np.zeros((N_CIFAR, 3072), np.uint8), b"labels": [1]}],
                         ids=["not-a-dict", "label-count"])
def test_cifar10_malformed_batch_is_an_ofa_error(tmp_path, content):
    _cifar_fixture(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(OFAError, match="data_batch_2"):
        load_dataset(_cifar_cfg(tmp_path))


# -- ImageNet-layout folders ---------------------------------------------------------------------
COLOURS = {"cat": [(200, 10, 10), (180, 30, 0), (250, 0, 60)],
           "dog": [(0, 40, 220), (20, 0, 160), (0, 90, 255)]}


def _image_folder_fixture(root: Path) -> None:
    from PIL import Image

    for part, n in (("train", 3), ("val", 2)):
        for cls, colours in COLOURS.items():
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                size = (20 + 7 * i, 17 + 5 * i)  # different sizes and aspect ratios
                Image.new("RGB", size, colours[i]).save(root / part / cls / f"{i}.png")


@pytest.mark.parametrize("augment", [False, True])
def test_image_folder(tmp_path, augment):
    _image_folder_fixture(tmp_path)
    ds = load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), val_size=2, image_size=16,
                                 augment=augment))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 2, 4)
    assert ds.train.image_shape == ds.test.image_shape == (3, 16, 16)
    assert ds.train.random_transform == augment and not ds.val.random_transform
    assert ds.test.labels.tolist() == [0, 0, 1, 1] and ds.num_classes == 2
    assert sorted(torch.cat([ds.train.labels, ds.val.labels]).tolist()) == [0, 0, 0, 1, 1, 1]
    # every image (cropped at random or centre-cropped) keeps its colour (RGB order) and its
    # class's label
    for split in (ds.train, ds.val, ds.test):
        seen = 0
        for x, y in batches(split, 3, generator=torch.Generator().manual_seed(0)):
            assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.uint8
            for img, lab in zip(x, y):
                colour = tuple(int(v) for v in img[:, 8, 8])
                assert img.float().std(dim=(1, 2)).max() < 1.0
                assert colour in COLOURS[["cat", "dog"][int(lab)]]
                seen += 1
        assert seen == len(split)


def test_image_folder_needs_the_layout(tmp_path):
    with pytest.raises(OFAError, match="train/<class>/"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), image_size=16))


def test_image_folder_classes_must_match(tmp_path):
    _image_folder_fixture(tmp_path)
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "bird")
    with pytest.raises(OFAError, match="classes"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path), val_size=2, image_size=16))


# -- batches, augmentation, model input ---------------------------------------------------------
def test_batches_shard_across_ranks(fashion):
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    whole = torch.cat([y for _, y in batches(fashion.val, 10, generator=gen(), limit=40)])
    parts = [torch.cat([y for _, y in batches(fashion.val, 5, generator=gen(), limit=40,
                                              rank=r, world=2)]) for r in (0, 1)]
    assert len(whole) == 40 and len(parts[0]) == len(parts[1]) == 20
    assert sorted(torch.cat(parts).tolist()) == sorted(whole.tolist())
    ordered = list(batches(fashion.val, 3, limit=7))
    assert [len(y) for _, y in ordered] == [3, 3, 1]
    assert [len(y) for _, y in batches(fashion.val, 3, limit=7, drop_last=True)] == [3, 3]
    assert torch.equal(ordered[0][0], fashion.val.images[:3])


def test_in_memory_batches_are_the_indexed_images_and_draw_only_the_order(fashion):
    """The in-memory path is unchanged: a batch is images[order[...]] of the seeded order, and
    the generator is left where the order alone leaves it (so later draws are as before)."""
    gen, ref_gen = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    got = list(batches(fashion.val, 6, generator=gen, limit=40, rank=1, world=3, drop_last=True))
    order = torch.randperm(len(fashion.val), generator=ref_gen)[:40][1::3]
    assert len(got) == len(order) // 6
    for k, (x, y) in enumerate(got):
        idx = order[6 * k:6 * k + 6]
        assert torch.equal(x, fashion.val.images[idx]) and torch.equal(y, fashion.val.labels[idx])
    assert torch.equal(gen.get_state(), ref_gen.get_state())


def test_augment_is_seeded_and_keeps_shape(fashion):
    x = fashion.train.images[:4]
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    c = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert not torch.equal(a, x)
    # shifts and flips only move pixels around (and pad with zeros): no new values appear
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0}


@pytest.mark.parametrize("resolution", [20, 28, 32])
@pytest.mark.parametrize("channels_last", [True, False])
def test_to_input(fashion, resolution, channels_last):
    x = fashion.train.images[:3]
    out = to_input(x, resolution, fashion.mean, fashion.std, channels_last=channels_last)
    assert out.shape == (3, 1, resolution, resolution) and out.dtype == torch.float32
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()
    if resolution == 28:  # no resize: plain normalisation
        expect = (x.float() / 255 - fashion.mean[0]) / fashion.std[0]
        torch.testing.assert_close(out, expect)


def test_to_input_channels_last_on_colour_images():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    out = to_input(x, 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), channels_last=True)
    assert out.shape == (2, 3, 24, 24)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    plain = to_input(x, 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), channels_last=False)
    assert plain.is_contiguous()
    torch.testing.assert_close(out, plain)
