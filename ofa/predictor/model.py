"""The paper's accuracy predictor (an MLP on one-hot features) and a ridge baseline.

The MLP predicts accuracy minus a fixed offset (the training mean), 3 hidden layers of 400
with ReLU, fitted with Adam; the epoch with the best validation RMSE is kept. The ridge
regression on the same features shows in the report what the MLP adds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ofa.checkpoint import atomic_write, safetensors_bytes
from ofa.config import Params
from ofa.config_specialize import PredictorConfig
from ofa.encoding import GeneLayout, onehot_padded, to_genes
from ofa.errors import OFAError
from ofa.seeding import torch_seed
from ofa.space import SearchSpace, SubnetConfig

FORMAT = "ofa-predictor/1"


class AccuracyMLP(nn.Module):
    """The paper's MLP; `skip` adds a linear term of the features (an MLP averaged with a
    linear model is one such net, see `average`)."""

    def __init__(self, n_features: int, hidden: int, layers: int, offset: float,
                 skip: bool = False) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers  # layers 0: a linear model (see pooled.py)
        dims = [n_features] + [hidden] * layers
        body: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*body, nn.Linear(dims[-1], 1, bias=False))
        self.skip = nn.Linear(n_features, 1, bias=False) if skip else None
        self.register_buffer("offset", torch.tensor(float(offset)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x).squeeze(-1) + self.offset
        return out if self.skip is None else out + self.skip(x).squeeze(-1)


@torch.no_grad()
def average(mlp: AccuracyMLP, linear: AccuracyMLP) -> AccuracyMLP:
    """(mlp + linear) / 2 as one net: the MLP's output layer halved, the linear model (no
    hidden layer) as the skip term. Two models that err differently average to a smaller
    error (measured in fit.py's report, `ensemble`)."""
    if linear.layers != 0:
        raise ValueError("average: the second model must be linear (no hidden layer)")
    n_features = linear.body[-1].in_features
    net = AccuracyMLP(n_features, mlp.hidden, mlp.layers, 0.0, skip=True)
    net.body.load_state_dict(mlp.body.state_dict())
    net.body[-1].weight.mul_(0.5)
    net.skip.weight.copy_(0.5 * linear.body[-1].weight)
    net.offset.fill_(0.5 * float(mlp.offset + linear.offset))
    return net.eval()


def packed_forward(net: AccuracyMLP, sink: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """net's eval forward as bare addmm/relu_ on weights transposed once.

    The search calls the predictor ~500 times on ~40 subnets; there nn.Module dispatch and
    the weight transposes are a large share of the time (reports/RESULTS.md).
    With `sink`, the input has one more column (`onehot_padded`) whose weights are zero.
    The weights are snapshotted: call it again after changing the net.
    """
    linears = [m for m in net.body if isinstance(m, nn.Linear)]
    packed = [(m.weight.detach().t().contiguous(),
               None if m.bias is None else m.bias.detach().clone()) for m in linears]
    if sink:
        w, b = packed[0]
        packed[0] = (torch.cat([w, w.new_zeros(1, w.shape[1])]), b)
    offset = float(net.offset)
    skip = None if net.skip is None else net.skip.weight.detach().t().contiguous()
    if skip is not None and sink:
        skip = torch.cat([skip, skip.new_zeros(1, 1)])

    def forward(x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (w, b) in enumerate(packed):
            h = h @ w if b is None else torch.addmm(b, h, w)
            if i < len(packed) - 1:
                h.relu_()
        if skip is not None:
            h = h.add_(x @ skip)
        return h.squeeze(-1) + offset

    return forward


@dataclass
class Predictor:
    """Predicted accuracy of gene batches (the search calls this once per generation)."""

    net: AccuracyMLP
    layout: GeneLayout
    space: SearchSpace

    @cached_property
    def _forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return packed_forward(self.net, sink=True)

    def predict_genes(self, genes: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(onehot_padded(self.layout, genes))
        with torch.inference_mode():
            return self._forward(x).numpy().astype(np.float64)

    def predict(self, configs: Sequence[SubnetConfig]) -> np.ndarray:
        return self.predict_genes(to_genes(self.space, configs))


def fit_mlp(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, pc: PredictorConfig,
            seed: int) -> tuple[AccuracyMLP, list[float]]:
    """Adam on MSE; returns the weights of the epoch with the lowest validation RMSE."""
    gen = torch.Generator().manual_seed(seed)
    with torch_seed(seed):
        net = AccuracyMLP(x.shape[1], pc.hidden, pc.layers, float(y.mean()))
    opt = torch.optim.Adam(net.parameters(), lr=pc.lr, weight_decay=pc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, pc.epochs)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    xvt, yvt = torch.from_numpy(xv).float(), torch.from_numpy(yv).float()
    best, best_state, curve = float("inf"), None, []
    for epoch in range(pc.epochs):
        net.train()
        for i, idx in enumerate(torch.randperm(len(xt), generator=gen).split(pc.batch_size)):
            loss = nn.functional.mse_loss(net(xt[idx]), yt[idx])
            if not math.isfinite(loss.item()):
                raise OFAError(f"the predictor's fit diverged (loss {loss.item()}) at epoch "
                               f"{epoch + 1}, batch {i + 1}; nothing was written; lower "
                               "predictor.lr or check the accuracy dataset")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        net.eval()
        with torch.no_grad():
            rmse = float(torch.sqrt(nn.functional.mse_loss(net(xvt), yvt)))
        curve.append(rmse)
        if rmse < best:
            best, best_state = rmse, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    return net.eval(), curve


def ridge_weights(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
                  alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
                  ) -> tuple[np.ndarray, float, float]:
    """Closed-form ridge with an unpenalised intercept, alpha picked on the validation split:
    (weights, intercept, alpha)."""
    mu = y.mean()
    a = np.hstack([x, np.ones((len(x), 1))])
    av = np.hstack([xv, np.ones((len(xv), 1))])
    best = None
    for alpha in alphas:
        reg = alpha * np.eye(a.shape[1])
        reg[-1, -1] = 0.0
        w = np.linalg.solve(a.T @ a + reg, a.T @ (y - mu))
        rmse = float(np.sqrt(np.mean((av @ w + mu - yv) ** 2)))
        if best is None or rmse < best[0]:
            best = (rmse, alpha, w)
    _, alpha, w = best
    return w[:-1], float(w[-1] + mu), alpha


def fit_ridge(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray,
              alphas: Sequence[float] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)):
    """Ridge on the features as given: (predict function, alpha)."""
    w, b, alpha = ridge_weights(x, y, xv, yv, alphas)
    return (lambda features: features @ w + b), alpha


def predictor_bytes(net: AccuracyMLP, space: SearchSpace) -> bytes:
    """The predictor's safetensors file (its space's fingerprint and shape in the header)."""
    meta = {"format": FORMAT, "space": space.fingerprint(),
            "n_features": str(GeneLayout.of(space).n_features), "hidden": str(net.hidden),
            "layers": str(net.layers), "skip": str(int(net.skip is not None))}
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    return safetensors_bytes(state, meta)


def save_predictor(net: AccuracyMLP, space: SearchSpace, pc: PredictorConfig, path: Path) -> None:
    data = predictor_bytes(net, space)
    atomic_write(Path(path), lambda p: p.write_bytes(data))


def load_predictor(params: Params, path: Path | None = None) -> Predictor:
    """The fitted predictor; refuses a missing, corrupt or other-space file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path or params.predictor.weights_path)
    space = SearchSpace(params.space)
    layout = GeneLayout.of(space)
    if not path.is_file():
        raise OFAError(f"predictor {path} does not exist: run `ofa-cli fit-predictor` first")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise OFAError(f"predictor {path} is not a safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise OFAError(f"predictor {path} is not an OFA accuracy predictor ({FORMAT})")
    if meta.get("space") != space.fingerprint():
        raise OFAError(f"predictor {path} was fitted for another search space; refit it")
    net = AccuracyMLP(layout.n_features, int(meta["hidden"]), int(meta["layers"]), 0.0,
                      skip=meta.get("skip") == "1")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise OFAError(f"predictor {path} does not fit its own metadata ({str(exc)[:120]})") from None
    return Predictor(net.eval(), layout, space)


def metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    from scipy import stats

    return {"rmse_points": float(100 * np.sqrt(np.mean((pred - true) ** 2))),
            "mae_points": float(100 * np.mean(np.abs(pred - true))),
            "kendall_tau": float(stats.kendalltau(pred, true).statistic),
            "spearman": float(stats.spearmanr(pred, true).statistic)}

