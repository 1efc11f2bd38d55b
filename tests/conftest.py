"""Shared fixtures: the project's params, its search space, and a supernet whose BN statistics
and kernel transforms are perturbed so that equivalence checks are not trivially true."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ofa.config import Params, deep_merge, load_params, preset, read_yaml
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace
from tests.pipeline_support import repo_copy, smoke_repo  # noqa: F401 - shared fixtures

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


SERIAL_FIXTURES = {"smoke_repo", "repo_copy", "prefect_api"}


def pytest_collection_modifyitems(items) -> None:
    """Mark `serial` what `make test` runs alone after its two-worker part: the slow tests,
    those on the shared smoke repository or a Prefect API (one per worker would be built
    twice), and several processes or a server of their own."""
    for item in items:
        if item.get_closest_marker("slow") or SERIAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="session")
def space(params: Params) -> SearchSpace:
    return SearchSpace(params.space)


def perturb(net: OFAMobileNetV3, seed: int = 0) -> OFAMobileNetV3:
    """Random BN affine parameters and kernel transforms, and BN statistics estimated on random
    images (so every layer's output still depends on the input)."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.reset_running_stats()
            m.momentum = None
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(0.3 * torch.randn(m.weight.shape, generator=g))
        for name, p in net.named_parameters():
            if "transforms" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        cfg = net.space.max_config()
        net.train()
        net(torch.randn(16, net.space.cfg.in_channels, cfg.r, cfg.r, generator=g), cfg)
        for m in norms:
            m.momentum = net.space.cfg.bn_momentum
    return net


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for every flow test (starting one costs ~10 s)."""
    pytest.importorskip("prefect")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def supernet(space: SearchSpace) -> OFAMobileNetV3:
    torch.manual_seed(0)
    return perturb(OFAMobileNetV3(space))


def tiny_params(tmp_path: Path, **phase_overrides) -> Path:
    """A params file for fast real training in tmp_path (smoke preset, a few batches)."""
    raw = deep_merge(read_yaml(ROOT / "params.yaml"), preset("smoke"))
    raw = deep_merge(raw, {
        "data": {"subset": 512},
        "train": {"batch_size": 32, "eval_images": 64, "bn_calib_images": 64, "threads": 1,
                  "final_eval_images": 64, "eval_batch_size": 64,
                  "checkpoint_dir": str(tmp_path / "ckpt"), "report_dir": str(tmp_path / "reports")},
        "phases": {name: {"epochs": 1, "images_per_epoch": 64} for name in
                   ("teacher", "kernel", "depth1", "depth2", "expand1", "expand2")},
    })
    raw = deep_merge(raw, {"phases": phase_overrides})
    raw.pop("supernet")  # the trained one, wherever checkpoint_dir puts it
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


TINY_SPACE = {
    "space": {"stages": [{"width": 16, "stride": 2, "act": "relu", "se": False},
                         {"width": 24, "stride": 2, "act": "hswish", "se": True}],
              "resolutions": [12, 16], "final_expand_width": 64, "feature_width": 64},
    "latency": {"warmup": 1, "repeats": 3, "min_seconds": 0, "check_subnets": 4},
}


LIMITS = ("latency_ms", "latency_frac", "flops_m")


def split_devices(devices: dict) -> tuple[dict, dict]:
    """Tests write a device with its limits in one mapping; params.yaml keeps them apart
    (`devices:` how it runs, `constraints:` what to specialize it for)."""
    return ({d: {k: v for k, v in e.items() if k not in LIMITS} for d, e in devices.items()},
            {d: {k: v for k, v in e.items() if k in LIMITS} for d, e in devices.items()})


def tiny_space_params(tmp: Path, devices: dict | None = None, **overrides) -> Params:
    """Params of a two-stage space at 12/16 px whose artifacts all live in `tmp`."""
    raw = deep_merge(read_yaml(ROOT / "params.yaml"), TINY_SPACE)
    raw = deep_merge(raw, {
        "latency": {"table_dir": str(tmp / "lat"), "report_dir": str(tmp / "rep")},
        "search": {"output_dir": str(tmp / "search"), "models_dir": str(tmp / "models")},
        "predictor": {"dataset_path": str(tmp / "acc.parquet"),
                      "weights_path": str(tmp / "mlp.safetensors"),
                      "report_path": str(tmp / "predictor.json")},
        "train": {"checkpoint_dir": str(tmp / "ckpt"), "report_dir": str(tmp / "train")}})
    devices = devices or {"t1": {"backend": "torch", "threads": 1, "batch_size": 1,
                                 "latency_ms": [1.0]}}
    raw["devices"], raw["constraints"] = split_devices(devices)
    raw.pop("supernet")  # the trained one, wherever checkpoint_dir puts it
    raw = deep_merge(raw, overrides)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """The teacher phase trained once, for real, through the CLI (tiny: a few batches)."""
    from tests.cli_support import train_teacher

    return train_teacher(tmp_path_factory.mktemp("teacher"))
