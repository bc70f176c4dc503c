"""What a route answers, whichever host carries it: a status, a JSON body, headers; errors
shaped like CouchDB's ``{"error", "reason"}``.

An answer that is not JSON (a dashboard asset, a metrics page) carries its bytes in ``raw``
and its own ``Content-Type`` in ``headers``; ``body`` is then ignored. Every host sends ``raw``
as it is (the external host as ``body`` text when it is UTF-8, else as ``base64``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import HTTPError

RAW_TYPE = "application/octet-stream"  # a raw answer's type when its headers name none


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None

    def content_type(self) -> str:
        """The answer's Content-Type: its header's, else JSON's (or ``RAW_TYPE`` for raw)."""
        for name, value in self.headers.items():
            if name.lower() == "content-type":
                return value
        return "application/json" if self.raw is None else RAW_TYPE


def raw_answer(
    status: int, raw: bytes, content_type: str, headers: dict[str, str] | None = None
) -> Answer:
    """An answer of bytes of the given type."""
    return Answer(status, None, {**(headers or {}), "Content-Type": content_type}, raw)


def error_answer(error: HTTPError) -> Answer:
    return Answer(error.status, {"error": error.error, "reason": error.reason}, error.headers)
