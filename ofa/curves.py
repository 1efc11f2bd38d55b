"""Training curves as an image (`reports/train/curves.png`): `dvc plots show` draws the CSVs
with vega loaded from a CDN, which is blank offline; this PNG opens anywhere."""

from __future__ import annotations

from pathlib import Path


def plot_training(reports: list[dict], path: Path) -> None:
    """Validation top-1 (largest and smallest subnet of each phase) and training loss against
    epochs run, phase after phase, with the phase boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, loss) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    start = 0
    for rep in reports:
        hist = rep.get("history") or []
        xs = [start + h["epoch"] for h in hist]
        for key, style in (("val_acc_max", "-o"), ("val_acc_min", "--s")):
            pts = [(x, 100 * h[key]) for x, h in zip(xs, hist) if key in h]
            if pts:
                acc.plot(*zip(*pts), style, ms=3, label=f"{rep['phase']} {key[8:]}")
        loss.plot(xs, [h["train_loss"] for h in hist], "-o", ms=3, label=rep["phase"])
        start += len(hist)
        for ax in (acc, loss):
            ax.axvline(start + 0.5, color="0.8", lw=0.8)
    acc.set_ylabel("validation top-1 (%)")
    loss.set_ylabel("training loss")
    loss.set_xlabel("epoch (phases in order)")
    acc.legend(fontsize=7, ncol=3, loc="lower right")
    acc.grid(alpha=0.3)
    loss.grid(alpha=0.3)
    acc.set_title("Progressive shrinking: training curves")
    fig.tight_layout()
    fig.savefig(Path(path), format="png", dpi=100)
    plt.close(fig)
