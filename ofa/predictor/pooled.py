"""A stage-pooled linear predictor: the paper's features with weights tied within each stage.

The paper fits its MLP on 16K measured subnets. With the few hundred a CPU measures in
minutes, the MLP (and a ridge on the same ~100 one-hot features) learns little more than the
mean: every block slot's kernel and expand choice gets its own weight. Summing the one-hot
features over the slots of a stage (how many blocks of the stage use kernel 3, 5, 7 and
expand 3, 4, 6; depth is the total) leaves ~30 features, a linear map of the paper's
encoding. A ridge on them is still a linear function of the paper's features, so it is stored
and used exactly like the MLP: an `AccuracyMLP` with no hidden layer.
"""

from __future__ import annotations

import numpy as np
import torch

from ofa.encoding import GeneLayout
from ofa.predictor.model import AccuracyMLP, ridge_weights


def pooling_matrix(layout: GeneLayout) -> np.ndarray:
    """(n_features, n_pooled) 0/1 matrix: each slot's kernel/expand one-hot summed into its
    stage's counts; the resolution one-hot passes through."""
    nk, ne, nr = len(layout.kernels), len(layout.expands), len(layout.resolutions)
    ns, slots = layout.n_stages, layout.n_slots
    pool = np.zeros((layout.n_features, ns * (nk + ne) + nr))
    for slot in range(slots):
        stage = slot // layout.max_depth
        for k in range(nk):
            pool[slot * nk + k, stage * nk + k] = 1.0
        for e in range(ne):
            pool[slots * nk + slot * ne + e, ns * nk + stage * ne + e] = 1.0
    for r in range(nr):
        pool[slots * (nk + ne) + r, ns * (nk + ne) + r] = 1.0
    return pool


def fit_pooled_ridge(layout: GeneLayout, x: np.ndarray, y: np.ndarray, xv: np.ndarray,
                     yv: np.ndarray) -> tuple[AccuracyMLP, float]:
    """Ridge on the stage-pooled features (alpha picked on the validation split), returned as
    a linear `AccuracyMLP` over the paper's features, and the alpha."""
    pool = pooling_matrix(layout)
    w, b, alpha = ridge_weights(x @ pool, y, xv @ pool, yv)
    net = AccuracyMLP(layout.n_features, 0, 0, b)
    with torch.no_grad():
        net.body[-1].weight.copy_(torch.from_numpy(pool @ w).float()[None, :])
    return net.eval(), alpha
