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

A request object becomes a ``Request``, and the core's ``Answer`` a response object, in
``external_codec.py``; here the loop over the lines.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any, Protocol

from .. import logs
from ..api.answer import Answer, error_answer
from ..errors import HTTPError
from ..model.request import Request
from .external_codec import NotARequest, decode_line, encode_response, to_request, to_response

log = logs.get("external")

# CouchDB kills an external that has not answered within os_process_timeout (5000 ms by
# default) and gives the caller a 500. ``?wait=`` (and waiting for start-up) is cut at MAX_WAIT;
# ANSWER_WITHIN bounds everything else, so the answer line is written before CouchDB gives up.
MAX_WAIT = 4.0
ANSWER_WITHIN = 4.5


class Handler(Protocol):
    """What answers requests: ``router.Router``."""

    async def handle(self, request: Request, max_wait: float = ...) -> Answer: ...


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
