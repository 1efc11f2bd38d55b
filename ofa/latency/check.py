"""Check a latency table: time random whole subnets end to end, compare with the prediction.

The check subnets come from their own seed stream (never the calibration subnets that fitted
the overhead) and are timed interleaved, like the table, on the same backend, threads and
batch, by the same rounds rule (`latency.min_seconds`). The calibration subnets are timed
again among them, only to tell whether the machine runs at the speed it ran at when the
table was built (`drift`, their median ratio now/then): a shared machine under someone
else's load can run much slower for minutes (reports/RESULTS.md), which no table predicts.
Up to `latency.check_sessions` sessions are timed and the one whose drift is closest to 1 is
reported; the metrics compare the table with the raw measurements, drift is only reported.
Also: how differently two devices rank subnets (Kendall tau of predicted latencies).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

from ofa import paths
from ofa.checkpoint import atomic_write, atomic_write_text
from ofa.config import Params
from ofa.encoding import to_genes
from ofa.latency.measure import make_runners, time_interleaved, torch_threads
from ofa.latency.model import LatencyModel
from ofa.latency.table import CALIBRATION_SUBNETS, calibration_configs
from ofa.nn.supernet import OFAMobileNetV3
from ofa.seeding import torch_seed
from ofa.space import SearchSpace, SubnetConfig

TARGET_WITHIN = 0.95   # share of check subnets whose prediction is within +-10%
DRIFT_TOLERANCE = 0.03
DRIFT_ROUNDS = 11      # timed rounds of the export's drift measurement (speed_drift)


def report_paths(params: Params, device: str) -> tuple[Path, Path]:
    base = Path(params.latency.report_dir)
    return base / f"{device}.json", base / f"{device}_parity.png"


def check_configs(space: SearchSpace, seed: int, n: int,
                  n_calibration: int = CALIBRATION_SUBNETS) -> list[SubnetConfig]:
    """n random subnets, distinct from each other and from the calibration subnets."""
    taken = {str(c) for c in calibration_configs(space, seed, n_calibration)}
    rng = random.Random(f"latency-check:{seed}")
    out: list[SubnetConfig] = []
    for _ in range(100 * n):                      # bounded: the space holds far more subnets
        cfg = space.sample(rng)
        if str(cfg) not in taken:
            taken.add(str(cfg))
            out.append(cfg)
            if len(out) == n:
                break
    return out


def _parity_plot(pred: np.ndarray, meas: np.ndarray, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if len(meas):
        lo, hi = float(min(pred.min(), meas.min())), float(max(pred.max(), meas.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="y = x")
        ax.fill_between([lo, hi], [0.9 * lo, 0.9 * hi], [1.1 * lo, 1.1 * hi], color="0.9",
                        label="+-10%")
        ax.scatter(meas, pred, s=12)
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "table measured elsewhere:\nno on-device check here", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted by the table (ms)")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


def _json_safe(value):
    """NaN -> null, so the report stays strict JSON (DVC reads it as metrics)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def check_table(params: Params, device: str) -> dict:
    """Predicted vs measured latency of `latency.check_subnets` random subnets; writes
    reports/latency/<device>.json and <device>_parity.png. A table registered with `table:`
    cannot be checked here (NaN metrics, `external: true`)."""
    dev = params.device(device)
    space, lat = SearchSpace(params.space), params.latency
    model = LatencyModel.load(paths.latency_table(params, device), space)
    js, png = report_paths(params, device)
    nan = float("nan")
    if dev.table is not None:
        result = {"device": device, "external": True, "n": 0, "rmse_ms": nan, "rmse_pct": nan,
                  "mean_abs_pct": nan, "within_10pct": nan, "overhead_ms": model.overhead_ms,
                  "note": f"table measured elsewhere ({dev.table}); not timed here", "rows": []}
        _parity_plot(np.array([]), np.array([]), f"latency table: {device}", png)
        atomic_write_text(js, json.dumps(_json_safe(result), indent=2))
        return result
    cfgs = check_configs(space, lat.seed, lat.check_subnets, lat.calibration_subnets)
    cal, cal_then = calibration_record(params, model)
    items = subnet_items(params, device, cfgs + cal, seed=lat.seed + 1)
    best = None
    with torch_threads(dev.threads):
        runners = make_runners(items, dev)
        for attempt in range(lat.check_sessions):
            ms = time_interleaved(runners, lat.warmup, lat.repeats, seed=lat.seed + 1 + attempt,
                                  min_seconds=lat.min_seconds)
            drift = (float(np.median(np.median(ms[len(cfgs):], axis=1) / cal_then))
                     if len(items) > len(cfgs) else nan)
            if best is None or abs(drift - 1) < abs(best[1] - 1):
                best = (ms[:len(cfgs)], drift, attempt + 1)
            if not abs(drift - 1) > DRIFT_TOLERANCE:   # also stops on nan (nothing to compare)
                break
    ms, drift, attempts = best
    meas = np.median(ms, axis=1)
    genes = to_genes(space, cfgs)
    pred, plain = model.predict_genes(genes), model.layer_sum_genes(genes)
    rel, rel_plain = (pred - meas) / meas, (plain - meas) / meas
    result = {"device": device, "external": False, "n": len(cfgs),
              "rmse_ms": float(np.sqrt(np.mean((pred - meas) ** 2))),
              "rmse_pct": float(100 * np.sqrt(np.mean(rel ** 2))),
              "mean_abs_pct": float(100 * np.mean(np.abs(rel))),
              "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
              "target_within_10pct": TARGET_WITHIN,
              "plain_sum_within_10pct": float(np.mean(np.abs(rel_plain) <= 0.10)),
              "overhead_ms": model.overhead_ms, "drift": drift, "attempts": attempts,
              "within_10pct_at_build_speed": (float(np.mean(np.abs(pred * drift - meas)
                                                            <= 0.10 * meas))
                                              if np.isfinite(drift) else nan),
              "measured_min_ms": float(meas.min()), "measured_max_ms": float(meas.max()),
              "rows": [{"config": str(c), "predicted_ms": float(p), "measured_ms": float(m),
                        "spread_ms": float(np.subtract(*np.percentile(t, [90, 10])))}
                       for c, p, m, t in zip(cfgs, pred, meas, ms)]}
    title = (f"latency table check: {device} ({100 * result['within_10pct']:.0f}% within "
             "+-10%)")
    _parity_plot(pred, meas, title, png)
    atomic_write_text(js, json.dumps(_json_safe(result), indent=2))
    return result


def calibration_record(params: Params, model: LatencyModel) -> tuple[list[SubnetConfig],
                                                                     np.ndarray]:
    """The table's calibration subnets and their timings at build time; no subnets when the
    table does not record them all (measured elsewhere, or built with another count)."""
    lat = params.latency
    cal = calibration_configs(SearchSpace(params.space), lat.seed, lat.calibration_subnets)
    then = np.array([row["measured_ms"] for row in model.meta.get("calibration", [])])
    return (cal, then) if len(then) == len(cal) else ([], then)


def subnet_items(params: Params, device: str, cfgs: list[SubnetConfig], seed: int) -> list:
    """(exported subnet, input shape) pairs to time on the device (random-init weights)."""
    dev, space = params.device(device), SearchSpace(params.space)
    with torch_seed(seed):
        net = OFAMobileNetV3(space).eval()
    return [(net.export(c).eval(), (dev.batch_size, space.cfg.in_channels, c.r, c.r))
            for c in cfgs]


def speed_drift(params: Params, device: str) -> float:
    """How long the table's calibration subnets take now against when the table was built
    (median ratio; NaN for a table measured elsewhere). Measured latencies of other steps come
    with it, so a subnet over its limit because the shared machine runs slower is told apart
    from one the table mispriced. At most DRIFT_ROUNDS rounds, never extended to
    `min_seconds`: a median over 24 subnets' ratios needs far fewer samples per subnet than
    one subnet's own timing, and extended rounds were a large share of an export's time
    (reports/RESULTS.md)."""
    dev, lat = params.device(device), params.latency
    model = LatencyModel.load(paths.latency_table(params, device), SearchSpace(params.space))
    cal, then = calibration_record(params, model)
    if dev.table is not None or not cal:
        return float("nan")
    with torch_threads(dev.threads):
        ms = time_interleaved(make_runners(subnet_items(params, device, cal, lat.seed), dev),
                              lat.warmup, min(lat.repeats, DRIFT_ROUNDS), seed=lat.seed + 100)
    return float(np.median(np.median(ms, axis=1) / then))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors (O(n^2); n is a few hundred)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    iu = np.triu_indices(len(a), 1)
    da = np.sign(a[:, None] - a[None, :])[iu]
    db = np.sign(b[:, None] - b[None, :])[iu]
    denom = math.sqrt(float(np.sum(da != 0)) * float(np.sum(db != 0)))
    return float(np.sum(da * db) / denom) if denom else float("nan")


def device_rank_agreement(params: Params, devices: list[str] | None = None, n: int = 500,
                          seed: int = 0, macs: bool = False) -> dict[str, float]:
    """Kendall tau between every two devices' predicted latencies over n random subnets:
    below 1 means the devices order subnets differently (so specializing per device pays).
    With `macs`, MACs join as one more "device": how far FLOPs stand in for latency."""
    space = SearchSpace(params.space)
    names = list(devices or params.devices)
    rng = random.Random(f"latency-rank:{seed}")
    genes = to_genes(space, [space.sample(rng) for _ in range(n)])
    models = {d: LatencyModel.load(paths.latency_table(params, d), space) for d in names}
    pred = {d: m.predict_genes(genes) for d, m in models.items()}
    if macs and models:
        pred["MACs"] = next(iter(models.values())).macs_genes(genes)
        names.append("MACs")
    return {f"{a}~{b}": kendall_tau(pred[a], pred[b])
            for i, a in enumerate(names) for b in names[i + 1:]}
