"""CouchDB's external protocol: the host for ``/<db>/_events/<event>`` (CouchDB 0.11 - 1.7).

CouchDB runs ``couchdb-events external`` as an external process behind a database handler::

    [external]
    events = /path/bin/couchdb-events external --config /path/couchdb-events.ini
    [httpd_db_handlers]
    _events = {couch_httpd_external, handle_external_req, <<"events">>}

It starts the process on the first request and sends requests one at a time: one JSON object
per line on stdin, then it waits for exactly one JSON object line on stdout, for at most
``[couchdb] os_process_timeout`` (5 s by default) before it kills the process and answers 500.
So every line is answered at once (work goes to the worker pool) and within ``ANSWER_WITHIN``
seconds, whatever happens: ``?wait=`` waits at most ``MAX_WAIT`` seconds, and a request that
arrives while the service is still starting waits for it within the same budget (then 503).
Every stdout line is protocol: normal logging goes to stderr.

Not CouchDB 2.x: 2.0 - 2.2 no longer start ``couch_external_manager`` (every request: 500
``noproc``), and started by hand (``[daemons] external_manager``) their
``couch_external_server`` crashes on every second request (``function_clause``: its
``handle_call`` returns a state of three elements where the next call expects four). On 2.x the
os_daemon host, on the node-local port 5986, is the one that works.

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
or ``base64`` (this host always sends ``json``); any other key makes CouchDB answer 500.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any, Protocol

from .. import logs
from ..api.answer import Answer, error_answer
from ..errors import HTTPError
from ..model.request import Request, parse_body

log = logs.get("external")

# CouchDB kills an external that has not answered within os_process_timeout (5000 ms by
# default) and gives the caller a 500. ``?wait=`` (and waiting for start-up) is cut at MAX_WAIT;
# ANSWER_WITHIN bounds everything else, so the answer line is written before CouchDB gives up.
MAX_WAIT = 4.0
ANSWER_WITHIN = 4.5

# Query parameters CouchDB (0.11 and later) JSON-decodes before sending them.
JSON_QUERY_KEYS = frozenset({"key", "startkey", "endkey"})


class Handler(Protocol):
    """What answers requests: ``router.Router``."""

    async def handle(self, request: Request, max_wait: float = ...) -> Answer: ...


# -- request and answer ------------------------------------------------------------------------
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
    """The response object for CouchDB: integer code, string headers, the body as ``json``."""
    headers = {"Content-Type": "application/json"}
    headers.update({str(k): str(v) for k, v in answer.headers.items()})
    return {"code": int(answer.status), "headers": headers, "json": answer.body}


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


# -- the line loop -----------------------------------------------------------------------------
async def _wait_until_ready(ready: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(ready.wait(), max(0.0, seconds))
    except asyncio.TimeoutError:
        raise HTTPError(
            503, "unavailable", "couchdb-events is still starting", {"Retry-After": "1"}
        ) from None


async def answer_line(
    router: Handler,
    line: bytes,
    ready: asyncio.Event | None = None,
    max_wait: float = MAX_WAIT,
    answer_within: float = ANSWER_WITHIN,
    max_body: int | None = None,
) -> dict[str, Any]:
    """The response object for one line; never raises (but for cancellation)."""
    started = time.monotonic()
    try:
        try:
            request = to_request(decode_line(line), max_body)
        except NotARequest as exc:  # CouchDB never sends these: worth a line in the log
            log.warning("not a request from CouchDB (%s): %.200r", exc.reason, line)
            raise
        if ready is not None and not ready.is_set():
            await _wait_until_ready(ready, max_wait - (time.monotonic() - started))
        left = max_wait - (time.monotonic() - started)
        try:
            answer = await asyncio.wait_for(
                router.handle(request, max_wait=max(0.0, left)),
                max(0.0, answer_within - (time.monotonic() - started)),
            )
        except asyncio.TimeoutError:
            raise HTTPError(
                503,
                "unavailable",
                f"couchdb-events could not answer within {answer_within:g} s",
                {"Retry-After": "1"},
            ) from None
        return to_response(answer)
    except HTTPError as exc:
        return to_response(error_answer(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("a request from CouchDB failed")
        error = HTTPError(500, "internal_error", f"{type(exc).__name__}: {exc}")
        return to_response(error_answer(error))


async def serve_lines(
    router: Handler,
    read_line: Callable[[], Awaitable[bytes]],
    write_line: Callable[[bytes], None],
    *,
    ready: asyncio.Event | None = None,
    max_wait: float = MAX_WAIT,
    answer_within: float = ANSWER_WITHIN,
    max_body: int | None = None,
) -> None:
    """Answer CouchDB's request lines one by one until EOF (``read_line`` returns ``b""``).

    Exactly one response line per request line, in order: a line that is not a request gets a
    400 answer and the loop goes on. ``write_line`` writes and flushes one line; when it fails
    (CouchDB has gone) the loop ends. ``ready`` is set once the service has started.
    """
    while True:
        line = await read_line()
        if not line:
            return
        response = await answer_line(router, line, ready, max_wait, answer_within, max_body)
        try:
            write_line(encode_response(response))
        except (OSError, ValueError) as exc:
            log.warning("cannot answer CouchDB: %s", exc)
            return


def read_in_thread(stream: IO[bytes]) -> Callable[[], Awaitable[bytes]]:
    """``read_line`` for a blocking stream (stdin), read in a thread so the loop never blocks.

    Call it in the running event loop; ``b""`` means EOF (or a read error).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def hand_over(line: bytes) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: the process is exiting
            pass

    def pump() -> None:
        try:
            while True:
                line = stream.readline()
                hand_over(line)
                if not line:
                    return
        except (OSError, ValueError):
            hand_over(b"")

    threading.Thread(target=pump, name="external-stdin", daemon=True).start()
    return queue.get


def line_writer(stream: IO[bytes]) -> Callable[[bytes], None]:
    """``write_line`` for a binary stream: write, then flush, every line."""

    def write(line: bytes) -> None:
        stream.write(line)
        stream.flush()

    return write
