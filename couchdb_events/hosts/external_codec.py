"""CouchDB's external protocol, translated: a request object line from CouchDB into a
``Request`` (``decode_line``, ``to_request``), the core's ``Answer`` into a response object line
(``to_response``, ``encode_response``). The loop over the streams is ``external.py``.

The request object (CouchDB 1.2 - 1.7, and 2.x sends the same)::

    {"info": {...db info...}, "id": null, "uuid": "...", "method": "POST",
     "requested_path": ["mydb", "_events", "email_event"],
     "path": ["mydb", "_events", "email_event"], "raw_path": "/mydb/_events/email_event?to=x",
     "query": {"to": "x"}, "headers": {"Content-Type": "application/json", ...},
     "body": "{...}", "peer": "127.0.0.1", "form": {}, "cookie": {},
     "userCtx": {"db": "mydb", "name": "ann", "roles": ["mailers"]}, "secObj": {...}}

Older versions send less: before 0.11 ``verb`` instead of ``method`` and the ``query`` values as
they were typed; ``requested_path`` and ``secObj`` arrived in 1.1, ``raw_path`` in 1.2. Only
``method``/``verb`` and ``path`` are required here. From 0.11 on CouchDB JSON-decodes the query
parameters ``key``, ``startkey`` and ``endkey``; they are turned back into JSON text, so a worker
sees every query value as a string, as through the HTTP host. ``body`` is ``"undefined"`` when
the request had none (GET).

``request.user`` is CouchDB's ``userCtx`` as ``{"name": ..., "roles": [...]}``, also for an
anonymous caller (``name`` null): CouchDB has authenticated the caller, and the roles of an
anonymous caller still mean something (``["_admin"]`` while the server has no admins). It is
null only when CouchDB sent no ``userCtx`` (before 0.11).

The answer: ``{"code": 202, "headers": {"Content-Type": "application/json", ...},
"json": {...}}``: an integer code, string header values, and exactly one of ``json``, ``body``
or ``base64`` (``json`` for the JSON answers, ``body`` or ``base64`` for a raw one); any other
key makes CouchDB answer 500.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from .. import logs
from ..api.answer import Answer, error_answer
from ..errors import HTTPError
from ..model.request import Request, parse_body

log = logs.get("external")

# Query parameters CouchDB (0.11 and later) JSON-decodes before sending them.
JSON_QUERY_KEYS = frozenset({"key", "startkey", "endkey"})


class NotARequest(HTTPError):
    """The line is not a request object as CouchDB sends them (400)."""


def _bad(reason: str) -> NotARequest:
    return NotARequest(400, "bad_request", reason)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(f"{what} must be an object of strings")
    return dict(value)


def _query(value: Any, decoded: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("query must be an object")
    query = {}
    for name, item in value.items():
        if isinstance(item, str) and not (decoded and name in JSON_QUERY_KEYS):
            query[name] = item
        else:
            query[name] = _json_text(item)
    return query


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _declares_body(headers: Mapping[str, str]) -> bool:
    if _header(headers, "transfer-encoding") is not None:
        return True
    length = _header(headers, "content-length")
    return length is not None and length.strip() not in ("", "0")


def _body(value: Any, headers: Mapping[str, str], max_body: int | None) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad("body must be a string")
    # CouchDB sends the atom `undefined` for a request without a body; a 9-byte body reading
    # "undefined" comes with its Content-Length.
    if value == "undefined" and not _declares_body(headers):
        return None
    try:
        # Bytes that were not UTF-8 on the line come back as they were (see decode_line).
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")  # parse_body reports it, or base64s it
    if max_body is not None and len(raw) > max_body:
        raise HTTPError(413, "too_large", f"the body is over {max_body} bytes (max_body)")
    return parse_body(_header(headers, "content-type"), raw)


def _user(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("userCtx must be an object")
    name = value.get("name")
    roles = value.get("roles") or []
    if name is not None and not isinstance(name, str):
        raise _bad("userCtx.name must be a string or null")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _bad("userCtx.roles must be a list of strings")
    return {"name": name, "roles": list(roles)}


def to_request(obj: Any, max_body: int | None = None) -> Request:
    """The ``Request`` for one request object from CouchDB; ``HTTPError`` 400 if it is none.

    ``path`` below the handler is the segments after the database and the handler name:
    ``["mydb", "_events", "email_event"]`` is ``/email_event``, ``["mydb", "_events"]`` is ``/``.
    """
    if not isinstance(obj, dict):
        raise _bad(f"a request must be a JSON object, not {type(obj).__name__}")
    method = obj.get("method", obj.get("verb"))
    if not isinstance(method, str) or not method:
        raise _bad("the request object has no method (or verb)")
    path = obj.get("path")
    if not isinstance(path, list) or not all(isinstance(p, str) for p in path):
        raise _bad("path must be a list of strings")
    if len(path) < 2:
        raise _bad("path must start with the database and the handler name")
    headers = _strings(obj.get("headers"), "headers")
    peer = obj.get("peer")
    return Request(
        method=method,
        path="/" + "/".join(path[2:]),
        query=_query(obj.get("query"), decoded="method" in obj),
        headers=headers,
        body=_body(obj.get("body"), headers, max_body),
        peer=peer if isinstance(peer, str) else None,
        user=_user(obj.get("userCtx")),
    )


def to_response(answer: Answer) -> dict[str, Any]:
    """The response object for CouchDB: integer code, string headers, the body as ``json``; a
    raw answer as ``body`` when its bytes are UTF-8 text, else as ``base64``."""
    headers = {str(k): str(v) for k, v in answer.headers.items() if k.lower() != "content-type"}
    headers["Content-Type"] = answer.content_type()
    response: dict[str, Any] = {"code": int(answer.status), "headers": headers}
    if answer.raw is None:
        response["json"] = answer.body
        return response
    try:
        response["body"] = answer.raw.decode("utf-8")
    except UnicodeDecodeError:
        response["base64"] = base64.b64encode(answer.raw).decode("ascii")
    return response


def decode_line(line: bytes) -> Any:
    """One line from CouchDB as JSON; ``HTTPError`` 400 if it is not JSON."""
    # surrogateescape keeps bytes that are not UTF-8: a binary body gets them back intact.
    text = line.decode("utf-8", "surrogateescape").strip()
    if not text:
        raise _bad("an empty line is not a request")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _bad(f"the line is not JSON: {exc}") from None


def encode_response(response: Mapping[str, Any]) -> bytes:
    """One response line: compact, ASCII-only JSON (never a raw newline), newline-terminated."""
    try:
        return json.dumps(response, separators=(",", ":")).encode("ascii") + b"\n"
    except (TypeError, ValueError) as exc:
        log.exception("cannot encode the answer")
        error = HTTPError(500, "internal_error", f"the answer is not JSON: {exc}")
        return encode_response(to_response(error_answer(error)))
