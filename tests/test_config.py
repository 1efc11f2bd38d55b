"""params.yaml is typed and strictly checked; presets overlay it; the ImageNet space builds."""

from __future__ import annotations

import copy
import re
from dataclasses import replace as dataclasses_replace

import pytest
import torch
import yaml

from conftest import ROOT
from ofa.config import deep_merge, load_params, params_from_dict, preset, read_yaml
from ofa.errors import OFAError
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace


@pytest.fixture()
def raw() -> dict:
    out = copy.deepcopy(read_yaml(ROOT / "params.yaml"))
    out.pop("preset", None)
    return out


def _walk(d, path: str):
    """`a.b[0].c` -> (parent container, last key)."""
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    for k in keys[:-1]:
        d = d[k]
    return d, keys[-1]


def _del(d: dict, path: str) -> None:
    parent, last = _walk(d, path)
    del parent[last]


def _set(d: dict, path: str, value) -> None:
    parent, last = _walk(d, path)
    parent[last] = value


def test_defaults_load(raw):
    p = params_from_dict(raw)
    assert p.shrinking_order() == ["teacher", "kernel", "depth1", "depth2", "expand1", "expand2"]
    assert p.data.val_size == 10000 and p.data.name == "fashion_mnist"
    assert [s.width for s in p.space.stages] == [24, 40, 64, 96]
    assert p.phase("kernel").init_from == "teacher" and p.sampling.rule == "naive_sandwich"
    assert p.phase("kernel").kd_from == "largest" and p.phase("expand2").lr_end == 0.0
    assert load_params(ROOT / "params.yaml") == p


def test_phase_chains_and_branches(raw, tmp_path):
    """A phase that branches off the teacher (an ablation) is not in the shrinking chain, and an
    evaluation summary of either branch lists only that branch's training reports."""
    import json

    from ofa.evaluation_report import training_reports

    raw["train"]["report_dir"] = str(tmp_path)
    raw["phases"]["branch"] = dict(raw["phases"]["expand2"], init_from="teacher")
    p = params_from_dict(raw)
    assert p.chain("branch") == ["teacher", "branch"]
    assert p.chain("expand2") == p.shrinking_order() and "branch" not in p.shrinking_order()
    for name in ("teacher", "kernel", "branch"):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"phase": name, "train_seconds": 1.0, "history": [{"epoch": 1, "train_loss": 0.5}]}))
    assert [r["phase"] for r in training_reports(p)] == ["teacher", "kernel"]
    assert [r["phase"] for r in training_reports(p, "branch")] == ["teacher", "branch"]
    with pytest.raises(OFAError, match="unknown phase 'nope'"):
        p.chain("nope")


@pytest.mark.parametrize("path", ["space.stages", "train.batch_size", "phases.kernel.lr", "data",
                                  "space.stages[1].se", "space.stem.act", "data.augment",
                                  "predictor.n_subnets", "latency.repeats", "search.max_tries",
                                  "orchestration.dask_workers", "devices", "space.bn_eps"])
def test_missing_key_is_named(raw, path):
    _del(raw, path)
    with pytest.raises(OFAError, match=re.escape(f"{path}: missing key")):
        params_from_dict(raw)


@pytest.mark.parametrize("path, value, key", [
    ("trian", {}, "trian"),
    ("phases.kernel.epoch", 3, "phases.kernel.epoch"),
    ("space.stages[0].sE", True, "space.stages[0].sE"),
    ("data.val_sise", 5, "data.val_sise"),
])
def test_misspelled_key_is_named(raw, path, value, key):
    _set(raw, path, value)
    with pytest.raises(OFAError, match=re.escape(f"{key}: unknown key")):
        params_from_dict(raw)


@pytest.mark.parametrize("path, value, needle", [
    ("phases.kernel.epochs", 0, "phases.kernel.epochs: must be positive"),
    ("phases.depth1.lr", -0.1, "phases.depth1.lr: must be in (0, 10], got -0.1"),
    ("data.val_size", -1, "data.val_size: must be positive"),
    ("space.stages[0].stride", 3, "space.stages[0].stride: must be 1 or 2"),
    ("space.stages[2].width", 20, "space.stages[2].width: must be a positive multiple of 8"),
    ("phases.kernel.kernel", [9], "phases.kernel.kernel: values [9] not in the space's choices"),
    ("phases.expand2.expand", [3, 8], "phases.expand2.expand: values [8]"),
    ("phases.kernel.init_from", "nope", "phases.kernel.init_from: unknown phase 'nope'"),
    ("space.stages[0].act", "gelu", "space.stages[0].act: 'gelu' is not one of"),
    ("train.batch_size", "big", "train.batch_size: expected an integer, got 'big'"),
    ("train.channels_last", "yes", "train.channels_last: expected true/false"),
    ("space.kernel_choices", [3, 4], "space.kernel_choices: kernel sizes must be odd"),
    ("space.resolutions", [4, 28], "space.resolutions"),
    ("data.name", "mnist", "data.name: 'mnist'"),
    ("train.final_eval_images", -5, "train.final_eval_images: must be >= 0"),
    ("train.processes", 0, "train.processes: must be in [1, 256]"),
    ("predictor.workers", 0, "predictor.workers: must be in [1, 256]"),
    ("predictor.backend", "tensorrt", "predictor.backend: 'tensorrt' is not one of"),
    ("latency.calibration_subnets", 2, "latency.calibration_subnets: must be at least 3"),
    ("train.momentum", 1.5, "train.momentum: must be in [0, 1)"),
    ("train.weight_decay", -1e-4, "train.weight_decay: must be in [0, 1], got -0.0001"),
    ("space.bn_momentum", 0.0, "space.bn_momentum: must be in (0, 1]"),
    ("space.num_classes", 1, "space.num_classes: must be at least 2"),
    ("space.resolutions", [20, 24, 24], "space.resolutions: must not repeat"),
    ("space.stem.stride", 4, "space.stem/first_block"),
    ("predictor.weight_decay", -1.0, "predictor.weight_decay: must be in [0, 1], got -1.0"),
    ("orchestration.new_devices_cron", "61 * * * *", "orchestration.new_devices_cron: '61"),
    ("orchestration.new_devices_cron", "*/30 * * *", "not a valid 5-field cron"),
    ("constraints.cpu1-b1", {}, "constraints.cpu1-b1: needs at least one limit"),
    ("constraints.cpu1-b1.latency_frac", [0.5, 1.5], "constraints.cpu1-b1.latency_frac[1]: must be in (0, 1]"),
    ("constraints.cpu1-b1.latency_frac", [0.15, 0.15], "constraints.cpu1-b1.latency_frac: repeats"),
    ("constraints.nowhere", {"flops_m": [5.0]}, "constraints.nowhere: no device 'nowhere'"),
    ("devices.cpu1-b1.latency_ms", [1.0], "devices.cpu1-b1.latency_ms: unknown key"),
    ("supernet.record", None, "supernet: give both checkpoint and record"),
    ("supernet.checkpoint", "", "supernet.checkpoint: must be a file path"),
    ("supernet.checkpoint", 3, "supernet.checkpoint: expected"),
])
def test_bad_value_is_named(raw, path, value, needle):
    _set(raw, path, value)
    with pytest.raises(OFAError, match=re.escape(needle)):
        params_from_dict(raw)


def test_optional_keys_may_be_left_out(raw):
    """A device needs only its backend and one limit; params need no sampling section (left out:
    params.yaml's default rule)."""
    raw["devices"]["mini"] = {"backend": "onnxruntime"}
    raw["constraints"]["mini"] = {"flops_m": [5.0]}
    raw.pop("sampling")
    p = params_from_dict(raw)
    assert p.device("mini").threads == 1 and p.sampling.rule == "naive_sandwich"
    assert p.constraints_of("mini").specs() == [("flops_m", 5.0)]


def test_a_device_without_constraints_is_refused(raw):
    raw["devices"]["mini"] = {"backend": "onnxruntime"}
    with pytest.raises(OFAError, match=r"constraints.mini: missing: device 'mini' needs its limits"):
        params_from_dict(raw)


def test_teacher_phase_is_required(raw):
    raw["phases"] = {k: v for k, v in raw["phases"].items() if k == "expand2"}
    raw["phases"]["expand2"].pop("init_from")
    with pytest.raises(OFAError, match="phases.teacher"):
        params_from_dict(raw)


def test_unknown_phase_and_preset(params):
    with pytest.raises(OFAError, match="unknown phase 'nope'"):
        params.phase("nope")
    with pytest.raises(OFAError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(OFAError, match="unknown preset 'nope'"):
        load_params(ROOT / "params.yaml", "nope")


def test_a_preset_may_not_move_the_supernet(tmp_path, monkeypatch):
    """DVC reads the supernet's paths from params.yaml for the stages' deps: an overlay that
    set them would make the stages depend on one file and the code read another."""
    import ofa.config

    fake = tmp_path / "moved.yaml"
    fake.write_text("supernet: {checkpoint: x.pt, record: x.json}\n")
    monkeypatch.setattr(ofa.config, "preset_path", lambda name: fake)
    with pytest.raises(OFAError, match="supernet: set it in params.yaml, not in a preset"):
        preset("moved")


def test_bad_files(tmp_path):
    with pytest.raises(OFAError, match="does not exist"):
        load_params(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(OFAError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(OFAError, match="mapping at the top level"):
        load_params(bad)


def test_deep_merge_merges_mappings_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    out = deep_merge(base, {"a": {"y": [3]}, "c": 4})
    assert out == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2}  # input untouched


def test_smoke_preset(tmp_path, raw):
    smoke = load_params(ROOT / "params.yaml", "smoke")
    full = load_params(ROOT / "params.yaml")
    overlay = preset("smoke")
    assert smoke.data.subset == overlay["data"]["subset"] > 0
    assert smoke.train.batch_size == overlay["train"]["batch_size"]
    for name, ph in smoke.phases.items():
        assert ph.images_per_epoch == overlay["phases"][name]["images_per_epoch"] < 1000
        # only the overlaid keys change: the rest of the phase comes from params.yaml
        assert (ph.kernel, ph.lr, ph.init_from) == (full.phases[name].kernel, full.phases[name].lr,
                                                    full.phases[name].init_from)
    assert smoke.space == full.space
    # the `preset:` key in the file selects the same overlay
    raw["preset"] = "smoke"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path) == smoke


@pytest.fixture(scope="module")
def imagenet():
    return load_params(ROOT / "params.yaml", "imagenet")


def test_imagenet_preset_is_the_papers_space(imagenet):
    sp = imagenet.space
    assert (sp.in_channels, sp.num_classes) == (3, 1000)
    assert (sp.stem.width, sp.stem.stride, sp.stem.act) == (16, 2, "hswish")
    fb = sp.first_block
    assert (fb.width, fb.stride, fb.act, fb.se) == (16, 1, "relu", False)
    assert [s.width for s in sp.stages] == [24, 40, 80, 112, 160]
    assert [s.stride for s in sp.stages] == [2, 2, 2, 1, 2]
    assert [s.act for s in sp.stages] == ["relu", "relu", "hswish", "hswish", "hswish"]
    assert [s.se for s in sp.stages] == [False, True, False, True, True]
    assert (sp.final_expand_width, sp.feature_width) == (960, 1280)
    assert sp.feature_bias is False  # the authors' feature_mix_layer has no bias
    assert sp.resolutions == tuple(range(128, 225, 4))
    assert (sp.kernel_choices, sp.expand_choices, sp.depth_choices) == ((3, 5, 7), (3, 4, 6), (2, 3, 4))
    assert (imagenet.data.name, imagenet.data.image_size) == ("imagefolder", 224)


def test_imagenet_w12_preset_is_the_authors_width_1_2(imagenet):
    """The authors' OFAMobileNetV3(width_mult=1.2): only the widths differ from imagenet's (their
    class is checked against both presets by tests/test_official.py)."""
    w12 = load_params(ROOT / "params.yaml", "imagenet_w12")
    sp = w12.space
    assert (sp.stem.width, sp.first_block.width) == (24, 24)
    assert [s.width for s in sp.stages] == [32, 48, 96, 136, 192]
    assert (sp.final_expand_width, sp.feature_width, sp.feature_bias) == (1152, 1536, False)
    from dataclasses import replace

    def widthless(cfg):
        return replace(cfg, stem=replace(cfg.stem, width=8),
                       first_block=replace(cfg.first_block, width=8),
                       stages=tuple(replace(s, width=8) for s in cfg.stages),
                       final_expand_width=1, feature_width=1)

    assert widthless(sp) == widthless(imagenet.space)
    assert (w12.data, w12.train) == (imagenet.data, imagenet.train)


def test_feature_bias_is_on_by_default_and_left_out_of_artifacts_while_on(raw, imagenet):
    """Checkpoints and fingerprints written before the key existed still match the default."""
    from ofa.config import to_dict

    p = params_from_dict(raw)
    assert raw["space"]["feature_bias"] is True and p.space.feature_bias is True
    del raw["space"]["feature_bias"]
    assert params_from_dict(raw).space == p.space  # optional in params.yaml
    assert "feature_bias" not in to_dict(p.space)
    assert to_dict(imagenet.space)["feature_bias"] is False
    assert SearchSpace(imagenet.space).fingerprint() != SearchSpace(
        dataclasses_replace(imagenet.space, feature_bias=True)).fingerprint()


def test_imagenet_space_builds_and_runs(imagenet):
    space = SearchSpace(imagenet.space)
    assert space.n_slots == 20
    torch.manual_seed(0)
    net = OFAMobileNetV3(space).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for cfg in (space.max_config(128), space.min_config(128)):
            out = net(x, space.validate(cfg))
            assert out.shape == (1, 1000) and torch.isfinite(out).all()
        # 5 stride-2 layers in all (stem + 4 stages): 128 px -> 4 px before the pool
        feats = net.first_block(net.stem(x))
        for block, k, e in net.active_blocks(space.min_config(128)):
            feats = block(feats, k, e)
    assert feats.shape[-2:] == (4, 4) and feats.shape[1] == 160


def _default_mismatches(tp, raw, key: str) -> list[str]:
    """Dotted keys where a dataclass default differs from the value params.yaml gives."""
    import dataclasses
    import typing

    from ofa.config import to_dict

    out = []
    if dataclasses.is_dataclass(tp) and isinstance(raw, dict):
        hints = typing.get_type_hints(tp)
        for f in dataclasses.fields(tp):
            sub = f"{key}.{f.name}".lstrip(".")
            if f.name not in raw:
                continue
            if f.default is not dataclasses.MISSING and not dataclasses.is_dataclass(f.default) \
                    and to_dict(f.default) != raw[f.name]:
                out.append(f"{sub}: default {f.default!r}, params.yaml {raw[f.name]!r}")
            out += _default_mismatches(hints[f.name], raw[f.name], sub)
    elif typing.get_origin(tp) is tuple and isinstance(raw, list):
        out += [m for i, v in enumerate(raw)
                for m in _default_mismatches(typing.get_args(tp)[0], v, f"{key}[{i}]")]
    return out


def test_dataclass_defaults_agree_with_params_yaml(raw):
    """One source of defaults: where a config dataclass has a default and params.yaml sets the
    key, they agree (code that builds a config directly gets what the pipeline runs). Entries
    of `phases:` and `devices:` differ from each other by design, so their optional fields'
    defaults mean "left out" and are not compared."""
    from ofa.config import Params

    assert _default_mismatches(Params, {k: v for k, v in raw.items() if k != "supernet"}, "") == []


def test_params_yaml_names_the_supernet_the_code_derives(raw):
    """`supernet`'s null defaults mean "the trained one"; params.yaml must spell the paths out
    (DVC reads them for the stages' deps), and they must be exactly what null derives."""
    from ofa import paths

    p = load_params(ROOT / "params.yaml")
    bare = dataclasses_replace(p, supernet=type(p.supernet)())  # the nulls: derived
    assert raw["supernet"] == {"checkpoint": paths.last_checkpoint(bare).as_posix(),
                               "record": paths.training_summary(bare).as_posix()}
    assert (paths.supernet(p), paths.supernet_record(p)) == (paths.supernet(bare),
                                                             paths.supernet_record(bare))


def test_a_disagreeing_default_is_found():
    from ofa.config_specialize import PredictorConfig

    wrong = {"n_subnets": PredictorConfig.n_subnets + 1}
    found = _default_mismatches(PredictorConfig, wrong, "predictor")
    assert len(found) == 1 and found[0].startswith("predictor.n_subnets")
