"""From prepared runs to final outcomes: activation records, attempts and retries.

::

    prepared ──accept (records stored)──► queued ──written to a process──► running
                                                                  │
        succeeded / failed / timeout ◄───────── outcome ──────────┤
                 ▲                                                │ failed or timeout, and
                 └──── queued again after retry_delay · 2^(n-1) ◄─┘ attempts left (retries)

With ``durable`` on, a 202 is given only once every record is stored. At start-up the records a
previous daemon left open are resumed: ``accepted`` ones are queued again, ``running`` ones
(cut off half-way) as their next attempt. When the daemon stops, runs it did not finish keep
their open records, for the next start.

Chains: a ``reply`` or ``once`` run that succeeds with an answer like
``{"emit": ["event_id", {"event": "/path", "body": {...}, "method": "POST"}]}`` fires each of
those events as a request from the worker (``peer`` ``worker:<name>``, no user, no headers but
``X-Couchdb-Events-Chain``) through the dispatcher, one chain depth deeper, before its own
outcome is final. What each emit led to (run ids, or why nothing was fired, such as
``chain depth 8 exceeded: event X not fired``) is the outcome's ``emitted``, kept in the
activation record and given to a waiting caller; the run itself stays ``succeeded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import logs
from ..errors import HTTPError
from ..model.message import CHAIN_HEADER, Message, Outcome
from ..model.registry import Registry
from ..model.request import Request
from ..model.workers import WorkerSpec
from ..workers.exchange import INTERRUPTED
from ..workers.supervisor import Supervisor
from .activations import Activations
from .records import message_of
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .dispatch import Dispatcher

log = logs.get("runner")

MAX_RETRY_DELAY = 3600.0


class Runner:
    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        activations: Activations | None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self.activations = activations
        self._dispatcher = dispatcher  # fires the events a run's answer emits
        # This daemon's open runs, and those waiting for a time (a delayed fire: "scheduled";
        # a retry's delay: "accepted") with their timers.
        self._live: dict[str, Message] = {}
        self._waiting: dict[str, tuple[asyncio.TimerHandle, str]] = {}
        self._emitting: set[asyncio.Task[None]] = set()
        self.retried = 0
        self.resumed = 0
        self.telemetry = Telemetry()  # counters, histograms, the last minutes (status, metrics)
        # Which of these runs another daemon asked to cancel (``controls``; blocking).
        self.cancel_requests: Callable[[list[str]], set[str]] | None = None

    def _hook(self, message: Message) -> None:
        message.on_start = self._started
        message.settle = self._settle
        self._live[message.id] = message

    async def run(self, runs: list[tuple[WorkerSpec, Message]]) -> None:
        """Record (when durable) and queue every run, or none: raises the ``HTTPError``."""
        for _spec, message in runs:
            self._hook(message)
        began = self.telemetry.clock()
        if self.activations is not None:
            outputs = {spec.name: spec.store_output for spec, _message in runs}
            await self.activations.accept([message for _spec, message in runs], outputs)
        self.telemetry.fired(len(runs), began)
        now = time.time()
        later = [(s, m) for s, m in runs if m.run_at is not None and m.run_at > now]
        runs = [(s, m) for s, m in runs if m.run_at is None or m.run_at <= now]
        for _spec, message in later:
            self._wait(message, (message.run_at or now) - now, "scheduled")
        try:
            for spec, _message in runs:  # again: the queues may have filled meanwhile
                self._supervisor.check(spec)
        except HTTPError as exc:
            for _spec, message in runs:
                self._final(message, Outcome("rejected", None, exc.reason))
            raise
        for spec, message in runs:
            if message.run_at is not None and self.activations is not None:
                self.activations.update(message.id, state="accepted")  # its time has come
            self._supervisor.submit(spec, message)

    def _wait(self, message: Message, delay: float, state: str) -> None:
        """Queue ``message`` after ``delay`` seconds; until then it is ``state``."""
        handle = asyncio.get_running_loop().call_later(delay, self._due, message)
        self._waiting[message.id] = (handle, state)

    def _due(self, message: Message) -> None:
        _handle, state = self._waiting.pop(message.id, (None, ""))
        if state == "scheduled" and self.activations is not None:
            self.activations.update(message.id, state="accepted")
        self._again(message)

    async def cancel(self, run_id: str, timeout: float = 10.0) -> str | None:
        """Cancel an open run of this daemon's: what it was (``scheduled``, ``accepted``,
        ``running``), or None when this daemon has no such run. A queued or waiting run never
        starts; a running one has its process group killed (waited for up to ``timeout``)."""
        message = self._live.get(run_id)
        if message is None or message.cancelled:
            return None
        waiting = self._waiting.pop(run_id, None)
        if waiting is not None:
            waiting[0].cancel()
            was = waiting[1]
        else:
            message.cancelled = True  # before the kill: the pool makes its outcome "cancelled"
            where = self._supervisor.cancel(message)
            if where is None:
                message.cancelled = False
                return None  # between attempts, or emitting its chain: nothing to stop
            if where == "running":
                if message.outcome is not None:
                    await asyncio.wait({message.outcome}, timeout=timeout)
                return "running"
            was = "accepted"
        self._final(message, Outcome("cancelled", None, f"cancelled while {was}"))
        return was

    def _started(self, message: Message) -> None:
        self.telemetry.started(message)
        if self.activations is not None:
            self.activations.started(message)

    def _settle(self, message: Message, outcome: Outcome) -> None:
        if outcome.state == INTERRUPTED:
            message.resolve(Outcome("failed", None, outcome.error))  # for a waiting caller only
            return
        spec = self._registry.workers.get(message.worker)
        retry = outcome.state in ("failed", "timeout") and spec is not None
        if retry and spec is not None and message.attempt <= spec.retries:
            delay = min(MAX_RETRY_DELAY, spec.retry_delay * 2 ** (message.attempt - 1))
            message.attempt += 1
            self.retried += 1
            log.info(
                "run %s of worker %s %s; attempt %d in %.1f s",
                message.id, message.worker, outcome.state, message.attempt, delay,
            )  # fmt: skip
            if self.activations is not None:
                self.activations.retrying(message, outcome.error)
            self._wait(message, delay, "accepted")
            return
        emits = outcome.answer.get("emit") if isinstance(outcome.answer, dict) else None
        if outcome.state == "succeeded" and emits and self._dispatcher is not None:
            task = asyncio.get_running_loop().create_task(self._emit(message, outcome, emits))
            self._emitting.add(task)
            task.add_done_callback(self._emitting.discard)
            return
        self._final(message, outcome)

    async def _emit(self, message: Message, outcome: Outcome, emits: Any) -> None:
        """Fire what the run's answer emits, then give the run its final outcome."""
        notes: list[dict[str, Any]] = []
        for number, entry in enumerate(emits if isinstance(emits, list) else [emits], 1):
            try:
                notes.append(await self._emit_one(message, entry, number))
            except Exception as exc:  # never lose the parent's outcome
                log.exception("run %s: emit %d failed", message.id, number)
                notes.append({"event": None, "error": f"emit {number}: {exc}"})
        self._final(message, replace(outcome, emitted=tuple(notes)))

    async def _emit_one(self, message: Message, entry: Any, number: int) -> dict[str, Any]:
        assert self._dispatcher is not None
        if isinstance(entry, str):
            entry = {"event": entry}
        target = entry.get("event") if isinstance(entry, dict) else None
        method = entry.get("method", "POST") if isinstance(entry, dict) else None
        if not target or not isinstance(target, str) or not isinstance(method, str):
            error = (
                f"emit {number} must be an event id or path, or an object like "
                '{"event": "next_event", "body": {...}, "method": "POST"}'
            )
            log.warning("run %s of worker %s: %s", message.id, message.worker, error)
            return {"event": target if isinstance(target, str) else None, "error": error}
        assert isinstance(entry, dict)
        request = Request(
            method=method.upper(),
            path="/" + target.lstrip("/"),
            headers={CHAIN_HEADER: str(message.chain.get("depth", 0))},
            body=entry.get("body"),
            peer=f"worker:{message.worker}",
        )
        try:
            fired = self._dispatcher.prepare(request, parent=message.id)
            await self.run(fired.runs)
        except HTTPError as exc:
            log.warning(
                "run %s of worker %s: %s", message.id, message.worker, exc.reason
            )  # fmt: skip
            return {"event": target, "error": exc.reason}
        return {"event": target, "runs": [m.id for m in fired.messages]}

    def _final(self, message: Message, outcome: Outcome) -> None:
        self._live.pop(message.id, None)
        self.telemetry.final(message, outcome.state)
        if self.activations is not None:
            self.activations.finished(message, outcome)
        message.resolve(outcome)

    def _again(self, message: Message) -> None:
        self._waiting.pop(message.id, None)
        spec = self._registry.workers.get(message.worker)
        if spec is None:
            self._final(message, Outcome("failed", None, f"worker {message.worker!r} was deleted"))
            return
        message.worker_rev = spec.rev
        try:
            self._supervisor.submit(spec, message, force=True)
        except HTTPError as exc:
            if exc.error == "shutting_down":
                return  # the record stays open: the next start resumes it
            self._final(message, Outcome("failed", None, exc.reason))

    async def resume(self, before: float | None = None) -> int:
        """Queue again what daemons that are gone (a previous run of this one, or another on
        the same CouchDB) accepted but did not finish, claiming each record; how many. With
        ``before``, only records accepted before that time."""
        if self.activations is None:
            return 0
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, self.activations.orphans, before)
        asked: set[str] = set()
        if records and self.cancel_requests is not None:
            ids = [doc["_id"] for _db, doc in records]
            asked = await loop.run_in_executor(None, self.cancel_requests, ids)
        resumed = 0
        for db, doc in records:
            self.activations.adopt(db, doc)
            message = message_of(doc, asyncio.get_running_loop().create_future())
            self._hook(message)
            if message.id in asked:  # its daemon went before it could cancel it
                self._final(message, Outcome("cancelled", None, "cancelled (by request)"))
                continue
            if doc.get("state") == "running":
                message.attempt += 1  # cut off half-way: this is the next attempt
            spec = self._registry.workers.get(message.worker)
            if spec is None or spec.error:
                why = "was deleted" if spec is None else "is invalid"
                state = "lost" if doc.get("state") == "running" else "failed"
                self._final(message, Outcome(state, None, f"worker {message.worker!r} {why}"))
                continue
            message.worker_rev = spec.rev
            if message.run_at is not None and doc.get("state") == "scheduled":
                self._wait(message, max(0.0, message.run_at - time.time()), "scheduled")
                resumed += 1
                continue
            self.activations.retrying(message, doc.get("last_error"))
            try:
                self._supervisor.submit(spec, message, force=True)
            except HTTPError as exc:
                self._final(message, Outcome("failed", None, exc.reason))
                continue
            resumed += 1
        if resumed:
            log.warning("resumed %d accepted runs a daemon now gone did not finish", resumed)
        self.resumed += resumed
        return resumed

    def close(self) -> None:
        for handle, _state in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
