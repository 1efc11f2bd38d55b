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
    """The last shrinking phase's checkpoint: what training here ends with."""
    return checkpoint(params, params.shrinking_order()[-1])


def supernet(params: Params) -> Path:
    """The supernet that evaluation and specialization use: `supernet.checkpoint` (an imported
    one, say), else the last shrinking phase's checkpoint."""
    return _supernet_paths(params)[0]


def supernet_record(params: Params) -> Path:
    """Where that supernet came from (`supernet.record`): the training summary, or an imported
    one's record beside it."""
    return _supernet_paths(params)[1]


def _supernet_paths(params: Params) -> tuple[Path, Path]:
    """`supernet`'s two paths, refused when only one of them is the trained supernet's (a
    moved train.checkpoint_dir or report_dir, or a changed phase chain, left behind)."""
    trained = (last_checkpoint(params), training_summary(params))
    given = params.supernet
    if given.checkpoint is None:
        return trained
    out = (Path(given.checkpoint), Path(given.record))
    if (out[0] == trained[0]) != (out[1] == trained[1]):
        key, want = (("record", trained[1]) if out[0] == trained[0] else ("checkpoint", trained[0]))
        raise OFAError(f"params: supernet.{key}: the other path is the trained supernet's, so "
                       f"this must be {want.as_posix()} (or both name an imported one and its "
                       "record)")
    return out


def import_record(checkpoint: str | Path) -> Path:
    """An imported supernet's record, beside its checkpoint (`ofa-cli import-official`)."""
    return Path(checkpoint).with_suffix(".json")


def resume_state(params: Params, phase: str) -> Path:
    """A phase's last complete epoch (weights and optimizer) while it is still training."""
    return inside(Path(params.train.checkpoint_dir) / ".resume", "phase", phase, ".pt")


def phase_lock(params: Params, phase: str) -> Path:
    """Held while a phase trains (ofa.locks): a second run of it is refused."""
    return inside(Path(params.train.checkpoint_dir) / ".resume", "phase", phase, ".lock")


def training_curves(params: Params) -> Path:
    """Every phase's training curves, one image (the evaluate step draws it)."""
    return Path(params.train.report_dir) / "curves.png"


def training_summary(params: Params) -> Path:
    """The training pipeline's summary (JSON, a DVC metric; its .md beside it), beside
    reports/train so that no phase name can collide with it."""
    return Path(params.train.report_dir).parent / "training.json"


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
