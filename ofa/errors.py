"""The one exception type the CLI turns into a clean one-line message."""

import dataclasses
import re
from typing import Any


class OFAError(Exception):
    """A problem with the user's input or files, explained in one line."""


def require(ok: bool, key: str, why: str) -> None:
    """Refuse a params value, naming its dotted key."""
    if not ok:
        raise OFAError(f"params: {key}: {why}")


def optional(default, omit_at_default: bool = False):
    """A params field that may be left out of params.yaml (every other key is required, even
    where the dataclass has a default for code that builds configs directly).

    omit_at_default: a key added after artifacts were written; `to_dict` leaves it out while
    it holds its default, so the fingerprints and checkpoint metadata of those artifacts (which
    never saw it) still match."""
    return dataclasses.field(default=default, metadata={"optional": True,
                                                        "omit_at_default": omit_at_default})


# Names that become parts of file paths (devices, phases, presets, constraint folders): a
# letter or digit first (no hidden files, no `..`), then letters, digits, `.`, `_`, `-`.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SAFE_NAME_RULE = ("1-64 characters: letters, digits, '.', '_', '-', starting with a letter "
                  "or digit")


def safe_name(kind: str, name: object) -> str:
    """Refuse a name that would escape or hide in its folder once it becomes a file name."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise OFAError(f"{kind} name {name!r} is not a safe file name ({SAFE_NAME_RULE})")
    return name


@dataclasses.dataclass(frozen=True)
class Range:
    """A closed or half-open interval a params number must lie in, written as in maths."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        return (self.lo < v if self.lo_open else self.lo <= v) and \
            (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if x.is_integer() else repr(x)
        return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"


def bounded(interval: str, default: Any = dataclasses.MISSING, is_optional: bool = False,
            omit_at_default: bool = False):
    """A params number (or list of numbers) that must lie in `interval`, e.g. "(0, 10]"; the
    loader checks it (and that it is finite) and names the dotted key and the interval
    (`omit_at_default` as for `optional`)."""
    m = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])", interval)
    if m is None:
        raise ValueError(f"bad interval {interval!r}")
    rng = Range(float(m[2]), float(m[3]), m[1] == "(", m[4] == ")")
    meta = {"range": rng, "optional": is_optional, "omit_at_default": omit_at_default}
    return dataclasses.field(default=default, metadata=meta)
