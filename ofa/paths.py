"""Where every pipeline artifact lives, named once: the CLI, the DVC stages, the Prefect flows
and the library all ask here (the folders themselves are params: `train.checkpoint_dir`,
`latency.table_dir`, `search.output_dir`, `search.models_dir`, ...)."""

from __future__ import annotations

from pathlib import Path

from ofa.config import Params


def checkpoint(params: Params, phase: str) -> Path:
    """A finished phase's supernet weights."""
    return Path(params.train.checkpoint_dir) / f"{phase}.pt"


def last_checkpoint(params: Params) -> Path:
    """The last shrinking phase's checkpoint: the supernet that specialization uses."""
    return checkpoint(params, params.shrinking_order()[-1])


def resume_state(params: Params, phase: str) -> Path:
    """A phase's last complete epoch (weights and optimizer) while it is still training."""
    return Path(params.train.checkpoint_dir) / ".resume" / f"{phase}.pt"


def training_curves(params: Params) -> Path:
    """Every phase's training curves, one image (the evaluate step draws it)."""
    return Path(params.train.report_dir) / "curves.png"


def scratch_report(params: Params, name: str) -> Path:
    """A from-scratch run's test top-1 and cost (`ofa-cli train-scratch`), beside reports/train."""
    return Path(params.train.report_dir).parent / "scratch" / f"{name}.json"


def train_report(params: Params, phase: str) -> Path:
    """A phase's training metrics (JSON; the per-epoch CSV sits beside it)."""
    return Path(params.train.report_dir) / f"{phase}.json"


def latency_table(params: Params, device: str) -> Path:
    return Path(params.latency.table_dir) / f"{device}.parquet"


def search_result(params: Params, device: str) -> Path:
    return Path(params.search.output_dir) / f"{device}.json"


def export_dir(params: Params, device: str) -> Path:
    """models/<device>/: one folder per constraint and the device's export record."""
    return Path(params.search.models_dir) / device


def export_record(params: Params, device: str) -> Path:
    return export_dir(params, device) / "export.json"
