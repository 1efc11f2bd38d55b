"""Fit the predictor on the accuracy dataset and report how well it ranks unseen subnets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ofa.publish import publish_files
from ofa.config import Params
from ofa.encoding import GeneLayout, encode, to_genes
from ofa.predictor.dataset import read_dataset
from ofa.predictor.model import (average, fit_mlp, fit_ridge, metrics, predictor_bytes,
                                 ridge_weights)
from ofa.predictor.pooled import fit_pooled_ridge, pooling_matrix
from ofa.space import SearchSpace


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Train/validation/test indices; the dataset has one row per distinct config."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = max(1, int(round(fractions[1] * n)))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def _parity(path: Path, true: np.ndarray, preds: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = 100 * float(true.min()) - 0.5, 100 * float(true.max()) + 0.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    for name, p in preds.items():
        ax.scatter(100 * true, 100 * p, s=14, alpha=0.7, label=name)
    ax.set_xlabel("measured validation top-1 (%)")
    ax.set_ylabel("predicted (%)")
    ax.set_title("accuracy predictor on held-out subnets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def measurement_noise(df) -> float | None:
    """How much one subnet's measured accuracy depends on which images were drawn, in points.

    Each half of a subnet's validation images measures its accuracy independently; half the
    spread of the halves' difference is the noise of the whole measurement (None for datasets
    without `accuracy_half`). The share of it that similar subnets do not have in common is
    what no architecture encoding can predict: a predictor's test RMSE against measured
    accuracies rarely goes far below this figure."""
    if "accuracy_half" not in df.columns or df["accuracy_half"].isna().any() or len(df) < 3:
        return None
    a = df["accuracy_half"].to_numpy(dtype=np.float64)
    b = 2 * df["accuracy"].to_numpy(dtype=np.float64) - a
    return float(100 * np.std(a - b, ddof=1) / 2)


RESPLITS = 100  # random re-splits for the linear models' spread


def resplit_metrics(layout: GeneLayout, x: np.ndarray, y: np.ndarray,
                    fractions: tuple[float, ...], seed: int, repeats: int = RESPLITS) -> dict:
    """Test RMSE and Kendall tau of the pooled and the one-hot ridge over `repeats` random
    splits of the same sizes (mean, 10th and 90th percentile). One split's ~30 test subnets
    leave tau uncertain; this says where a model stands. The MLP (and so the average) is left
    out: refitting it 100 times would take minutes (reports/RESULTS.md)."""
    import torch

    runs: dict[str, list[tuple[float, float]]] = {"pooled_ridge": [], "ridge": []}
    for i in range(repeats):
        tr, va, te = split_indices(len(y), fractions, seed + 1 + i)
        net, _ = fit_pooled_ridge(layout, x[tr], y[tr], x[va], y[va])
        with torch.no_grad():
            pooled = net(torch.from_numpy(x[te]).float()).double().numpy()
        ridge, _ = fit_ridge(x[tr], y[tr], x[va], y[va])
        for name, pred in (("pooled_ridge", pooled), ("ridge", ridge(x[te]))):
            m = metrics(pred, y[te])
            runs[name].append((m["rmse_points"], m["kendall_tau"]))
    out: dict = {"repeats": repeats}
    for name, vals in runs.items():
        a = np.array(vals)
        out[name] = {f"{key}_{stat}": float(fn(a[:, j]))
                     for j, key in enumerate(("rmse_points", "kendall_tau"))
                     for stat, fn in (("mean", np.mean), ("p10", lambda v: np.percentile(v, 10)),
                                      ("p90", lambda v: np.percentile(v, 90)))}
    return out


LEARNING_SIZES = (0.25, 0.5, 0.75, 1.0)   # shares of the training split


def learning_curve(layout: GeneLayout, x: np.ndarray, y: np.ndarray,
                   fractions: tuple[float, ...], seed: int, repeats: int = RESPLITS) -> dict:
    """The stage-pooled ridge's mean test RMSE when it sees only part of each resplit's
    training subnets, and its RMSE on the very subnets it was fitted to (all of them, alpha
    from a validation split): whether measuring more subnets would pay, and roughly where
    this model's error levels off."""
    xp = x @ pooling_matrix(layout)
    sizes, rmse = [], []
    for share in LEARNING_SIZES:
        errs = []
        for i in range(repeats):
            tr, va, te = split_indices(len(y), fractions, seed + 1 + i)
            tr = tr[:max(2, int(round(share * len(tr))))]
            w, b, _ = ridge_weights(xp[tr], y[tr], xp[va], y[va])
            errs.append(float(100 * np.sqrt(np.mean((xp[te] @ w + b - y[te]) ** 2))))
        sizes.append(len(tr))
        rmse.append(float(np.mean(errs)))
    tr, va, _ = split_indices(len(y), fractions, seed)
    _, _, alpha = ridge_weights(xp[tr], y[tr], xp[va], y[va])
    w, b, _ = ridge_weights(xp, y, xp, y, (alpha,))
    return {"model": "pooled_ridge", "repeats": repeats, "n_train": sizes,
            "test_rmse_points_mean": rmse,
            "fitted_rmse_points": float(100 * np.sqrt(np.mean((xp @ w + b - y) ** 2)))}


def fit_predictor(params: Params, dataset: Path | None = None) -> dict:
    """Fit the paper's MLP, the stage-pooled ridge, their average and the one-hot ridge
    baseline; save the one of the first three with the lowest validation RMSE as the
    predictor the search uses; write the JSON report (test metrics of all four) and the
    parity plot."""
    import torch

    pc = params.predictor
    df, configs = read_dataset(params, dataset)
    space = SearchSpace(params.space)
    layout = GeneLayout.of(space)
    x = encode(layout, to_genes(space, configs))
    y = df["accuracy"].to_numpy(dtype=np.float64)
    tr, va, te = split_indices(len(y), pc.split, pc.seed)
    mlp, curve = fit_mlp(x[tr], y[tr], x[va], y[va], pc, pc.seed)
    pooled, pooled_alpha = fit_pooled_ridge(layout, x[tr], y[tr], x[va], y[va])
    ridge, alpha = fit_ridge(x[tr], y[tr], x[va], y[va])

    def predict(net, rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x[rows]).float()).double().numpy()

    models = {"mlp": mlp, "pooled_ridge": pooled, "ensemble": average(mlp, pooled)}
    val_rmse = {name: float(100 * np.sqrt(np.mean((predict(net, va) - y[va]) ** 2)))
                for name, net in models.items()}
    chosen = min(val_rmse, key=val_rmse.get)
    preds = {name: predict(net, te) for name, net in models.items()} | {"ridge": ridge(x[te])}
    report = {"n_train": len(tr), "n_val": len(va), "n_test": len(te),
              "accuracy_std_points": float(100 * y.std()),
              "accuracy_range_points": [float(100 * y.min()), float(100 * y.max())],
              "chosen": chosen,
              "predictor": metrics(preds[chosen], y[te]),
              "mlp": metrics(preds["mlp"], y[te]) | {"val_rmse_points": val_rmse["mlp"],
                                                      "best_epoch": int(np.argmin(curve)) + 1},
              "pooled_ridge": metrics(preds["pooled_ridge"], y[te])
              | {"val_rmse_points": val_rmse["pooled_ridge"], "alpha": pooled_alpha},
              "ensemble": metrics(preds["ensemble"], y[te])
              | {"val_rmse_points": val_rmse["ensemble"]},
              "ridge": metrics(preds["ridge"], y[te]) | {"alpha": alpha},
              "constant_mean_rmse_points": float(100 * np.sqrt(np.mean((y[tr].mean() - y[te]) ** 2))),
              "measurement_noise_points": measurement_noise(df),
              "resplits": resplit_metrics(layout, x, y, pc.split, pc.seed),
              "learning_curve": learning_curve(layout, x, y, pc.split, pc.seed),
              "targets": {"rmse_points_max": 0.3, "kendall_tau_min": 0.8}}
    weights = predictor_bytes(models[chosen], space)
    report_path = Path(pc.report_path)
    shown = {"MLP (paper)": preds["mlp"], "stage-pooled ridge": preds["pooled_ridge"],
             "their average": preds["ensemble"], "ridge": preds["ridge"]}
    publish_files({  # all three or none
        Path(pc.weights_path): lambda p: p.write_bytes(weights),
        report_path.with_name(report_path.stem + "_parity.png"): lambda p: _parity(p, y[te], shown),
        report_path: lambda p: p.write_text(json.dumps(report, indent=2))})
    return report
