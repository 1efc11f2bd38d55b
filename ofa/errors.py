"""The one exception type the CLI turns into a clean one-line message."""

import dataclasses


class OFAError(Exception):
    """A problem with the user's input or files, explained in one line."""


def require(ok: bool, key: str, why: str) -> None:
    """Refuse a params value, naming its dotted key."""
    if not ok:
        raise OFAError(f"params: {key}: {why}")


def optional(default):
    """A params field that may be left out of params.yaml (every other key is required, even
    where the dataclass has a default for code that builds configs directly)."""
    return dataclasses.field(default=default, metadata={"optional": True})
