"""`ofa-cli`, recording which params keys the command reads (for tests/test_records.py).

The smoke-pipeline fixture puts this first on DVC's PATH as `ofa-cli`: each stage command then
writes `$OFA_TRACE_DIR/<pid>.json` with its arguments and the dotted keys it read, so the test
can compare them with the stage's declared `params`. Reads are recorded on the loaded params
objects only (navigating a section or a mapping of phases/devices is not a read of a value).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
from pathlib import Path

from ofa import config, config_space, config_specialize

KEYS: dict[int, str] = {}
READS: set[str] = set()
KEEP: list = []  # the indexed objects stay alive, so their ids are never reused


def _index(obj, key: str) -> None:
    if dataclasses.is_dataclass(obj):
        KEYS[id(obj)] = key
        KEEP.append(obj)
        for f in dataclasses.fields(obj):
            _index(object.__getattribute__(obj, f.name), f"{key}.{f.name}".lstrip("."))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _index(v, f"{key}.{k}")
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            _index(v, key)


def _navigation(value) -> bool:
    if dataclasses.is_dataclass(value):
        return True
    if isinstance(value, dict):
        return any(dataclasses.is_dataclass(v) for v in value.values())
    if isinstance(value, tuple):
        return any(dataclasses.is_dataclass(v) for v in value)
    return False


def _recording(cls) -> None:
    names = {f.name for f in dataclasses.fields(cls)}

    def getattribute(self, name):
        value = object.__getattribute__(self, name)
        if name in names and (key := KEYS.get(id(self))) is not None and not _navigation(value):
            READS.add(f"{key}.{name}".lstrip("."))
        return value

    cls.__getattribute__ = getattribute


def _install() -> None:
    for module in (config, config_space, config_specialize):
        for obj in vars(module).values():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                    and obj.__module__ == module.__name__):
                _recording(obj)
    original = config.load_params

    def load_params(*args, **kwargs):
        params = original(*args, **kwargs)
        _index(params, "")
        return params

    config.load_params = load_params


def _write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{os.getpid()}.json").write_text(json.dumps(
        {"argv": sys.argv[1:], "reads": sorted(READS)}))


if __name__ == "__main__":
    _install()
    atexit.register(_write, Path(os.environ["OFA_TRACE_DIR"]))
    from ofa.cli import main

    sys.argv[0] = "ofa-cli"
    main()
