"""The report's inputs, read and checked before anything is written: export records,
the verification records, the evaluation of min/mid/max subnets, and the runs trained alone
(reports/scratch/)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ofa import paths
from ofa.config import Params
from ofa.contracts import VerificationRows, validate_records
from ofa.errors import OFAError
from ofa.space import SearchSpace, SubnetConfig

VERIFICATION_FORMAT = "ofa-verification/1"
NO_EXPORTS = "no device has exported subnets yet: run `ofa-cli export --device NAME`"


def _finite_only(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def read_json(path: Path, what: str) -> dict:
    """A JSON input, or one OFAError naming `what` and the step that writes it. NaN and
    Infinity are refused here: a contract reads NaN as a missing value, which may pass."""
    try:
        return json.loads(Path(path).read_text(), parse_constant=_finite_only)
    except FileNotFoundError:
        raise OFAError(f"{what} {path} does not exist: run the step that writes it first") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:   # JSONDecodeError is a ValueError
        raise OFAError(f"{what} {path} is not readable JSON ({exc})") from None


def shipped_configs(export_json: Path) -> list[str]:
    """The configs a device's export record ships, in its order."""
    record = read_json(export_json, "export record")
    try:
        return [str(row["config"]) for row in record["chosen"]]
    except (KeyError, TypeError) as exc:
        raise OFAError(f"export record {export_json} lacks {exc}") from None


def read_evaluation(path: Path) -> dict:
    """`reports/evaluate.json` (min/mid/max rows with their test accuracy)."""
    return read_json(path, "evaluation")


def read_scratch_runs(params: Params) -> dict[str, dict]:
    """config -> its run trained alone without distillation (reports/scratch/*.json), for the
    main report's comparison; a file that is not such a report is one OFAError naming it. A
    run on other data (its `data` fingerprint differs from params' data, e.g. augmented) is
    left out: it is no baseline for this supernet."""
    out: dict[str, dict] = {}
    data = params.data.fingerprint()
    folder = paths.scratch_dir(params)
    for path in sorted(folder.glob("scratch-*.json")) if folder.is_dir() else []:
        try:
            run = json.loads(path.read_text())
            cfg = str(SubnetConfig.parse(run["config"]))
            values = [float(run[k]) for k in ("test_acc", "train_seconds")]
            distilled = run["distilled"]
        except (OSError, ValueError, KeyError, TypeError, OFAError) as exc:
            raise OFAError(f"scratch report {path} is not a report of `ofa-cli train-scratch` "
                           f"({exc})") from None
        test_acc, seconds = values
        if not (math.isfinite(test_acc) and math.isfinite(seconds) and 0 <= test_acc <= 1
                and seconds >= 0):
            raise OFAError(f"scratch report {path}: test_acc must be in [0, 1] and "
                           "train_seconds >= 0, both finite")
        if distilled is False and run.get("data", data) == data:
            out[cfg] = run | {"config": cfg}
    return out


def read_verification(params: Params, device: str) -> dict:
    """A device's verification record, held to its contract and to this search space."""
    path = paths.export_dir(params, device) / "verification.json"
    if not path.is_file():
        raise OFAError(f"{path} does not exist: run `ofa-cli export --device {device}`")
    record = read_json(path, "verification record")
    if not isinstance(record, dict) or record.get("format") != VERIFICATION_FORMAT:
        raise OFAError(f"{path} is not a verification record ({VERIFICATION_FORMAT})")
    if record.get("space") != SearchSpace(params.space).fingerprint():
        raise OFAError(f"{path} was verified in another search space; rerun `ofa-cli export "
                       f"--device {device}`")
    try:
        rows = [r for v in record["constraints"] for r in v["candidates"]]
    except (KeyError, TypeError) as exc:
        raise OFAError(f"{path} lacks {exc}") from None
    validate_records(rows, VerificationRows, f"verification record {path}")
    return record
