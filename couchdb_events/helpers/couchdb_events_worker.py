"""Helpers for couchdb-events workers written in Python.

Standard library only (Python 3.8+). The daemon puts this directory on every worker's
``PYTHONPATH``, so ``import couchdb_events_worker`` just works; the file may also be attached to
a worker document and imported from the worker's directory.

The worker contract
-------------------

The daemon starts a worker with its working directory set to a directory holding the worker's
code (the worker document's attachments) and writes one JSON object per line to the worker's
stdin. Each line is a message::

    {"id": "...", "event": "...", "worker": "...", "arguments": {...},
     "request": {"method": ..., "path": ..., "query": ..., "headers": ..., "body": ...,
                 "peer": ..., "user": ...}}

The worker document's ``mode`` says how the worker answers:

``stream`` (the default)
    The worker loops over stdin and never answers; it exits when stdin reaches end of file.
``reply``
    The worker answers each message, in order, with exactly one JSON line on stdout, and then
    gets the next message. Any JSON value is an answer; an object with a truthy ``"error"`` key
    means the run failed, e.g. ``{"error": "ValueError", "reason": "..."}``. It exits at end of
    file.
``once``
    The worker reads one message, may write one JSON answer line, and exits; exit status 0
    means success.

stdout is only for answer lines. Anything else goes to stderr (see ``log``); the daemon logs
both, but a non-JSON line on stdout is noise at best.

Example, a reply worker::

    import couchdb_events_worker as w

    def handle(message):
        name = message["arguments"].get("name", "world")
        w.log("greeting", name)
        return {"greeting": f"hello {name}"}

    w.run(handle, mode="reply")

and a once worker, whose exit status matters::

    import sys
    import couchdb_events_worker as w

    sys.exit(w.run(handle, mode="once"))
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["MODES", "log", "messages", "run"]

MODES = ("stream", "reply", "once")

_OK = {"ok": True}


def log(*args: object) -> None:
    """Print to stderr (stdout is only for answer lines)."""
    print(*args, file=sys.stderr, flush=True)


def messages(
    stdin: IO[str] | None = None, *, stderr: IO[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the messages read from ``stdin`` (default: the process's stdin), one per line.

    Blank lines are skipped. A line that is not JSON, or is JSON but not an object, is reported
    on ``stderr`` and skipped. Ends at end of file.
    """
    err = stderr if stderr is not None else sys.stderr
    for number, line in enumerate(_lines(stdin), start=1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:  # UnicodeDecodeError included
            _note(err, f"couchdb_events_worker: line {number} is not JSON ({exc}); skipped")
            continue
        if not isinstance(message, dict):
            kind = type(message).__name__
            _note(err, f"couchdb_events_worker: line {number} is a {kind}, not an object; skipped")
            continue
        yield message


def _lines(stdin: IO[str] | None) -> Iterator[str | bytes]:
    """The lines of ``stdin``; the process's stdin is read as bytes (the daemon writes UTF-8,
    whatever the locale says), which ``json.loads`` decodes."""
    if stdin is not None:
        yield from stdin
    else:
        yield from getattr(sys.stdin, "buffer", sys.stdin)


def run(
    handler: Callable[[dict[str, Any]], Any],
    *,
    mode: str = "reply",
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Call ``handler(message)`` for each message and answer as ``mode`` requires.

    * ``reply``: the handler's return value (None means ``{"ok": true}``) is written as one
      compact JSON line and flushed. If the handler raises, the answer is
      ``{"error": <exception class name>, "reason": str(exc)}``, the traceback goes to stderr,
      and the loop carries on. Returns 0 at end of file.
    * ``stream``: nothing is written; exceptions are logged and the loop carries on. Returns 0
      at end of file.
    * ``once``: one message is handled and answered; returns the exit status: 0, or 1 if the
      handler raised (or no message came). Use ``sys.exit(run(handler, mode="once"))``.

    The streams default to the process's stdin, stdout and stderr.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    for message in messages(stdin, stderr=err):
        answer, failed = _call(handler, message, err)
        if mode != "stream":
            _write_answer(out, err, answer)
        if mode == "once":
            return 1 if failed else 0
    if mode == "once":
        _note(err, "couchdb_events_worker: stdin ended before any message came")
        return 1
    return 0


def _call(
    handler: Callable[[dict[str, Any]], Any], message: dict[str, Any], err: IO[str]
) -> tuple[Any, bool]:
    """The handler's answer for ``message``, and whether it raised."""
    try:
        answer = handler(message)
    except Exception as exc:  # the worker keeps going: the failure is the answer
        _note(err, f"couchdb_events_worker: message {message.get('id')!r} failed:")
        traceback.print_exc(file=err)
        err.flush()
        return _error(exc), True
    return (_OK if answer is None else answer), False


def _write_answer(out: IO[str], err: IO[str], answer: Any) -> None:
    """Write ``answer`` as one JSON line; an answer that is not JSON becomes an error answer."""
    try:
        line = json.dumps(answer, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        _note(err, f"couchdb_events_worker: the answer is not JSON: {exc}")
        line = json.dumps(_error(exc), separators=(",", ":"))
    out.write(line + "\n")
    out.flush()


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": type(exc).__name__, "reason": str(exc)}


def _note(err: IO[str], text: str) -> None:
    err.write(text + "\n")
    err.flush()
