"""Fit what layers timed alone miss: a scale per stage (or one scale and a term in each
layer's input size), and a per-network overhead.

The table's entries are layers timed alone; a network runs them back to back, sharing caches
and converting layouts once. Calibration subnets timed end to end in the same rounds as the
layers fit the difference (`fit_stage_calibration`, else `fit_calibration`); the table folds
it into its entries.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ofa.contracts import SCALE_RANGE
from ofa.latency.layers import LayerSpec


def input_values(spec: LayerSpec) -> float:
    """Millions of input values of one layer per image (channels x height x width)."""
    return spec.in_c * spec.size * spec.size / 1e6


MIN_SUBNETS_FOR_INPUT_TERM = 8   # three terms fitted on fewer subnets would chase noise
MIN_SUBNETS_PER_TERM = 3         # the per-stage fit needs this many subnets per fitted term
STAGE_SCALE_RANGE = SCALE_RANGE  # (0.5, 3): a scale outside it means the fit chased noise
FIXED_GROUP = "stem+head"


def calibration_group(spec: LayerSpec) -> str:
    """Which scale a layer's entry gets: blocks by output width (a stage of the default
    space), the stem and head together (timed alone as they run: scale 1, see below)."""
    return f"blocks-o{spec.out_c}" if spec.kind == "block" else FIXED_GROUP


def fit_stage_calibration(group_sums: np.ndarray, fixed: np.ndarray, measured: np.ndarray
                          ) -> tuple[np.ndarray, float] | None:
    """(scale per group, overhead_ms): measured ~ sum_g scale_g * group_sums[:, g] + fixed +
    overhead, Huber-weighted on relative errors; None with fewer than MIN_SUBNETS_PER_TERM
    subnets per term or a scale outside STAGE_SCALE_RANGE (the caller falls back to
    `fit_calibration`).

    Layers timed alone mis-price some stages more than others (in ONNX Runtime the last
    stage runs slower inside a network than alone, the first faster); a scale per stage
    predicts held-out ONNX Runtime subnets better than one scale, and eager and TorchScript
    as well (reports/RESULTS.md, latency tables). The stem and head depend on the resolution
    only, so a scale of theirs cannot be told from the overhead: they keep their own timing.
    """
    group_sums, fixed = np.asarray(group_sums, float), np.asarray(fixed, float)
    measured = np.asarray(measured, float)
    n, g = group_sums.shape
    if n < MIN_SUBNETS_PER_TERM * (g + 1):
        return None
    x = np.c_[group_sums, np.ones(n)]
    coef = _huber_relative(x, measured - fixed, measured)
    if coef is None:
        return None
    lo, hi = STAGE_SCALE_RANGE
    if not (np.all(coef[:g] >= lo) and np.all(coef[:g] <= hi)):
        return None
    return coef[:g], float(coef[g])


def fit_calibration(sums: np.ndarray, measured: np.ndarray, inputs: np.ndarray | None = None
                    ) -> tuple[float, float, float]:
    """(scale, input_ms_per_m, overhead_ms): measured ~ scale * sum + input_ms_per_m * inputs
    + overhead over the calibration subnets (sum: their layers' raw medians; inputs: their
    layers' input values, millions).

    A layer timed alone pays per call what inside a network it does not, partly in proportion
    to its input (ONNX Runtime converts every timed layer's input into its blocked layout;
    inside a network that happens once): the input term takes that off, and cross-validated
    it beats taking the empty call's median off every layer for ONNX Runtime, changing
    nothing for eager and TorchScript (reports/RESULTS.md, latency tables).
    The scale is a layer's cost inside a network relative to alone (caches, load).
    Huber-weighted least squares on relative errors, so one disturbed timing hardly moves it;
    with fewer than MIN_SUBNETS_FOR_INPUT_TERM subnets, or a fit outside scale [0.5, 3], the
    two-term Theil-Sen line (medians of pairwise slopes, then of residuals) without it.
    """
    sums, measured = np.asarray(sums, float), np.asarray(measured, float)
    if inputs is not None and len(sums) >= MIN_SUBNETS_FOR_INPUT_TERM:
        coef = _huber_relative(np.c_[sums, np.asarray(inputs, float), np.ones_like(sums)],
                               measured, measured)
        if coef is not None and 0.5 <= coef[0] <= 3.0:
            return float(coef[0]), float(coef[1]), float(coef[2])
    i, j = np.triu_indices(len(sums), 1)
    dx = sums[j] - sums[i]
    ok = np.abs(dx) > 1e-3 * max(float(np.abs(sums).max(initial=0.0)), 1e-9)
    scale = float(np.clip(np.median((measured[j] - measured[i])[ok] / dx[ok]), 0.5, 2.0)) \
        if ok.sum() >= 3 else 1.0
    return scale, 0.0, float(np.median(measured - scale * sums))


def _huber_relative(x: np.ndarray, y: np.ndarray, measured: np.ndarray, iterations: int = 30,
                    k: float = 1.345) -> np.ndarray | None:
    """Coefficients minimizing a Huber loss of the relative errors (x @ c - y) / measured,
    by iteratively reweighted least squares (a fixed number of rounds); None if degenerate."""
    a, w = x / measured[:, None], np.ones(len(y))
    b = y / measured
    if np.linalg.matrix_rank(a) < x.shape[1] or not np.isfinite(a).all():
        return None
    coef = None
    for _ in range(iterations):
        coef = np.linalg.lstsq(a * w[:, None], b * w, rcond=None)[0]
        r = a @ coef - b
        s = 1.4826 * float(np.median(np.abs(r - np.median(r)))) + 1e-12
        w = np.sqrt(np.minimum(1.0, k * s / np.maximum(np.abs(r), 1e-12)))
    return coef if coef is not None and np.isfinite(coef).all() else None


def fit_table_calibration(specs: Sequence[LayerSpec], layers: Sequence[Sequence[LayerSpec]],
                          raw: dict[str, float], measured: np.ndarray
                          ) -> tuple[dict[str, float], float, float, str]:
    """(scale per calibration group, input_ms_per_m, overhead_ms, model name) for a table
    whose layers `specs` have raw medians `raw`, from calibration subnets made of `layers`
    and timed `measured`: a scale per stage where they determine one
    (`fit_stage_calibration`), else one scale and the input term (`fit_calibration`)."""
    groups = sorted({calibration_group(s) for s in specs} - {FIXED_GROUP})
    col = {g: i for i, g in enumerate(groups)}
    group_sums = np.zeros((len(layers), len(groups)))
    fixed = np.zeros(len(layers))
    for i, ls in enumerate(layers):
        for s in ls:
            g = calibration_group(s)
            if g == FIXED_GROUP:
                fixed[i] += raw[s.key]
            else:
                group_sums[i, col[g]] += raw[s.key]
    staged = fit_stage_calibration(group_sums, fixed, measured)
    if staged is not None:
        coef, overhead = staged
        return ({FIXED_GROUP: 1.0} | {g: float(c) for g, c in zip(groups, coef)}, 0.0,
                overhead, "stage-scales")
    sums = group_sums.sum(axis=1) + fixed
    inputs = np.array([sum(input_values(s) for s in ls) for ls in layers])
    scale, input_ms, overhead = fit_calibration(sums, measured, inputs)
    return ({g: scale for g in [FIXED_GROUP, *groups]}, input_ms, overhead, "one-scale")
