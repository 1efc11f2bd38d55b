"""The house style of the reports' plots: labels, grid, legend, one PNG."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """Label the axes, add grid and legend, write `path` as a PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
