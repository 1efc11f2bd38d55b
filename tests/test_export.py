"""Export: the three formats agree with the supernet, load back, and never land half-written."""

from __future__ import annotations

import json
import random

import pytest
import torch

from ofa.errors import OFAError
from ofa.evaluate import EvalSettings
from ofa.export import (CONFIG, ONNX, TORCHSCRIPT, WEIGHTS, build_static, export_choice,
                        load_exported, write_model)

SEEDS = [0, 1, 2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny real Fashion-MNIST dataset (first images of each split)."""
    from ofa.config import load_params
    from ofa.data import Dataset, Split, load_dataset
    from tests.conftest import ROOT

    full = load_dataset(load_params(ROOT / "params.yaml").data)
    cut = lambda s, n: Split(s.images[:n], s.labels[:n])  # noqa: E731
    return Dataset(cut(full.train, 64), cut(full.val, 64), cut(full.test, 64), full.mean,
                   full.std, full.num_classes)


@pytest.fixture(scope="module")
def plain_supernet(space):
    """Freshly initialised (logits of ordinary size, as a trained network's are)."""
    from ofa.nn.supernet import OFAMobileNetV3

    torch.manual_seed(0)
    return OFAMobileNetV3(space).eval()


@pytest.mark.parametrize("seed", SEEDS)
def test_exported_formats_match_the_supernet(plain_supernet, space, data, tmp_path, seed):
    cfg = space.sample(random.Random(seed))
    settings = EvalSettings(batch_size=32, calib_images=32, channels_last=False)
    rec = export_choice(plain_supernet, cfg, tmp_path / "m", data, settings,
                        measure_latency=lambda net, r: 1.5, check_images=16)
    folder = tmp_path / "m"
    assert {WEIGHTS, CONFIG, TORCHSCRIPT, ONNX} <= {p.name for p in folder.iterdir()}
    assert rec["onnx_max_abs_diff"] <= 1e-4 and 0.0 <= rec["test_acc"] <= 1.0
    assert rec["measured_latency_ms"] == 1.5
    assert json.loads((folder / CONFIG).read_text())["config_str"] == str(cfg)
    x = torch.randn(3, space.cfg.in_channels, cfg.r, cfg.r)
    loaded = load_exported(space, folder)
    scripted = torch.jit.load(str(folder / TORCHSCRIPT))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), loaded(x))


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_onnx_runtime_counts_what_torch_counts(plain_supernet, space, data, tmp_path, seed):
    """train.eval_backend: onnxruntime runs the val/test passes of `evaluate` and the export's
    test accuracy; the images counted right agree with torch's up to a near-tie."""
    from ofa.evaluate import evaluate_subnet

    cfg = space.sample(random.Random(seed))
    settings = EvalSettings(batch_size=32, calib_images=32, channels_last=True)
    rows = [evaluate_subnet(plain_supernet, cfg, data, settings, ("val", "test"), backend=b)
            for b in ("torch", "onnxruntime")]
    assert {k for k in rows[0] if k.endswith("_acc")} == {"val_acc", "test_acc"}
    for split in ("val_acc", "test_acc"):
        assert abs(rows[0][split] - rows[1][split]) <= 1 / 64 + 1e-9, rows
    recs = [export_choice(plain_supernet, cfg, tmp_path / b, data, settings, check_images=16,
                          backend=b)["test_acc"] for b in ("torch", "onnxruntime")]
    assert recs[0] == rows[0]["test_acc"] and abs(recs[1] - recs[0]) <= 1 / 64 + 1e-9


def test_formats_without_the_feature_bias_match_the_supernet(space, tmp_path):
    """TorchScript, ONNX and safetensors of a subnet whose feature-mix layer has no bias
    (space.feature_bias: false, as the paper authors' supernets)."""
    from dataclasses import replace

    from ofa.nn.supernet import OFAMobileNetV3
    from ofa.space import SearchSpace

    sp = SearchSpace(replace(space.cfg, feature_bias=False))
    torch.manual_seed(0)
    net = OFAMobileNetV3(sp).eval()
    cfg = sp.sample(random.Random(5))
    x = torch.randn(4, sp.cfg.in_channels, cfg.r, cfg.r)
    rec = write_model(net.export(cfg).eval(), cfg, sp, tmp_path / "m", x)
    assert rec["onnx_max_abs_diff"] <= 1e-4
    loaded = load_exported(sp, tmp_path / "m")
    assert "classifier.0.bias" not in loaded.state_dict()
    scripted = torch.jit.load(str(tmp_path / "m" / TORCHSCRIPT))
    with torch.no_grad():
        ref = net(x, cfg)
        torch.testing.assert_close(loaded(x), ref)
        torch.testing.assert_close(scripted(x), ref)


def test_failed_export_keeps_the_previous_model(supernet, space, tmp_path):
    cfg = space.min_config()
    net = supernet.export(cfg).eval()
    x = torch.randn(4, space.cfg.in_channels, cfg.r, cfg.r)
    folder = tmp_path / "latency_ms-3"
    write_model(net, cfg, space, folder, x)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    wrong = torch.randn(4, space.cfg.in_channels + 1, cfg.r, cfg.r)  # export fails on these
    with pytest.raises(Exception):
        write_model(net, cfg, space, folder, wrong)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["latency_ms-3"]  # no temp folders left


def test_loading_into_another_space_is_refused(supernet, space, tmp_path):
    cfg = space.max_config()
    write_model(supernet.export(cfg).eval(), cfg, space, tmp_path / "m",
                torch.randn(2, space.cfg.in_channels, cfg.r, cfg.r))
    meta = json.loads((tmp_path / "m" / CONFIG).read_text())
    meta["space"] = "0" * 16
    (tmp_path / "m" / CONFIG).write_text(json.dumps(meta))
    with pytest.raises(OFAError, match="another search space"):
        load_exported(space, tmp_path / "m")
    with pytest.raises(OFAError, match="missing or unreadable"):
        load_exported(space, tmp_path / "absent")


def test_build_static_refuses_configs_outside_the_space(space):
    cfg = space.max_config()
    bad = type(cfg)(cfg.ks, cfg.e, cfg.d, 99)
    with pytest.raises(OFAError, match="resolution 99"):
        build_static(space, bad)
