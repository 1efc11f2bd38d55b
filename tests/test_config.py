"""params.yaml is typed and strictly checked; presets overlay it; the ImageNet space builds."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import ROOT
from ofa.config import deep_merge, load_params, params_from_dict, preset, read_yaml
from ofa.errors import OFAError
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace


@pytest.fixture()
def raw() -> dict:
    return copy.deepcopy(read_yaml(ROOT / "params.yaml"))


def _del(d: dict, path: str) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d[k]
    del d[last]


def _set(d: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d[k]
    d[last] = value


def test_defaults_load(raw):
    p = params_from_dict({k: v for k, v in raw.items() if k != "preset"})
    assert p.shrinking_order() == ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2"]
    assert p.data.val_size == 10000 and len(p.space.stages) >= 4


@pytest.mark.parametrize("path", ["space.stages", "train.batch_size", "phases.kernel.lr", "data"])
def test_missing_key_is_named(raw, path):
    _del(raw, path)
    raw.pop("preset")
    with pytest.raises(OFAError, match=f"{path}: missing key"):
        params_from_dict(raw)


@pytest.mark.parametrize("path, value, needle", [
    ("trian", {}, "trian: unknown key"),
    ("phases.kernel.epoch", 3, "phases.kernel.epoch: unknown key"),
    ("space.stages", [{"width": 24, "stride": 1, "act": "relu", "sE": True}], r"space.stages\[0\].sE: unknown key"),
])
def test_misspelled_key_is_named(raw, path, value, needle):
    _set(raw, path, value)
    raw.pop("preset")
    with pytest.raises(OFAError, match=needle):
        params_from_dict(raw)


@pytest.mark.parametrize("path, value, needle", [
    ("phases.kernel.epochs", 0, "phases.kernel.epochs"),
    ("data.val_size", -1, "data.val_size"),
    ("space.stages", [{"width": 24, "stride": 3, "act": "relu", "se": False}], r"space.stages\[0\].stride"),
    ("space.stages", [{"width": 20, "stride": 1, "act": "relu", "se": False}], r"space.stages\[0\].width"),
    ("phases.kernel.kernel", [9], "phases.kernel.kernel"),
    ("phases.kernel.init_from", "nope", "phases.kernel.init_from"),
    ("space.stages", [{"width": 24, "stride": 1, "act": "gelu", "se": False}], "gelu"),
    ("train.batch_size", "big", "train.batch_size: expected an integer"),
    ("space.kernel_choices", [3, 4], "odd"),
])
def test_out_of_range_is_named(raw, path, value, needle):
    _set(raw, path, value)
    raw.pop("preset")
    with pytest.raises(OFAError, match=needle):
        params_from_dict(raw)


def test_unknown_phase_and_preset(params):
    with pytest.raises(OFAError, match="unknown phase 'nope'"):
        params.phase("nope")
    with pytest.raises(OFAError, match="unknown preset"):
        preset("nope")


def test_bad_files(tmp_path):
    with pytest.raises(OFAError, match="does not exist"):
        load_params(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(OFAError, match="not valid YAML"):
        load_params(bad)


def test_preset_key_in_file_selects_overlay(tmp_path, raw):
    import yaml

    raw["preset"] = "smoke"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).data.subset == preset("smoke")["data"]["subset"]
    assert load_params(ROOT / "params.yaml", "smoke").phase("teacher").images_per_epoch < 1000


def test_paper_imagenet_space_builds_and_runs(raw):
    raw.pop("preset")
    p = params_from_dict(deep_merge(raw, preset("imagenet")))
    assert [s.width for s in p.space.stages] == [24, 40, 80, 112, 160]
    space = SearchSpace(p.space)
    torch.manual_seed(0)
    net = OFAMobileNetV3(space).eval()
    with torch.no_grad():
        for cfg in (space.max_config(128), space.min_config(128)):
            assert net(torch.randn(1, 3, 128, 128), cfg).shape == (1, 1000)
