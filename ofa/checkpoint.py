"""Checkpoints: tensors plus plain metadata, written atomically, loaded with weights_only=True."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ofa.errors import OFAError

FORMAT = "ofa-supernet/1"


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path), then rename over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file's bytes with its header's keys sorted.

    The library writes the header in hash order, which differs from process to process: the
    same weights gave a different file each time, and DVC reran every stage downstream of an
    unchanged predictor. Offsets in the header are relative to the data, so re-ordering the
    header (padded to 8 bytes, as the format wants) leaves a valid file."""
    from safetensors.torch import save

    raw = save(state, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + raw[8 + n:]


def staging_dir(folder: Path) -> Path:
    """A fresh hidden folder beside `folder`, to fill and then `publish_dir` in its place."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))


def publish_dir(staged: Path, folder: Path) -> None:
    """Put a completely written `staged` folder where `folder` was, by renames only: readers
    see the old folder or the new one, never a mix."""
    os.chmod(staged, 0o755)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(staged, folder)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(path: Path, model: dict, meta: dict, optimizer: dict | None = None) -> None:
    payload = {"format": FORMAT, "meta": meta, "model": model}
    if optimizer is not None:
        payload["optimizer"] = optimizer
    atomic_write(path, lambda p: torch.save(payload, p))


def load_checkpoint(path: Path, space: dict | None = None) -> dict:
    """Load and check a checkpoint; `space` (plain dict) must match the one it was trained on."""
    path = Path(path)
    if not path.is_file():
        raise OFAError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OFAError(f"checkpoint {path} is truncated or not a torch file ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise OFAError(f"checkpoint {path} is not an OFA supernet checkpoint ({FORMAT})")
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("model"), dict):
        raise OFAError(f"checkpoint {path} lacks its metadata or weights")
    if space is not None and payload["meta"].get("space") != space:
        raise OFAError(f"checkpoint {path} was trained on a different search space than "
                       "params.yaml describes; retrain it or restore the matching params")
    return payload
