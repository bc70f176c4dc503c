"""What a route answers, whichever host carries it: a status, a JSON body, headers; errors
shaped like CouchDB's ``{"error", "reason"}``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import HTTPError


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(error: HTTPError) -> Answer:
    return Answer(error.status, {"error": error.error, "reason": error.reason}, error.headers)
