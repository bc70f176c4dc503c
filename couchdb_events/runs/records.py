"""What an activation record holds, shared by its writer and its readers: its states, its
timestamps (``iso``), the monthly database a timestamp goes to (``month_db``), the fields of an
accepted record and of its end, answers kept bounded.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import math
import time
from typing import Any

from ..errors import HTTPError, StoreError
from ..model.message import Message, Outcome

FINAL_STATES = frozenset({"succeeded", "failed", "timeout", "lost", "rejected", "cancelled"})
OPEN_STATES = ("scheduled", "accepted", "running")
STATES = ("scheduled", "accepted", "running", "succeeded", "failed", "timeout", "lost",
          "rejected", "cancelled")  # fmt: skip
RETRYABLE = frozenset({"failed", "timeout", "lost", "rejected", "cancelled"})
BATCH = 500  # documents per _bulk_docs request
MAX_ANSWER = 64 * 1024  # bytes of JSON kept of an answer
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once, not per call


# What ``iso`` and ``month_db`` computed last (a run's timestamps mostly share them), each one
# tuple replaced whole, so that a call from another thread (listing, expiry) never sees half of it.
class _Last:
    second: tuple[float, str] = (math.nan, "")  # a whole second, and its text
    month: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) of a month, "_YYYY_MM"


def iso(timestamp: float) -> str:
    """UTC, to the millisecond: ``2026-11-28T23:59:59.123Z``."""
    second, text = _Last.second
    if timestamp // 1 != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
        _Last.second = (timestamp // 1, text)
    return f"{text}.{int(timestamp % 1 * 1000):03d}Z"


def month_db(prefix: str, timestamp: float) -> str:
    start, end, suffix = _Last.month
    if not start <= timestamp < end:
        year, month = time.gmtime(timestamp)[:2]
        suffix = f"_{year:04d}_{month:02d}"
        start = calendar.timegm((year, month, 1, 0, 0, 0))
        end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
        _Last.month = (start, end, suffix)
    return prefix + suffix


def parse_iso(text: str) -> float | None:
    """The epoch seconds of an ``iso`` time (its milliseconds included), or None."""
    try:
        whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    digits = text[20:23] if text[19:20] == "." else ""
    return whole + (int(digits) / 10 ** len(digits) if digits.isdigit() else 0.0)


def bounded(value: Any, limit: int = MAX_ANSWER) -> Any:
    """``value``, or a note of its size when its JSON is longer than ``limit`` bytes."""
    text = _COMPACT.encode(value)
    if len(text) <= limit:
        return value
    return {"truncated": True, "bytes": len(text), "start": text[:1000]}


def accepted_doc(message: Message, store_output: bool, daemon: dict[str, Any]) -> dict[str, Any]:
    """The record of ``message`` as accepted, by the daemon of ``daemon``'s fields."""
    doc = {
        "_id": message.id,
        "type": "activation",
        "event": message.event,
        "worker": message.worker,
        "worker_rev": message.worker_rev,
        "arguments": message.arguments,
        "request": message.request,
        "state": "accepted" if message.run_at is None else "scheduled",
        "attempt": message.attempt,
        "chain": message.chain,
        "accepted": iso(message.accepted),
        "started": None,
        "ended": None,
        "store_output": store_output,
        "daemon": daemon,
    }
    if message.run_at is not None:
        doc["run_at"] = iso(message.run_at)
    if message.idempotency_key is not None:
        doc["idempotency_key"] = message.idempotency_key
    if message.retry_of is not None:
        doc["retry_of"] = message.retry_of
    return doc


def final_fields(doc: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
    """What changes in the record ``doc`` when its run ends with ``outcome``."""
    state = "succeeded" if outcome.state == "delivered" else outcome.state
    fields: dict[str, Any] = {"state": state, "ended": iso(time.time()), "error": outcome.error}
    if doc.get("store_output", True):
        fields["answer"] = bounded(outcome.answer)
        fields["stdout"] = list(outcome.stdout)
        fields["stderr"] = list(outcome.stderr)
    if outcome.emitted:
        fields["emitted"] = list(outcome.emitted)
    if outcome.state == "delivered":
        fields["delivered_only"] = True  # a stream worker: done once delivered
    return fields


def message_of(doc: dict[str, Any], outcome: asyncio.Future[Outcome]) -> Message:
    """The run a record read back from CouchDB holds (resuming it), to end in ``outcome``."""
    when = parse_iso(str(doc.get("accepted", ""))) or time.time()
    return Message(
        id=doc["_id"],
        event=str(doc.get("event", "")),
        worker=str(doc.get("worker", "")),
        arguments=dict(doc.get("arguments") or {}),
        request=dict(doc.get("request") or {}),
        accepted=float(when),
        outcome=outcome,
        attempt=int(doc.get("attempt", 1)),
        worker_rev=str(doc.get("worker_rev", "")),
        chain=dict(doc.get("chain") or {"depth": 0, "parent": None}),
        run_at=parse_iso(str(doc["run_at"])) if doc.get("run_at") else None,
        idempotency_key=doc.get("idempotency_key"),
        retry_of=doc.get("retry_of"),
    )


def unavailable(exc: StoreError) -> HTTPError:
    return HTTPError(
        503,
        "unavailable",
        f"cannot store the activation record, so nothing was accepted: {exc}",
        {"Retry-After": "5"},
    )
