"""Export a chosen subnet for deployment: safetensors + config JSON, TorchScript and ONNX.

Each subnet lands in its own folder, written under a temporary name and renamed into place,
so a failed export never leaves half a model where a deployed one was. The ONNX file is
checked in onnxruntime against PyTorch on real test images before the folder is published.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ofa.checkpoint import publish_dir, safetensors_bytes, staging_dir
from ofa.data import to_input
from ofa.errors import OFAError
from ofa.evaluate import prepare_subnet, top1
from ofa.nn.static import count_macs, count_params
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace, SubnetConfig

ONNX_TOLERANCE = 1e-4
WEIGHTS, CONFIG, TORCHSCRIPT, ONNX = ("model.safetensors", "config.json", "model.torchscript.pt",
                                      "model.onnx")


def build_static(space: SearchSpace, cfg: SubnetConfig) -> nn.Module:
    """The static architecture of `cfg` (weights to be loaded), built from torchvision ops."""
    return OFAMobileNetV3(space).export(space.validate(cfg)).eval()


def load_exported(space: SearchSpace, folder: Path) -> nn.Module:
    """Rebuild an exported subnet from its config and safetensors weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / CONFIG).read_text())
        state = load_file(str(folder / WEIGHTS))
    except (OSError, json.JSONDecodeError, SafetensorError) as exc:
        raise OFAError(f"exported model {folder} is missing or unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("space") != space.fingerprint():
        raise OFAError(f"exported model {folder} comes from another search space")
    try:
        net = build_static(space, SubnetConfig.from_dict(meta["config"]))
        net.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError, OFAError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise OFAError(f"exported model {folder} does not match its own config ({first})") from None
    return net.eval()


def _onnx_max_diff(path: Path, model: nn.Module, x: torch.Tensor) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    return float(abs(got - want).max())


def write_model(model: nn.Module, cfg: SubnetConfig, space: SearchSpace, folder: Path,
                check_inputs: torch.Tensor, extra: dict | None = None) -> dict:
    """Write the three formats into `folder` (atomically) and verify ONNX; returns its record."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    x = check_inputs.contiguous().float()

    folder = Path(folder)
    tmp = staging_dir(folder)
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        (tmp / WEIGHTS).write_bytes(safetensors_bytes(state, {"config": cfg.to_json(),
                                                              "space": space.fingerprint()}))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            traced = torch.jit.trace(model, x[:1])
            traced.save(str(tmp / TORCHSCRIPT))
            torch.onnx.export(model, (x[:1],), str(tmp / ONNX), dynamo=False, input_names=["image"],
                              output_names=["logits"], opset_version=17,
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
        diff = _onnx_max_diff(tmp / ONNX, model, x)
        if not diff <= ONNX_TOLERANCE:
            raise OFAError(f"ONNX export of {cfg} differs from PyTorch by {diff:.2e} "
                           f"(> {ONNX_TOLERANCE:g}); nothing was written to {folder}")
        record = {"config": cfg.to_dict(), "config_str": str(cfg), "space": space.fingerprint(),
                  "onnx_max_abs_diff": diff, "files": [WEIGHTS, TORCHSCRIPT, ONNX],
                  **(extra or {})}
        (tmp / CONFIG).write_text(json.dumps(record, indent=2))
        publish_dir(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def constraint_dirname(spec: str) -> str:
    """A folder name per constraint as the user wrote it, e.g. latency_frac-0.15 or
    flops_m-10.5 (stable across table rebuilds, unlike the resolved limit)."""
    return spec.replace("=", "-")


def export_choice(supernet: nn.Module, cfg: SubnetConfig, folder: Path, data, settings,
                  measure_latency: Callable[[nn.Module, int], float] | None = None,
                  check_images: int = 256, extra: dict | None = None, test_images: int = 0,
                  backend: str = "torch") -> dict:
    """BN-recalibrate, write all formats, verify ONNX on test images, measure accuracy (its
    pass run by `backend`) and latency."""
    net = prepare_subnet(supernet, cfg, data, settings)
    space: SearchSpace = supernet.space
    images = data.test.at(cfg.r).take(torch.arange(min(check_images, len(data.test))))
    x = to_input(images, cfg.r, data.mean, data.std, channels_last=False)
    info = {"test_acc": top1(net, data.test, cfg.r, data, settings, test_images, backend),
            "macs": count_macs(net, cfg.r, space.cfg.in_channels), "params": count_params(net)}
    if measure_latency is not None:
        info["measured_latency_ms"] = float(measure_latency(net, cfg.r))
    return write_model(net, cfg, space, folder, x, {**info, **(extra or {})})
