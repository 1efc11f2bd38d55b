"""YAML as the project reads it: safely (yaml.safe_load: no tags run) and strictly (a mapping
that repeats a key is refused with key and lines; PyYAML keeps the last one silently, DVC
refuses the same file). Errors are one OFAError line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ofa.errors import OFAError


def _repeated_key(node: yaml.Node) -> str | None:
    """The first repeated key of any mapping in the composed document (no object is built)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode):
                if (key.tag, key.value) in seen:
                    return (f"duplicate key {key.value!r} at line {line} "
                            f"(first at line {seen[(key.tag, key.value)]})")
                seen[(key.tag, key.value)] = line
            found = _repeated_key(value)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _repeated_key(item)
            if found:
                return found
    return None


def strict_yaml(text: str, where: str) -> Any:
    """Parse YAML safely and strictly; one-line errors naming `where`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        repeated = None if node is None else _repeated_key(node)
        if repeated:
            raise OFAError(f"{where}: {repeated}")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise OFAError(f"{where} is not valid YAML: {str(exc).splitlines()[0]}") from None


def read_yaml(path: Path) -> dict:
    """A params file's mapping, or one OFAError saying why not."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise OFAError(f"params file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OFAError(f"params file {path} cannot be read ({exc})") from None
    raw = strict_yaml(text, f"params file {path}")
    if not isinstance(raw, dict):
        raise OFAError(f"params file {path} must hold a mapping at the top level")
    return raw
