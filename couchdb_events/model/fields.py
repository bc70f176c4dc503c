"""Reading one field of a document: checked, with a message that names the field and the value.
Each raises ``ValueError`` with that message."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def int_field(doc: Mapping[str, Any], key: str, default: Any) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a whole number of at least 1, not {value!r}")
    return value


def seconds_field(doc: Mapping[str, Any], key: str, default: Any) -> float:
    value = doc.get(key, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key} must be a positive number of seconds, not {value!r}")
    return float(value)


def count_field(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number of at least 0, not {value!r}")
    return value


def flag_field(doc: Mapping[str, Any], key: str, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def optional_field(
    doc: Mapping[str, Any], key: str, read: Callable[[Mapping[str, Any], str, Any], T]
) -> T | None:
    return None if doc.get(key) is None else read(doc, key, None)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]?)i?B?\s*$", re.IGNORECASE)


def size_field(doc: Mapping[str, Any], key: str, _default: Any = None) -> int:
    """Bytes, as a whole number or a string like "512M" or "1G"."""
    value = doc.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    found = _SIZE.match(value) if isinstance(value, str) else None
    if found and int(found.group(1)) > 0:
        return int(found.group(1)) * _UNITS[found.group(2).upper()]
    raise ValueError(f'{key} must be a size in bytes or like "512M", not {value!r}')
