"""Checkpoints: tensors plus plain metadata, written atomically, loaded with weights_only=True."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ofa.errors import OFAError
from ofa.publish import (atomic_write, atomic_write_text, publish_dir,  # noqa: F401 - shared
                         publish_files, staging_dir)

FORMAT = "ofa-supernet/1"


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


def _on_cpu(state: dict) -> dict:
    """A state dict with CPU tensors (one written on a GPU then reads alike everywhere); a
    CPU one is returned as it is, so its bytes do not change."""
    if all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in state.values()):
        return state
    out = type(state)((k, v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items())
    if hasattr(state, "_metadata"):
        out._metadata = state._metadata  # load_state_dict reads the modules' versions from it
    return out


def save_checkpoint(path: Path, model: dict, meta: dict, optimizer: dict | None = None) -> None:
    model = _on_cpu(model)
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
