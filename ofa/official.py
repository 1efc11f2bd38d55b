"""The paper authors' pretrained OFA MobileNetV3 supernets, in and out.

Their package (`ofa`, class `OFAMobileNetV3`; published supernets `ofa_mbv3_d234_e346_k357_w1.0`
and `_w1.2`) stores the same tensors as this project's supernet under other names, in its own
order: `first_conv`, `blocks.0` (the first block), `blocks.N.conv.{inverted_bottleneck,
depth_conv,point_linear}`, `final_expand_layer`, `feature_mix_layer`, `classifier.linear`. The
one difference in function, their feature-mix layer's missing bias, is `space.feature_bias:
false` (the imagenet presets). `official_layout` is the one table of names both ways; the golden
test (tests/test_official.py) checks it against logits of the authors' own code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch

from ofa.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from ofa.config import SpaceConfig, space_from_dict, to_dict
from ofa.errors import OFAError
from ofa.nn.ops import make_divisible
from ofa.nn.supernet import OFAMobileNetV3
from ofa.official_io import read_state_dict, reproducible_torch_bytes, sha256_file
from ofa.paths import import_record
from ofa.provenance import write_import_record
from ofa.space import SearchSpace, SubnetConfig

# The authors' OFAMobileNetV3: base_stage_width (stem, first block, 5 stages, final expand,
# feature mix), each make_divisible(base * width_mult, 8); strides, activations and SE of the
# first block and the stages; the choices of their published supernets.
_BASE = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
_STRIDES, _SE = (1, 2, 2, 2, 1, 2), (False, False, True, False, True, True)
_ACTS = ("relu", "relu", "relu", "hswish", "hswish", "hswish")
PUBLISHED_WIDTHS = (1.0, 1.2)
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_FEATURE_MIX = "feature_mix_layer.conv.weight"


def authors_architecture(width_mult: float) -> dict:
    """The space fields the authors' OFAMobileNetV3(width_mult, ks 3/5/7, e 3/4/6, d 2/3/4)
    fixes, as `to_dict` writes them (classes, resolutions, dropout and BN momentum are free)."""
    w = [make_divisible(b * width_mult, 8) for b in _BASE]
    return {"in_channels": 3,
            "stem": {"width": w[0], "stride": 2, "act": "hswish", "se": False},
            "first_block": {"width": w[1], "stride": _STRIDES[0], "act": _ACTS[0], "se": _SE[0]},
            "stages": [{"width": w[2 + i], "stride": _STRIDES[1 + i], "act": _ACTS[1 + i],
                        "se": _SE[1 + i]} for i in range(5)],
            "final_expand_width": w[7], "feature_width": w[8], "kernel_choices": [3, 5, 7],
            "expand_choices": [3, 4, 6], "depth_choices": [2, 3, 4], "bn_eps": 1e-5,
            "feature_bias": False}


def _flat(value: object, key: str) -> dict[str, object]:
    if isinstance(value, dict):
        return {k: v for name, sub in value.items() for k, v in _flat(sub, f"{key}.{name}").items()}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return {k: v for i, sub in enumerate(value) for k, v in _flat(sub, f"{key}[{i}]").items()}
    return {key: value}


def authors_width(cfg: SpaceConfig, what: str) -> float:
    """The width_mult of the authors' space `cfg` describes; else refused, naming the first field
    that differs from the nearest published one."""
    ours = _flat(to_dict(cfg) | {"feature_bias": cfg.feature_bias}, "space")
    diffs = {}
    for w in PUBLISHED_WIDTHS:
        theirs = _flat(authors_architecture(w), "space")
        diffs[w] = [(k, ours.get(k), v) for k, v in theirs.items() if ours.get(k) != v]
        if not diffs[w]:
            return w
    w = min(PUBLISHED_WIDTHS, key=lambda v: len(diffs[v]))
    key, mine, theirs = diffs[w][0]
    raise OFAError(f"{what} is not the authors' OFAMobileNetV3 space (nearest: width_mult {w}): "
                   f"{key} is {mine!r}, theirs {theirs!r} ({len(diffs[w])} field(s) differ)")


def official_layout(space: SearchSpace) -> list[tuple[str, str]]:
    """(the authors' key, this project's key) of every tensor, in the authors' state-dict order.
    Their block N (N >= 1) is slot N - 1: stage after stage, max-depth slots each."""
    c, out = space.cfg, []

    def conv_bn(theirs: str, bn: str, ours: str, ours_bn: str) -> None:
        out.append((theirs + "weight", ours + "weight"))
        out.extend((bn + n, ours_bn + n) for n in _BN)

    def se(theirs: str, ours: str) -> None:
        out.extend((f"{theirs}se.fc.{t}.{n}", f"{ours}.{o}.{n}")
                   for t, o in (("reduce", "fc1"), ("expand", "fc2")) for n in ("weight", "bias"))

    conv_bn("first_conv.conv.", "first_conv.bn.", "stem.0.", "stem.1.")
    b0, fb = "blocks.0.conv.", "first_block.block."
    conv_bn(b0 + "depth_conv.conv.", b0 + "depth_conv.bn.", fb + "0.0.", fb + "0.1.")
    if c.first_block.se:
        se(b0 + "depth_conv.", fb + "1")
    j = 2 if c.first_block.se else 1
    conv_bn(b0 + "point_linear.conv.", b0 + "point_linear.bn.", f"{fb}{j}.0.", f"{fb}{j}.1.")
    kernels = sorted(c.kernel_choices)
    for slot in range(space.n_slots):
        t, o = f"blocks.{slot + 1}.conv.", f"blocks.{slot}."
        conv_bn(t + "inverted_bottleneck.conv.conv.", t + "inverted_bottleneck.bn.bn.",
                o + "expand.", o + "expand_bn.")
        out.extend((f"{t}depth_conv.conv.{big}to{small}_matrix",
                    f"{o}depthwise.transforms.{big}to{small}")
                   for small, big in zip(kernels, kernels[1:]))
        conv_bn(t + "depth_conv.conv.conv.", t + "depth_conv.bn.bn.",
                o + "depthwise.", o + "depthwise_bn.")
        if c.stages[slot // space.max_depth].se:
            se(t + "depth_conv.", o + "se")
        conv_bn(t + "point_linear.conv.conv.", t + "point_linear.bn.bn.",
                o + "project.", o + "project_bn.")
    conv_bn("final_expand_layer.conv.", "final_expand_layer.bn.",
            "final_expand.0.", "final_expand.1.")
    out.append((_FEATURE_MIX, "classifier.0.weight"))
    out += [("classifier.linear.weight", "classifier.3.weight"),
            ("classifier.linear.bias", "classifier.3.bias")]
    return out


def _project_tensors(space: SearchSpace) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every tensor of this project's supernet (built on the meta device:
    no memory, no initialisation cost)."""
    with torch.device("meta"):
        net = OFAMobileNetV3(space)
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def official_tensors(space: SearchSpace, ours: dict | None = None
                     ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The authors' key -> (shape, dtype) for this space, in their order; refused where the space
    has a tensor their format has no name for (the feature-mix bias: `space.feature_bias`)."""
    ours = _project_tensors(space) if ours is None else ours
    layout = official_layout(space)
    left = [k for k in ours if k not in {o for _, o in layout}]
    if "classifier.0.bias" in left:
        raise OFAError("space.feature_bias is on: the authors' feature_mix_layer has no bias, so "
                       "this supernet has no counterpart in their format")
    if left:
        raise OFAError(f"the space has a tensor the authors' format does not name ({left[0]})")
    out = {}
    for theirs, o in layout:
        shape, dtype = ours[o]
        out[theirs] = (shape + (1, 1) if theirs == _FEATURE_MIX else shape, dtype)
    return out


def _widths(shapes: dict[str, tuple[int, ...]], n_stages: int, depth: int) -> str:
    """The widths (stem/first/stages, final expand, feature) of a state dict in the authors'
    names, from its tensors' shapes."""
    keys = ["first_conv.conv.weight", "blocks.0.conv.point_linear.conv.weight"]
    keys += [f"blocks.{1 + s * depth}.conv.point_linear.conv.conv.weight" for s in range(n_stages)]
    keys += ["final_expand_layer.conv.weight", _FEATURE_MIX]
    w = [str(shapes[k][0]) if len(shapes.get(k, ())) > 0 else "?" for k in keys]
    return f"{'/'.join(w[:-2])}, {w[-2]}, {w[-1]}"


def _published(widths: str) -> str:
    """' (the authors' width_mult w)' where `widths` (as `_widths` writes them) are theirs."""
    for w in PUBLISHED_WIDTHS:
        a = authors_architecture(w)
        fixed = [a["stem"]["width"], a["first_block"]["width"], *(s["width"] for s in a["stages"])]
        head = f", {a['final_expand_width']}, {a['feature_width']}"
        if widths == "/".join(map(str, fixed)) + head:
            return f" (the authors' width_mult {w})"
    return ""


def check_tensors(state: dict[str, torch.Tensor], want: dict, space: SearchSpace, what: str,
                  where: str) -> None:
    """Refuse, in one line naming what differs, a state dict (authors' names) of another space
    than `want` (`official_tensors`) describes."""
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        hint = ""
        if any(k.startswith("input_stem.") for k in extra):
            hint = " (it looks like the authors' OFAResNets)"
        elif "feature_mix_layer.bn.weight" in extra and "final_expand_layer.conv.weight" in missing:
            hint = " (it looks like the authors' OFAProxylessNASNets)"
        first = [f"{len(missing)} missing (first: {missing[0]})"] if missing else []
        first += [f"{len(extra)} unexpected (first: {extra[0]})"] if extra else []
        raise OFAError(f"{what} does not fit {where}: {', '.join(first)} of {len(want)} keys{hint}")
    wrong = [k for k, (shape, _) in want.items() if tuple(state[k].shape) != shape]
    if wrong:
        n, d = space.n_stages, space.max_depth
        found = _widths({k: tuple(t.shape) for k, t in state.items()}, n, d)
        expected = _widths({k: shape for k, (shape, _) in want.items()}, n, d)
        k = wrong[0]
        detail = (f"it holds widths {found}{_published(found)}, the space {expected}"
                  if found != expected else
                  f"{k} has shape {tuple(state[k].shape)}, the space wants {want[k][0]}")
        raise OFAError(f"{what} does not fit {where}: {detail} ({len(wrong)} of {len(want)} "
                       "tensors differ in shape)")
    for k, (_, dtype) in want.items():
        t = state[k]
        if t.dtype != dtype:
            raise OFAError(f"{what}: {k} is {t.dtype}, the space wants {dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise OFAError(f"{what}: {k} holds NaN or infinite values")


def import_official(path: Path, space_cfg: SpaceConfig, output: Path,
                    preset: str | None = None) -> dict:
    """Convert the authors' checkpoint into this project's (`load_supernet` with the same space
    accepts it) and its record beside it (`<output>.json`, what `supernet.record` names);
    returns the metadata written, which says where it came from."""
    path, output = Path(path), Path(output)
    where = f"preset {preset}'s space" if preset else "the space of params.yaml"
    width = authors_width(space_cfg, where)
    if output.is_dir():
        raise OFAError(f"--output {output} is a directory; give the checkpoint file to write")
    if import_record(output) == output:
        raise OFAError(f"--output {output}: its record is written beside it as <name>.json; "
                       "give the checkpoint another suffix (e.g. .pt)")
    space = SearchSpace(space_cfg)
    ours_spec = _project_tensors(space)
    want = official_tensors(space, ours_spec)
    state, info = read_state_dict(path, want)
    check_tensors(state, want, space, f"checkpoint {path}",
                  f"{where} (the authors' width_mult {width})")
    theirs_of = {o: t for t, o in official_layout(space)}
    model = {}
    for ours in ours_spec:  # this project's order
        t = state[theirs_of[ours]].detach().clone().contiguous()
        model[ours] = t.flatten(1) if theirs_of[ours] == _FEATURE_MIX else t
    meta = {"phase": "imported", "complete": True, "epoch": 0, "history": [],
            "space": to_dict(space_cfg),
            "imported": {"source": "the paper authors' OFAMobileNetV3 (once-for-all)",
                         "width_mult": width, "file": str(path.absolute()), **info,
                         **({"preset": preset} if preset else {})}}
    save_checkpoint(output, model, meta)
    write_import_record(output, meta["imported"])
    return meta


def export_official(checkpoint: Path, output: Path) -> dict:
    """Write this project's supernet checkpoint as the authors' file ({"state_dict": ...} in
    their names and order), byte for byte the same for the same tensors; returns a summary."""
    checkpoint, output = Path(checkpoint), Path(output)
    what = f"checkpoint {checkpoint}"
    payload = load_checkpoint(checkpoint)
    try:
        cfg = space_from_dict(payload["meta"].get("space"))
    except OFAError as exc:
        raise OFAError(f"{what} does not record a valid search space ({exc})") from None
    if cfg.feature_bias:
        raise OFAError(f"{what} has space.feature_bias on: the authors' feature_mix_layer has no "
                       "bias, so it has no counterpart in their format (their supernets import "
                       "into the imagenet presets, which set feature_bias: false)")
    width = authors_width(cfg, f"the space of {what}")
    if output.is_dir():
        raise OFAError(f"--output {output} is a directory; give the file to write")
    space = SearchSpace(cfg)
    model = payload["model"]
    ours_spec = _project_tensors(space)
    odd = [k for k in ours_spec if not isinstance(model.get(k), torch.Tensor)] + \
        [k for k in model if k not in ours_spec]
    if odd:
        raise OFAError(f"{what} does not fit the space it records (first: {odd[0]}; "
                       f"{len(odd)} keys missing or unexpected)")
    state = {}
    for theirs, ours in official_layout(space):
        t = model[ours].detach().clone().contiguous()
        state[theirs] = t.reshape(*t.shape, 1, 1) if theirs == _FEATURE_MIX else t
    check_tensors(state, official_tensors(space, ours_spec), space, what, "the space it records")
    atomic_write(output, lambda p: p.write_bytes(reproducible_torch_bytes({"state_dict": state})))
    return {"width_mult": width, "tensors": len(state), "sha256": sha256_file(output)}


def config_from_official(ks: int | Sequence[int], e: int | Sequence[int], d: int | Sequence[int],
                         r: int, space: SearchSpace) -> SubnetConfig:
    """The authors' `set_active_subnet(ks=, e=, d=)` (a kernel and an expand ratio per possible
    block, stage after stage, max-depth each; a depth per stage; a single int for all) as this
    project's config at resolution r: the same order, so the lists carry over as they are."""
    def per(v: int | Sequence[int], n: int) -> tuple[int, ...]:
        return (v,) * n if isinstance(v, int) else tuple(v)

    return space.validate(SubnetConfig(per(ks, space.n_slots), per(e, space.n_slots),
                                       per(d, space.n_stages), r))
