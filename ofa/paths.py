"""Where every pipeline artifact lives, named once: the CLI, the DVC stages, the Prefect flows
and the library all ask here (the folders themselves are params: `train.checkpoint_dir`,
`latency.table_dir`, `search.output_dir`, `search.models_dir`, ...)."""

from __future__ import annotations

from pathlib import Path

from ofa.config import Params
from ofa.errors import OFAError, safe_name


def inside(folder: str | Path, kind: str, name: str, suffix: str = "") -> Path:
    """`folder/<name><suffix>`, refusing a name that is not a safe file name or a result that
    would resolve outside `folder` (through a symlink, say)."""
    base = Path(folder)
    path = base / f"{safe_name(kind, name)}{suffix}"
    if path.resolve().parent != base.resolve():
        raise OFAError(f"{kind} {name!r}: {path} resolves outside {base}")
    return path


def checkpoint(params: Params, phase: str) -> Path:
    """A finished phase's supernet weights."""
    return inside(params.train.checkpoint_dir, "phase", phase, ".pt")


def last_checkpoint(params: Params) -> Path:
    """The last shrinking phase's checkpoint: the supernet that specialization uses."""
    return checkpoint(params, params.shrinking_order()[-1])


def resume_state(params: Params, phase: str) -> Path:
    """A phase's last complete epoch (weights and optimizer) while it is still training."""
    return inside(Path(params.train.checkpoint_dir) / ".resume", "phase", phase, ".pt")


def phase_lock(params: Params, phase: str) -> Path:
    """Held while a phase trains (ofa.locks): a second run of it is refused."""
    return inside(Path(params.train.checkpoint_dir) / ".resume", "phase", phase, ".lock")


def training_curves(params: Params) -> Path:
    """Every phase's training curves, one image (the evaluate step draws it)."""
    return Path(params.train.report_dir) / "curves.png"


def scratch_dir(params: Params) -> Path:
    """The from-scratch runs' reports, beside reports/train (kept in git: the main report reads
    them, and they come from runs outside the pipeline)."""
    return Path(params.train.report_dir).parent / "scratch"


def scratch_report(params: Params, name: str) -> Path:
    """A from-scratch run's test top-1 and cost (`ofa-cli train-scratch`)."""
    return inside(scratch_dir(params), "scratch run", name, ".json")


def train_report(params: Params, phase: str) -> Path:
    """A phase's training metrics (JSON; the per-epoch CSV sits beside it)."""
    return inside(params.train.report_dir, "phase", phase, ".json")


def latency_table(params: Params, device: str) -> Path:
    return inside(params.latency.table_dir, "device", device, ".parquet")


def search_result(params: Params, device: str) -> Path:
    return inside(params.search.output_dir, "device", device, ".json")


def export_dir(params: Params, device: str) -> Path:
    """models/<device>/: one folder per constraint and the device's export record."""
    return inside(params.search.models_dir, "device", device)


def export_record(params: Params, device: str) -> Path:
    return export_dir(params, device) / "export.json"
