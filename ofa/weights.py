"""A finished phase's supernet, loaded from its checkpoint: the one way every step (training's
teacher, evaluation, the accuracy dataset, export, the benchmark) gets trained weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ofa.checkpoint import load_checkpoint
from ofa.config import Params, to_dict
from ofa.device import eval_device
from ofa.errors import OFAError
from ofa.nn.supernet import OFAMobileNetV3
from ofa.space import SearchSpace


def load_weights(module: nn.Module, state: dict, path: Path) -> None:
    """load_state_dict, with a mismatch reported as one line naming the checkpoint."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OFAError(f"checkpoint {path} does not fit the supernet params.yaml describes "
                       f"({first[:160]})") from None


def load_supernet(params: Params, path: Path) -> tuple[OFAMobileNetV3, dict]:
    """A supernet with the weights of a finished phase's checkpoint, and its metadata."""
    payload = load_checkpoint(path, to_dict(params.space))
    net = OFAMobileNetV3(SearchSpace(params.space))
    load_weights(net, payload["model"], path)
    return net, payload["meta"]


def load_for_inference(params: Params, path: Path, backend: str | None = None) -> OFAMobileNetV3:
    """load_supernet in the memory format evaluation runs in (`train.channels_last`); with the
    evaluation `backend` named, on the device its passes run on (torch's on `train.device`,
    ONNX Runtime's on the CPU: ofa/device.py)."""
    net, _ = load_supernet(params, Path(path))
    if backend is not None:
        net = net.to(eval_device(params.train.device, backend))
    if params.train.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net
