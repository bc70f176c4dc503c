"""A worker run: the message a worker gets on stdin, and the outcome the caller may wait for."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Headers that carry credentials never reach a worker.
HIDDEN_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# The chain depth of the run a request comes from; in a message, the depth of that run, for
# the worker to pass on with requests of its own.
CHAIN_HEADER = "X-Couchdb-Events-Chain"
# Made once (``json.dumps`` with options builds an encoder per call); encoding is thread-safe.
_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_LINE_ASCII = json.JSONEncoder(separators=(",", ":"))


def new_id() -> str:
    """32 hex digits, in the order of time: 14 of the microseconds since the epoch, then 18
    random ones (CouchDB's own ``utc_random`` ids). CouchDB inserts a document whose id sorts
    after the others at the end of its B-tree; random ids (a version 4 UUID) land all over it,
    which on CouchDB 3.5 costs about twice the CPU per activation record (0.84 against 0.40
    ms per run, two writes each, in batches of 64)."""
    return f"{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"


def derived_id(origin: str, number: int) -> str:
    """The id of run ``number`` of the fire ``origin`` names: 32 hex digits, like ``new_id``,
    the same in every daemon, so that two daemons firing it both write the same activation
    record id and CouchDB keeps only the first."""
    key = f"{origin}\0{number}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def worker_request(
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: Any,
    peer: str | None,
    user: dict[str, Any] | None,
    depth: int = 0,
) -> dict[str, Any]:
    """The ``request`` part of a message, with credentials removed and the chain header set to
    the run's chain ``depth``."""
    hidden = HIDDEN_HEADERS | {CHAIN_HEADER.lower()}
    return {
        "method": method,
        "path": path,
        "query": query,
        "headers": {
            **{k: v for k, v in headers.items() if k.lower() not in hidden},
            CHAIN_HEADER: str(depth),
        },
        "body": body,
        "peer": peer,
        "user": user,
    }


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``succeeded``, ``delivered`` (stream workers never answer), ``failed``,
    ``timeout``; with the tails of what the worker wrote meanwhile."""

    state: str
    answer: Any = None
    error: str | None = None
    stdout: tuple[str, ...] = ()
    stderr: tuple[str, ...] = ()
    # What the answer's "emit" led to: {"event", "runs"} or {"event", "error"} per entry.
    emitted: tuple[dict[str, Any], ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.answer is not None:
            out["answer"] = self.answer
        if self.error is not None:
            out["error"] = self.error
        if self.emitted:
            out["emitted"] = list(self.emitted)
        return out


@dataclass
class Message:
    """One run of one worker for one fired event."""

    id: str
    event: str
    worker: str
    arguments: dict[str, Any]
    request: dict[str, Any]
    accepted: float = field(default_factory=time.time)
    outcome: asyncio.Future[Outcome] | None = None
    attempt: int = 1
    worker_rev: str = ""
    # How deep in a chain of events firing events this run is: 0 for a request from outside,
    # the parent's depth + 1 for an event a run emitted (``parent``: that run's id).
    chain: dict[str, Any] = field(default_factory=lambda: {"depth": 0, "parent": None})
    # Run controls (``runs.controls``): a delayed fire's time (epoch seconds), the fire's
    # Idempotency-Key, the run this one retries; ``cancelled`` once cancelled while running.
    run_at: float | None = None
    idempotency_key: str | None = None
    retry_of: str | None = None
    cancelled: bool = False
    # Set by the runner: called when the message reaches a process, and with each outcome
    # (which may lead to another attempt rather than to the final answer).
    on_start: Callable[[Message], None] | None = field(default=None, repr=False)
    settle: Callable[[Message, Outcome], None] | None = field(default=None, repr=False)

    def line(self) -> bytes:
        """The message as one JSON line for the worker's stdin."""
        body = {
            "id": self.id,
            "event": self.event,
            "worker": self.worker,
            "arguments": self.arguments,
            "request": self.request,
            "attempt": self.attempt,
            "chain": self.chain,
        }
        try:
            return _LINE.encode(body).encode() + b"\n"
        except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: keep it escaped
            return _LINE_ASCII.encode(body).encode() + b"\n"

    def started(self) -> None:
        """The message was written to a worker process."""
        if self.on_start is not None:
            self.on_start(self)

    def finish(self, outcome: Outcome) -> None:
        """An attempt ended; the runner decides whether that is the final outcome."""
        if self.settle is not None:
            self.settle(self, outcome)
        else:
            self.resolve(outcome)

    def resolve(self, outcome: Outcome) -> None:
        """The final outcome: a caller waiting with ``?wait=`` gets it."""
        if self.outcome is not None and not self.outcome.done():
            self.outcome.set_result(outcome)
