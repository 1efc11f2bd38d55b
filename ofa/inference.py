"""One evaluation pass over labelled batches, in torch eager or ONNX Runtime: the one place
that choice is made (`train.eval_backend` for `ofa-cli evaluate` and the export,
`predictor.backend` for the accuracy dataset).

Either way BN is folded into the convolutions first (the same function, to float rounding)
and the subnet's BN statistics come from torch (`bn.py`), so the accuracy is the one torch
measures; a near-tie of the logits may flip an image (the tests bound it). ONNX Runtime is
the faster of the two for the many small passes of the accuracy dataset (reports/RESULTS.md).
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Iterable, Sequence

import torch
from torch import nn

from ofa.device import module_device

ORT_BATCH = 128   # rows per ONNX Runtime run (100-128 ran faster than 500 here)

Labelled = Iterable[tuple[torch.Tensor, torch.Tensor]]  # re-iterable, with len()


@torch.no_grad()
def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-only copy with every BN that follows a conv folded into the conv's weights and
    bias: the same function without a pass over every activation per BN. The model itself is
    left as it is."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            seq[i + 1] = nn.Identity()
    return model


@torch.no_grad()
def hits(model: nn.Module, labelled: Labelled) -> torch.Tensor:
    """Per image, whether the model's top-1 is right (torch eager, BN folded)."""
    model = fold_bn(model)
    device = module_device(model)
    out = [model(x.to(device, non_blocking=True)).argmax(1).cpu() == y for x, y in labelled]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def onnx_session(model: nn.Module, example: torch.Tensor, threads: int):
    """An in-memory ONNX Runtime session of `model` (BN folded), `threads` intra-op threads."""
    import onnxruntime as ort

    folded = fold_bn(model).cpu().to(memory_format=torch.contiguous_format)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning, UserWarning))
        torch.onnx.export(folded, (example[:1].contiguous(),), buf, dynamo=False,
                          input_names=["image"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def _session_hits(sess, labelled: Labelled) -> torch.Tensor:
    out = []
    for x, y in labelled:
        for xs, ys in zip(x.split(ORT_BATCH), y.split(ORT_BATCH)):
            logits = sess.run(None, {"image": xs.contiguous().numpy()})[0]
            out.append(torch.from_numpy(logits).argmax(1) == ys)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def split_hits(model: nn.Module, splits: Sequence[Labelled], backend: str,
               threads: int | None = None) -> list[torch.Tensor]:
    """Per split, whether each image's top-1 is right: torch eager or ONNX Runtime
    (`backend`), with one exported session for all the splits of a subnet; ONNX Runtime gets
    `threads` (default: torch's current thread count)."""
    if backend != "onnxruntime":
        return [hits(model, labelled) for labelled in splits]
    example = next((next(iter(labelled))[0] for labelled in splits if len(labelled)), None)
    if example is None:
        return [torch.zeros(0, dtype=torch.bool) for _ in splits]
    sess = onnx_session(model, example, threads or torch.get_num_threads())
    return [_session_hits(sess, labelled) for labelled in splits]


def accuracy(right: torch.Tensor) -> float:
    """The share of right answers (0 for an empty pass)."""
    return int(right.sum()) / max(len(right), 1)
