"""What a route answers, whichever host carries it: a status, a JSON body, headers; or, with
``raw``, bytes sent as they are with the headers' ``Content-Type`` (text, HTML, scripts, ...).
Errors are shaped like CouchDB's ``{"error", "reason"}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import HTTPError


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # when set, the body sent instead of ``body`` as JSON


def raw_answer(
    status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
) -> Answer:
    """An answer of bytes of their own type (``content_type``), not JSON."""
    return Answer(status, None, {**(headers or {}), "Content-Type": content_type}, data)


def error_answer(error: HTTPError) -> Answer:
    return Answer(error.status, {"error": error.error, "reason": error.reason}, error.headers)
