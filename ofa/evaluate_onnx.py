"""Top-1 through ONNX Runtime (`predictor.backend`): the accuracy dataset's many subnets, the
test and validation passes of `ofa-cli evaluate` and the exported subnets' test accuracy.

The dataset spends most of its time in inference over the validation split. On this 2-core
Xeon (2026-12-01) that pass took 3.5 s per subnet in torch eager at the evaluation batch of
500 (12 subnets) and 1.55 s in ONNX Runtime (16 subnets, another run), plus 0.18 s of export
and session setup; side by side on the same 24 subnets, the whole measurement (with BN
recalibration) took 4.2 s per subnet with torch and 2.8 s with this, with identical
accuracies. The subnet's BN statistics come from torch (`bn.py`), so the accuracy is the one
torch measures, up to float rounding of the logits (a near-tie may flip an image; the tests
bound it).
"""

from __future__ import annotations

import io
import warnings
from typing import Sequence

import torch
from torch import nn

ORT_BATCH = 128   # rows per run: ORT ran 7-15% faster at 100-128 than at 500 here


def onnx_session(model: nn.Module, example: torch.Tensor, threads: int):
    """An in-memory ONNX Runtime session of `model` (BN folded), `threads` intra-op threads."""
    import onnxruntime as ort

    from ofa.evaluate import fold_bn

    folded = fold_bn(model).to(memory_format=torch.contiguous_format)
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


def _session_hits(sess, labelled: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    out = []
    for x, y in labelled:
        for xs, ys in zip(x.split(ORT_BATCH), y.split(ORT_BATCH)):
            logits = sess.run(None, {"image": xs.contiguous().numpy()})[0]
            out.append(torch.from_numpy(logits).argmax(1) == ys)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def split_hits(model: nn.Module, splits: Sequence[list[tuple[torch.Tensor, torch.Tensor]]],
               backend: str, threads: int) -> list[torch.Tensor]:
    """Per split, whether each image's top-1 is right: torch eager (BN folded) or ONNX Runtime
    (`backend`), with one exported session for all the splits of a subnet."""
    if backend != "onnxruntime":
        from ofa.evaluate import hits

        return [hits(model, labelled) for labelled in splits]
    example = next((labelled[0][0] for labelled in splits if labelled), None)
    if example is None:
        return [torch.zeros(0, dtype=torch.bool) for _ in splits]
    sess = onnx_session(model, example, threads)
    return [_session_hits(sess, labelled) for labelled in splits]
