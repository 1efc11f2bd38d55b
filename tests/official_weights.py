"""Stand-in weights for the paper authors' OFAMobileNetV3 state dict, the same wherever they are
made: the fixture generator (tests/fixtures/official/make_fixture.py, run beside the authors'
package) and tests/test_official.py rebuild them from the key list and a seed.

Pure torch on purpose (it imports neither this project's `ofa` nor the authors'). Every tensor
is drawn from its own generator, seeded from the seed and the key's name, and none is trivial:
kernel transforms are not the identity, BN statistics and affine parameters are random
(variances positive), SE and classifier biases are random.

The scales keep every subnet's activations of order one and its logits dependent on the input
(a random net with ordinary initialisation, and BN statistics that do not fit its activations,
loses the input within a few blocks or blows up): weights that feed an activation get gain
1.7 / sqrt(fan-in), the others 1 / sqrt(fan-in); a kernel transform big->small is scaled by
big/small, so the 3x3, 5x5 and 7x7 kernels carry alike; the residual branches' last BN (blocks
after the first of their stage, 4 per stage in the authors' layout) scales by about 0.3; SE
gates open by about 0.8. Large activations would put SE and h-swish on their knees, where
float32 rounding is amplified a thousandfold.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Iterable, Sequence

import torch


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _residual_branch(key: str) -> bool:
    """A block of the authors' layout that adds to its input: not blocks.0, not a stage's first."""
    m = re.match(r"blocks\.(\d+)\.", key)
    return m is not None and int(m[1]) > 0 and int(m[1]) % 4 != 1


def tensor_for(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The stand-in value of one tensor of the authors' state dict."""
    g, shape = _generator(seed, key), tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.randint(0, 100_000, shape, generator=g, dtype=torch.int64)
    if key.endswith("running_var"):
        return 0.64 + 0.8 * torch.rand(shape, generator=g)
    if key.endswith("running_mean"):
        return 0.03 * torch.randn(shape, generator=g)
    if key.endswith("_matrix"):  # e.g. 7to5_matrix: identity plus a clear perturbation
        small, big = math.isqrt(shape[0]), int(key.rsplit(".", 1)[-1].split("to")[0])
        noise = 0.3 / math.sqrt(shape[0]) * torch.randn(shape, generator=g)
        return big / small * (torch.eye(shape[0]) + noise)
    if len(shape) >= 2:  # conv and linear weights
        linear = any(part in key for part in ("point_linear", "se.fc", "classifier"))
        return (1.0 if linear else 1.7) / math.sqrt(math.prod(shape[1:])) * \
            torch.randn(shape, generator=g)
    if key.endswith("weight"):  # BN scale
        scale = 0.3 if "point_linear" in key and _residual_branch(key) else 1.0
        return scale * (0.8 + 0.4 * torch.rand(shape, generator=g))
    if key.endswith("se.fc.expand.bias"):
        return 1.5 + torch.randn(shape, generator=g)
    if key.endswith("bias"):  # BN shift, SE squeeze and classifier biases
        return 0.03 * torch.randn(shape, generator=g)
    raise ValueError(f"no stand-in rule for {key} {shape}")


def weights_from_keys(keys_and_shapes: Iterable[tuple[str, Sequence[int]]],
                      seed: int) -> dict[str, torch.Tensor]:
    """A state dict, in the given key order, of stand-in values (`tensor_for`)."""
    return {key: tensor_for(key, shape, seed) for key, shape in keys_and_shapes}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: tells whether two machines made the same."""
    h = hashlib.sha256()
    for key, t in state.items():
        flat = t.detach().contiguous().reshape(-1)
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fixture_input(seed: int, batch: int, channels: int, resolution: int) -> torch.Tensor:
    """The fixed input batch at one resolution: a normal float batch, as after normalisation.
    Smooth structure, per-image offsets and scales besides pixel noise: two images of white
    noise alone would pool to nearly the same features (their statistics are the same), so
    the logits would hardly depend on the input."""
    g = torch.Generator().manual_seed(seed * 10_000 + resolution)
    coarse = torch.randn(batch, channels, 8, 8, generator=g)
    coarse = torch.nn.functional.interpolate(coarse, size=(resolution, resolution),
                                             mode="bilinear", align_corners=False)
    fine = torch.randn(batch, channels, resolution, resolution, generator=g)
    offset = torch.randn(batch, channels, 1, 1, generator=g)
    scale = 0.5 + torch.rand(batch, 1, 1, 1, generator=g)
    return offset + scale * (coarse + 0.5 * fine)


CALIB_SEEDS, CALIB_SIZES, CALIB_R = (31, 32, 33), (4, 4, 2), 128  # a short last batch


def calibration_batches() -> list:
    """Three fixed batches at CALIB_R, each around its own mean (pooled and per-batch
    statistics disagree), the last one short (the batches are weighted by their size)."""
    return [fixture_input(seed, n, 3, CALIB_R) * (1 + 0.3 * i) + 0.2 * i
            for i, (seed, n) in enumerate(zip(CALIB_SEEDS, CALIB_SIZES))]
