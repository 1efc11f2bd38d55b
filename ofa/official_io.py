"""Files of the paper authors' supernets: read safely, written reproducibly (ofa/official.py).

Their files are pickles; only `torch.load(..., weights_only=True)` opens them, so a file that
needs anything but tensors and plain containers (code, a class of theirs) is refused.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import warnings
from pathlib import Path

import torch

from ofa.checkpoint import FORMAT
from ofa.errors import OFAError

# The renames of the authors' own loader (`OFAMobileNetV3.load_state_dict`), tried in order
# where a name (after `.mobile_inverted_conv.` -> `.conv.`) is not one of their model's.
_RENAMES = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"),
            (".linear.linear.", ".linear."), (".linear.", ".linear.linear."), ("bn.", "bn.bn."),
            ("conv.weight", "conv.conv.weight"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    why = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln),
               lines[-1] if lines else type(exc).__name__)
    return why[:200]


def _load(path: Path) -> object:
    what = f"checkpoint {path}"
    if not path.exists():
        raise OFAError(f"{what} does not exist")
    if path.is_dir():
        raise OFAError(f"{what} is a directory, not a checkpoint file")
    with warnings.catch_warnings():  # e.g. a pickle protocol note: the CLI shows one line only
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise OFAError(f"{what} is refused by torch.load(weights_only=True), which loads only "
                           f"tensors and plain containers: {_first_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - any failure of torch's reader: a bad file
            raise OFAError(f"{what} is truncated or not a torch file "
                           f"({type(exc).__name__}: {_first_line(exc)})") from None


def authors_name(key: str, known: set[str] | dict) -> str:
    """A key of the authors' file as their current model names it: the old
    `.mobile_inverted_conv.` is `.conv.`, then the first of their loader's renames that applies
    (their alternative nestings of `.bn`, `.conv`, `.linear`); unknown names stay as they are."""
    new = key.replace(".mobile_inverted_conv.", ".conv.")
    if new in known:
        return new
    for old, rep in _RENAMES:
        if old in new:
            new = new.replace(old, rep)
            break
    return new if new in known else key


def read_state_dict(path: Path, known: set[str] | dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors of the authors' file (a bare state dict or {"state_dict": ...}) under their
    current names (`known`), and what was read: sha256, size, wrapping, renamed keys."""
    path = Path(path)
    what = f"checkpoint {path}"
    obj = _load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        raise OFAError(f"{what} is already this project's supernet checkpoint ({FORMAT}): use it "
                       "as it is (export-official writes the authors' format)")
    wrapped = isinstance(obj, dict) and "state_dict" in obj
    sd = obj["state_dict"] if wrapped else obj
    if not isinstance(sd, dict) or not sd:
        raise OFAError(f"{what} holds no state dict (a non-empty mapping of names to tensors, bare "
                       f"or as {{'state_dict': ...}}), but {type(sd).__name__} {str(sd)[:40]!r}")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise OFAError(f"{what} is not a state dict: {str(k)[:80]!r} holds "
                           f"{type(v).__name__}, not a tensor")
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    for k, v in sd.items():
        new = authors_name(k, known)
        if new in state:
            raise OFAError(f"{what}: the keys {source[new]!r} and {k!r} both name {new}")
        state[new], source[new] = v, k
    info = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "wrapped": wrapped,
            "renamed_keys": sum(k != v for k, v in source.items()),
            "old_spelling": any(".mobile_inverted_conv." in k for k in sd)}
    return state, info


def _hash_tensors(obj: object, h: "hashlib._Hash", key: str = "") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _hash_tensors(v, h, f"{key}/{k}")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous().reshape(-1)
        h.update(f"{key}:{t.dtype}:{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"{key}={obj!r}".encode())


def reproducible_torch_bytes(obj: dict) -> bytes:
    """torch.save's bytes of `obj`, the same for the same tensors. Saves differ in two things:
    the archive's folder (the file's name; in memory always 'archive') and the serialization id
    torch draws from the global generator: drawn here from one seeded with a hash of the
    content, in a forked generator state, so the caller's stream is untouched."""
    h = hashlib.sha256()
    _hash_tensors(obj, h)
    buf = io.BytesIO()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int.from_bytes(h.digest()[:8], "little") >> 1)
        torch.save(obj, buf)
    return buf.getvalue()
