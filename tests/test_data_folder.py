"""Image folders stream from disk: the authors' transforms, the same batches as in memory,
bounded resident memory, the real evaluation/export/accuracy-dataset steps, and bad folders."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ofa.config import DataConfig, to_dict
from ofa.data import Dataset, Split, batches, load_dataset, sample_mean_std, to_input
from ofa.data_folder import FolderSplit, load_image, scan_folder
from ofa.errors import OFAError


def make_folder(root: Path, per_class: int, classes: int = 10, size: int = 40,
                val_per_class: int = 2, seed: int = 0) -> Path:
    """train/ and val/ of small JPEGs: blurred 4x4 noise, widths vary (aspect ratios differ)."""
    rng = np.random.default_rng(seed)
    for part, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / part / f"class{c:02d}"
            d.mkdir(parents=True)
            for i in range(n):
                a = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(a).resize((size + i % 9, size), Image.BILINEAR) \
                    .save(d / f"{i}.jpg", quality=85)
    return root


def folder_cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(**{"name": "imagefolder", "root": str(root), "val_size": 20,
                         "image_size": 32, **kw})


def in_memory(split) -> Split:
    """The same images decoded once and held in memory (the evaluation transform)."""
    return Split(split.take(torch.arange(len(split))), split.labels)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"), per_class=8)


# -- transforms: the paper authors' ---------------------------------------------------------
def _odd_images(tmp_path: Path) -> list[Path]:
    """Wide, tall, tiny, grey, palette and alpha images; an extreme ratio forces the crop's
    fallback."""
    g = np.random.default_rng(1)
    specs = {"wide.jpg": ("RGB", (90, 40)), "tall.png": ("RGB", (30, 70)), "tiny.png": ("RGB", (9, 12)),
             "grey.png": ("L", (50, 50)), "pal.png": ("P", (40, 44)), "alpha.png": ("RGBA", (41, 39)),
             "strip.png": ("RGB", (200, 8))}
    out = []
    for name, (mode, (w, h)) in specs.items():
        arr = g.integers(0, 256, (h, w, len(mode) if mode in ("RGB", "RGBA") else 1), dtype=np.uint8)
        img = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr, "L" if mode in ("L", "P") else mode)
        (img.convert("P") if mode == "P" else img).save(tmp_path / name)
        out.append(tmp_path / name)
    return out


@pytest.mark.parametrize("size", [16, 32, 37])
def test_evaluation_transform_is_the_authors_resize_and_centre_crop(tmp_path, size):
    from torchvision import transforms as T  # the authors' (v1) pipeline as the reference

    ref = T.Compose([T.Resize(int(math.ceil(size / 0.875))), T.CenterCrop(size), T.PILToTensor()])
    for path in _odd_images(tmp_path):
        got = load_image(path, size)
        assert got.dtype == torch.uint8 and got.shape == (3, size, size)
        assert torch.equal(got, ref(Image.open(path).convert("RGB"))), path.name


def test_training_transform_is_torchvisions_crop_and_flip_from_its_own_seed(tmp_path):
    from torchvision.transforms import v2

    ref = v2.Compose([v2.RandomResizedCrop(24), v2.RandomHorizontalFlip(), v2.PILToTensor()])
    outs = []
    for path in _odd_images(tmp_path):
        for seed in range(12):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                expect = ref(Image.open(path).convert("RGB"))
            got = load_image(path, 24, seed)
            assert torch.equal(got, expect), (path.name, seed)
            outs.append(got)
    assert len({bytes(x.numpy()) for x in outs}) > len(outs) // 2  # seeds differ: crops differ


# -- the same batches as in memory ----------------------------------------------------------
def test_folder_batches_equal_in_memory_batches(folder):
    ds = load_dataset(folder_cfg(folder))
    assert isinstance(ds.train, FolderSplit) and ds.train.image_shape == (3, 32, 32)
    assert (len(ds.train), len(ds.val), len(ds.test), ds.num_classes) == (60, 20, 20, 10)
    for split in (ds.train, ds.val, ds.test):
        mem = in_memory(split)
        for kw in ({}, {"generator": 5, "limit": 37}, {"generator": 6, "rank": 1, "world": 2},
                   {"generator": 7, "drop_last": True}):
            kw = {k: torch.Generator().manual_seed(v) if k == "generator" else v for k, v in kw.items()}
            a = list(batches(split, 8, **kw))
            kw = {k: torch.Generator().manual_seed(v.initial_seed()) if k == "generator" else v
                  for k, v in kw.items()}
            b = list(batches(mem, 8, **kw))
            assert len(a) == len(b) > 0
            for (xa, ya), (xb, yb) in zip(a, b):
                assert xa.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb)


def test_training_crops_do_not_depend_on_workers_or_ranks(folder):
    split = load_dataset(folder_cfg(folder, augment=True)).train
    assert split.random_transform

    def run(workers: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        s = dataclasses.replace(split, workers=workers)
        gen = torch.Generator().manual_seed(11)
        return torch.cat([x for x, _ in batches(s, 7, generator=gen, rank=rank, world=world)])

    one = run(0)
    assert torch.equal(one, run(2)) and torch.equal(one, run(1))  # bit-reproducible
    assert torch.equal(run(2, rank=1, world=2), one[1::2])  # a rank's crops are the whole run's
    eval_view = dataclasses.replace(split, random_crop=False)
    gen = torch.Generator().manual_seed(11)
    assert not torch.equal(one, torch.cat([x for x, _ in batches(eval_view, 7, generator=gen)]))


def test_mean_std_of_a_folder_come_from_a_bounded_sample_or_from_params(folder):
    ds = load_dataset(folder_cfg(folder))  # 60 training images: the sample takes all of them
    x = in_memory(ds.train).images.double().div(255)
    for got, expect in ((ds.mean, x.mean(dim=(0, 2, 3))), (ds.std, x.std(dim=(0, 2, 3)))):
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), expect, atol=1e-9, rtol=0)
    part_mean, _ = sample_mean_std(ds.train, 10)
    assert part_mean != ds.mean  # bounded: 10 images are not 60
    given = load_dataset(folder_cfg(folder, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    assert given.mean == (0.485, 0.456, 0.406) and given.std == (0.229, 0.224, 0.225)
    with pytest.raises(OFAError, match="data.mean: 1 values for 3-channel"):
        load_dataset(folder_cfg(folder, mean=[0.5], std=[0.2]))


def test_new_data_keys_are_optional_and_left_out_of_fingerprints_at_their_defaults(params):
    assert set(to_dict(params.data)) == {"name", "root", "val_size", "split_seed", "image_size",
                                         "augment", "subset"}
    assert to_dict(dataclasses.replace(params.data, workers=4))["workers"] == 4
    for bad, key in (({"mean": (0.5,)}, "data.std"), ({"std": (0.5,)}, "data.mean"),
                     ({"mean": (0.5,), "std": (0.0,)}, "data.std"),
                     ({"mean": (0.5, 0.5), "std": (0.2,)}, "data.std"), ({"workers": -1}, "data.workers")):
        with pytest.raises(OFAError, match=key):
            dataclasses.replace(params.data, **bad)


# -- bounded memory -------------------------------------------------------------------------
def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def measure_folder_memory(root: str) -> dict[str, int]:
    """Resident-memory growth of this process while streaming every split of `root`, then
    while holding the training split decoded at once; run in a fresh interpreter, since a
    process that ran other tests reuses freed pages and would show neither growth."""
    ds = load_dataset(folder_cfg(Path(root), image_size=64, val_size=100, augment=True,
                                 mean=[0.5] * 3, std=[0.25] * 3))
    for _ in batches(ds.train, 50, generator=torch.Generator().manual_seed(0), limit=300):
        pass  # warm up: workers, imports, the allocator
    base = peak = _rss()
    seen = 0
    for split in (ds.train, ds.val, ds.test):
        for _, y in batches(split, 50, generator=torch.Generator().manual_seed(1)):
            seen += len(y)
            peak = max(peak, _rss())
    held = ds.train.take(torch.arange(len(ds.train)))  # old-style: the split decoded at once
    return {"seen": seen, "streamed": peak - base, "held": _rss() - base,
            "held_bytes": held.numel(), "train": len(ds.train)}


def test_reading_a_whole_folder_keeps_resident_memory_bounded(tmp_path):
    """3000 JPEGs decoded at 64 px are 37 MB as uint8; streaming them all through `batches`
    (train with random crops, val, test) grows a fresh process by a few MB at most, while
    holding the training split decoded at once (as the old loader held every split) grows it
    by more than that split's size (measured here: 0.1 MB streaming everything, 72 MB holding
    the 33 MB training split: the decoded list plus the stacked tensor)."""
    import json
    import subprocess
    import sys

    root = make_folder(tmp_path, per_class=290, size=64, val_per_class=10)
    code = ("import json, sys; from tests.test_data_folder import measure_folder_memory as m; "
            "print(json.dumps(m(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], check=True, text=True,
                         capture_output=True, cwd=Path(__file__).resolve().parents[1])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["seen"] == 3000
    decoded = 3000 * 3 * 64 * 64
    assert r["streamed"] < decoded / 4, f"streaming grew resident memory by {r['streamed'] / 2**20:.1f} MB"
    assert r["held_bytes"] == r["train"] * 3 * 64 * 64
    assert r["held"] > r["held_bytes"] > 4 * r["streamed"], \
        f"holding grew {r['held'] / 2**20:.1f} MB, streaming {r['streamed'] / 2**20:.1f} MB"


@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_are_decoded_at_each_steps_resolution(folder, workers):
    """No resize after decoding: each batch is the random resized crop at its step's size."""
    split = dataclasses.replace(load_dataset(folder_cfg(folder, augment=True)).train,
                                workers=workers)
    sizes = [12, 20, 16, 32, 12, 24, 28, 16, 20]  # 60 images: 9 batches of up to 7
    got = list(batches(split, 7, generator=torch.Generator().manual_seed(3), sizes=sizes))
    assert [tuple(x.shape[1:]) for x, _ in got] == [(3, r, r) for r in sizes]
    gen = torch.Generator().manual_seed(3)  # the same order and per-image seeds as batches draws
    order = torch.randperm(len(split), generator=gen)
    seeds = torch.randint(0, 2**62, (len(order),), generator=gen)
    for k, (x, y) in enumerate(got):
        idx, sd = order[7 * k:7 * k + 7], seeds[7 * k:7 * k + 7]
        expect = torch.stack([load_image(split.path(i), sizes[k], s) for i, s in
                              zip(idx.tolist(), sd.tolist())])
        assert torch.equal(x, expect) and torch.equal(y, split.labels[idx])
    x, _ = next(iter(got))
    assert torch.equal(to_input(x, 12, (0.5,) * 3, (0.25,) * 3, False),
                        (x.float() / 255 - 0.5) / 0.25)  # already at 12 px: not resampled


def test_too_few_batch_sizes_are_refused(folder):
    split = load_dataset(folder_cfg(folder)).train
    with pytest.raises(ValueError, match="2 batch sizes for 8 batches"):
        list(batches(split, 8, sizes=[16, 16]))


# -- the real steps on a folder -------------------------------------------------------------
@pytest.fixture(scope="module")
def folder_params(folder, tmp_path_factory):
    from tests.conftest import tiny_space_params

    return tiny_space_params(tmp_path_factory.mktemp("p"), data={
        "name": "imagefolder", "root": str(folder), "image_size": 32, "val_size": 20,
        "augment": False, "workers": 2}, space={"in_channels": 3})


@pytest.fixture(scope="module")
def tiny_net(folder_params):
    from ofa.nn.supernet import OFAMobileNetV3
    from ofa.space import SearchSpace
    from tests.conftest import perturb

    torch.manual_seed(0)
    return perturb(OFAMobileNetV3(SearchSpace(folder_params.space))).eval()


def test_bn_recalibration_and_evaluation_on_a_folder_equal_the_in_memory_path(folder_params, tiny_net):
    from ofa.evaluate import EvalSettings, InputCache, evaluate_subnet

    data = load_dataset(folder_params.data, folder_params.space)
    s = EvalSettings(batch_size=16, calib_images=40, channels_last=True)
    cache = InputCache(data, s)
    for cfg in (tiny_net.space.max_config(12), tiny_net.space.min_config(16)):
        # the folder decodes at the subnet's resolution (as the authors), not at image_size
        mem = Dataset(*(in_memory(getattr(data, s).at(cfg.r)) for s in ("train", "val", "test")),
                      data.mean, data.std, data.num_classes)
        first, _ = next(iter(cache.split("val", cfg.r)))
        assert torch.equal(first, to_input(mem.val.images[:16], cfg.r, data.mean, data.std, True))
        assert not torch.equal(first, to_input(data.val.take(torch.arange(16)), cfg.r, data.mean,
                                               data.std, True))  # not decoded at 32, resized
        for backend in ("torch", "onnxruntime"):
            row = evaluate_subnet(tiny_net, cfg, data, s, ("val", "test"), inputs=cache,
                                  backend=backend)
            assert 0.0 <= row["val_acc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
            assert row == evaluate_subnet(tiny_net, cfg, mem, s, ("val", "test"), backend=backend)
    # a folder's splits stream on every pass: only the 40 calibration images per resolution
    # are kept (an ImageNet split held as floats would not fit in memory)
    assert {key[0] for key in cache._memo} == {"calibration"}


def test_calibration_with_the_training_transform_is_seeded(folder_params, tiny_net):
    """With data.augment a folder's training split (so BN calibration, as the paper authors')
    uses random crops; the calibration sample is still the same every time."""
    from ofa.evaluate import EvalSettings, calibration_inputs

    data = load_dataset(dataclasses.replace(folder_params.data, augment=True))
    s = EvalSettings(batch_size=16, calib_images=40, channels_last=False)
    a, b = calibration_inputs(data, 16, s), calibration_inputs(data, 16, s)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_accuracy_dataset_and_export_on_a_folder(folder_params, tiny_net, tmp_path):
    from ofa.evaluate import EvalSettings
    from ofa.export import export_choice
    from ofa.predictor.dataset import measure_configs, sample_configs

    data = load_dataset(folder_params.data, folder_params.space)
    s = EvalSettings(batch_size=16, calib_images=32, channels_last=False)
    configs = sample_configs(tiny_net.space, 3, seed=0)
    rows = measure_configs(tiny_net, configs, data, s, val_images=20)
    assert [r["config"] for r in rows] == [str(c) for c in configs]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    rec = export_choice(tiny_net, configs[1], tmp_path / "m", data, s, check_images=8, test_images=20)
    assert rec["onnx_max_abs_diff"] <= 1e-4 and 0.0 <= rec["test_acc"] <= 1.0


def test_data_gate_on_a_folder_checks_a_sample_and_digests_the_file_list(folder, tmp_path):
    pytest.importorskip("great_expectations")
    from ofa.validation import data_manifest, validate_raw_data

    cfg = folder_cfg(folder, mean=[0.5] * 3, std=[0.25] * 3)
    data = load_dataset(cfg)
    res = validate_raw_data(data, tmp_path, 10, cfg.val_size)
    assert res["success"] and any(r["kwargs"].get("column") == "read_error" for r in res["results"])
    manifest = data_manifest(data)
    assert manifest["train"]["images"] == 60 and manifest["val"]["shape"] == [3, 32, 32]
    assert manifest == data_manifest(load_dataset(cfg))
    target = Path(data.test.path(0))
    target.write_bytes(target.read_bytes() + b"\0")  # one more byte: a new digest
    assert data_manifest(load_dataset(cfg))["test"]["sha256"] != manifest["test"]["sha256"]


# -- bad folders ----------------------------------------------------------------------------
def test_a_folder_without_classes_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(OFAError, match="has no class folders"):
        load_dataset(folder_cfg(tmp_path))
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(OFAError, match="no valid file"):
        load_dataset(folder_cfg(tmp_path))


def test_val_classes_must_equal_trains(tmp_path):
    make_folder(tmp_path, per_class=3, classes=3)
    (tmp_path / "val" / "class02").rename(tmp_path / "val" / "class09")
    with pytest.raises(OFAError, match=r"other classes than train/: missing \['class02'\], "
                                       r"extra \['class09'\]"):
        load_dataset(folder_cfg(tmp_path, val_size=2))


def test_an_unreadable_image_stops_with_one_line_naming_it(tmp_path):
    make_folder(tmp_path, per_class=4, classes=3)
    bad = tmp_path / "val" / "class01" / "1.jpg"
    bad.write_bytes(b"not an image")
    split = scan_folder(tmp_path / "val", 16, workers=2)
    with pytest.raises(OFAError) as info:
        list(batches(split, 2))
    assert str(info.value).startswith(f"cannot read image {bad}") and "\n" not in str(info.value)
    with pytest.raises(OFAError, match="cannot read image"):
        split.take(torch.arange(len(split)))


def test_the_cli_reports_an_unreadable_image_as_one_error_line(tmp_path):
    from tests.cli_support import assert_clean_error, cli, params_dict, write_params

    root = make_folder(tmp_path / "imgs", per_class=4, classes=3)
    (root / "train" / "class02" / "3.jpg").write_bytes(b"\xff\xd8 truncated")
    raw = params_dict(tmp_path, {"data": {"name": "imagefolder", "root": str(root),
                                          "image_size": 16, "val_size": 2, "subset": 0},
                                 "space": {"in_channels": 3}})
    params = write_params(tmp_path, raw)
    proc = cli(["--params", str(params), "validate", "data"], cwd=tmp_path)
    assert proc.returncode == 2
    assert_clean_error(proc, "cannot read image", "3.jpg")
