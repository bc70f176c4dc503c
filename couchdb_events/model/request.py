"""The request as the core sees it, whichever host it came through, and body parsing.

Pure functions: the HTTP host reads the raw parts; this module decides what the body means.
A body that does not parse as the content type it declares is the caller's error (400).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ..errors import HTTPError

PREFIX = "/_events"


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # below /_events, with a leading slash
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    peer: str | None = None
    user: dict[str, Any] | None = None
    # What fired it, when that names one fire (a schedule's fire time, a change's document
    # and revision): its runs' ids derive from it, so that CouchDB refuses a second record of
    # the same fire by another daemon (see ``message.derived_id``).
    origin: str | None = None


def strip_prefix(path: str) -> str:
    """Accept the proxy-stripped (``/email_event``) and the full (``/_events/email_event``) form."""
    if path == PREFIX or path.startswith(PREFIX + "/"):
        path = path[len(PREFIX) :]
    return path or "/"


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: a worker's JSON parser would choke on them.
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def _media_type(content_type: str | None) -> tuple[str, str | None]:
    if not content_type:
        return "", None
    parts = [p.strip() for p in content_type.split(";")]
    charset = None
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return parts[0].lower(), charset


def parse_body(content_type: str | None, raw: bytes) -> Any:
    """The body as a worker gets it: JSON value, form object, text, or base64 for binary data."""
    if not raw:
        return None
    media, charset = _media_type(content_type)
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(raw.decode(charset or "utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, LookupError) as exc:
            raise HTTPError(400, "bad_request", f"the JSON body is not valid text: {exc}") from None
        except json.JSONDecodeError as exc:
            raise HTTPError(
                400,
                "bad_request",
                f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
    if media == "application/x-www-form-urlencoded":
        try:
            text = raw.decode(charset or "utf-8")
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                strict_parsing=True,
                encoding=charset or "utf-8",
                errors="strict",
            )
            return dict(pairs)
        except (UnicodeDecodeError, LookupError, ValueError) as exc:
            raise HTTPError(400, "bad_request", f"the body is not a valid form: {exc}") from None
    if media.startswith("text/") or media == "":
        try:
            return raw.decode(charset or "utf-8")
        except (UnicodeDecodeError, LookupError) as exc:
            if media:
                raise HTTPError(
                    400, "bad_request", f"the body is not valid {charset or 'utf-8'} text: {exc}"
                ) from None
    return {"base64": base64.b64encode(raw).decode("ascii"), "content_type": media or None}
