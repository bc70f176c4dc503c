"""The group commit under the activation records' writer: one task writing what is queued.

Whatever is waiting when the writer is free goes out in one ``_bulk_docs`` request, and several
updates of one record in the meantime become one write; updates nobody waits for linger a
moment for an accepted record to share their request. Each answer is taken in: stored, refused,
or a conflict to resolve, from the record as every copy holds it: our own write whose answer
was lost, a fire another daemon stored first (``AlreadyFired``), or an update meeting another
daemon's write (ours goes over it). When CouchDB fails, updates are retried, backing off.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..couch.cluster import written_as
from ..couch.store import Store
from ..errors import AlreadyFired, HTTPError, StoreError
from .records import BATCH, FINAL_STATES, unavailable

log = logs.get("activations")

RETRY_FIRST, RETRY_CAP = 0.5, 10.0  # seconds between attempts to write updates
# Seconds that updates nobody waits for (running, final states) may wait for an ``accepted``
# record to share their ``_bulk_docs`` request, when no record is waiting for its 202: a final
# state reaches CouchDB that much later, and a burst makes about half as many requests.
LINGER = 0.03
# ``_bulk_docs`` requests at once: CouchDB takes several at a time and commits together what
# its database's updater has queued. A request beside one in flight carries at least
# ``BESIDE`` records, as CouchDB's cost is mostly per request (see bench/README.md).
IN_FLIGHT = 3
BESIDE = 16


@dataclass
class Record:
    db: str
    doc: dict[str, Any]
    stored: asyncio.Future[None] | None = None  # resolved when the accepted state is stored
    dirty: bool = True


@dataclass
class State:
    """What the writer task shares with callers; only the loop touches it."""

    records: dict[str, Record] = field(default_factory=dict)
    queue: dict[str, None] = field(default_factory=dict)  # ids waiting to be written, in order
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a record someone waits for (an ``accepted`` one) is queued, or to flush (close).
    urgent: asyncio.Event = field(default_factory=asyncio.Event)
    flushing: bool = False  # closing: nothing lingers any more
    writing: int = 0  # _bulk_docs requests in flight
    in_flight: set[str] = field(default_factory=set)  # the ids they write

    @property
    def busy(self) -> bool:
        return self.writing > 0


class GroupCommit:
    """The writer task and what it shares with callers (``_state``), who queue records with
    ``_enqueue``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._state = State()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._delay = RETRY_FIRST  # the next back-off after a failed write
        self._retry_at = 0.0  # monotonic time before which updates are not written again
        self.writes = 0  # _bulk_docs requests
        self.written = 0  # documents
        self.on_write: Callable[[int], None] | None = None  # told each request's documents
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever())

    async def close(self, timeout: float = 3.0) -> None:
        """Write what is waiting (for at most ``timeout`` seconds), then stop the writer."""
        deadline = time.monotonic() + timeout
        self._state.flushing = True
        self._state.urgent.set()
        self._state.wake.set()
        state = self._state
        while (state.queue or state.busy) and time.monotonic() < deadline:
            if self.last_error is not None and not state.busy:
                break  # CouchDB refuses: what waits stays open, for the next start
            await asyncio.sleep(0.02)
        for task in (self._task, *self._writes):
            if task is not None:
                task.cancel()

    def _enqueue(self, activation_id: str) -> None:
        record = self._state.records[activation_id]
        record.dirty = True
        self._state.queue[activation_id] = None
        self._state.wake.set()

    @property
    def backlog(self) -> int:
        return len(self._state.queue)

    def _writable(self) -> list[str]:
        """Up to a batch of queued ids that no request in flight is writing (an update waits
        for the answer to the write before it: it needs that revision)."""
        state = self._state
        if not state.in_flight:
            return list(itertools.islice(state.queue, BATCH))
        writable = (i for i in state.queue if i not in state.in_flight)
        return list(itertools.islice(writable, BATCH))

    async def _write_forever(self) -> None:
        state = self._state
        while True:
            await state.wake.wait()
            state.wake.clear()
            while state.writing < IN_FLIGHT and (writable := self._writable()):
                if state.busy and len(writable) < BESIDE and not state.flushing:
                    break  # a few records: they go with the next write (woken at its end)
                if not state.urgent.is_set() and not state.flushing:
                    if state.busy:
                        break  # only updates: they go with the next write (woken at its end)
                    await self._linger()
                if time.monotonic() < self._retry_at and not state.flushing:
                    await self._back_off()
                state.urgent.clear()
                ids = self._writable()
                if not ids:
                    break
                for activation_id in ids:
                    del state.queue[activation_id]
                if any(i not in state.in_flight for i in state.queue):  # more than a batch:
                    state.urgent.set()  # the rest goes out right after
                state.writing += 1
                state.in_flight.update(ids)
                task = asyncio.create_task(self._send(ids))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)

    async def _send(self, ids: list[str]) -> None:
        """One request in flight; its end wakes the loop for what waits behind it."""
        state = self._state
        try:
            await self._write(ids)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the writer must never die: fires would hang
            if not isinstance(exc, StoreError):
                log.exception("writing activation records failed")
                exc = StoreError(f"{type(exc).__name__}: {exc}")
            state.in_flight.difference_update(ids)
            self._failed(ids, exc)
            self._retry_at = time.monotonic() + self._delay
            self._delay = min(RETRY_CAP, self._delay * 2)
        else:
            self._delay, self._retry_at = RETRY_FIRST, 0.0
            self.last_error = None
        finally:
            state.writing -= 1
            state.in_flight.difference_update(ids)
            state.wake.set()

    async def _back_off(self) -> None:
        """After a failed write: wait until ``_retry_at`` before writing updates again, but
        write at once when an accepted record comes (its caller waits for this one attempt,
        not for the back-off)."""
        try:
            await asyncio.wait_for(self._state.urgent.wait(), self._retry_at - time.monotonic())
        except asyncio.TimeoutError:
            pass

    async def _linger(self) -> None:
        """Only updates are queued: wait up to ``LINGER`` for an accepted record to join them."""
        try:
            await asyncio.wait_for(self._state.urgent.wait(), LINGER)
        except asyncio.TimeoutError:
            pass

    async def _write(self, ids: list[str]) -> None:
        records = self._state.records
        by_db: dict[str, list[dict[str, Any]]] = {}
        for activation_id in ids:
            record = records.get(activation_id)
            if record is None:  # refused by CouchDB meanwhile (and forgotten): nothing to write
                continue
            record.dirty = False
            by_db.setdefault(record.db, []).append(dict(record.doc))
        loop = asyncio.get_running_loop()
        for db, docs in by_db.items():
            results = await loop.run_in_executor(None, self.store.bulk_docs, db, docs)
            self.writes += 1
            if self.on_write is not None:
                self.on_write(len(docs))
            # A cluster that took a new record without its write quorum may have taken another
            # daemon's record of the same fire too: the one with its quorum counts (``settled``).
            for doc, result in zip(docs, results, strict=True):
                if result.get("accepted") is True and result.get("ok") and "_rev" not in doc:
                    rev = str(result.get("rev"))
                    settled = functools.partial(self.store.settled, db, doc["_id"], rev)
                    if not await loop.run_in_executor(None, settled):
                        result.clear()
                        result.update(error="conflict", reason="another record got in beside it")
            conflicts = [
                doc["_id"]
                for doc, result in zip(docs, results, strict=True)
                if not self._written(doc, result)
            ]
            for activation_id in conflicts:
                current = await loop.run_in_executor(None, self._current, db, activation_id)
                self._resolve(activation_id, current)

    def _current(self, db: str, activation_id: str) -> dict[str, Any] | None:
        """The record as every copy holds it (a cluster's copies may not agree yet): CouchDB's
        winning live revision, or None."""
        leaves = self.store.leaves(db, activation_id)
        return leaves[0] if leaves else None

    def _resolve(self, activation_id: str, current: dict[str, Any] | None) -> None:
        """A write of ours met a record already there (``current``, None if gone since)."""
        record = self._state.records.get(activation_id)
        if record is None:
            return
        waiting = record.stored is not None and not record.stored.done()
        if current is not None and waiting:
            if written_as(current, record.doc):
                record.doc["_rev"] = current["_rev"]
                self._written(dict(record.doc), {"ok": True, "rev": current["_rev"]})
                return
            if current.get("state") != "rejected":  # a fire another daemon stored first
                assert record.stored is not None
                del self._state.records[activation_id]
                self._state.queue.pop(activation_id, None)
                daemon = current.get("daemon")
                by = daemon.get("id") if isinstance(daemon, dict) else None
                record.stored.set_exception(
                    AlreadyFired(
                        f"run {activation_id} of event {record.doc.get('event')!r} was fired "
                        f"already{f' by daemon {by}' if by else ''}"
                    )
                )
                return
        # An update met another daemon's write (it resumed the run), or a refused fire is fired
        # again: take their revision and write ours over it.
        if current is None:
            record.doc.pop("_rev", None)
        else:
            record.doc["_rev"] = current["_rev"]
        self._enqueue(activation_id)

    def _written(self, doc: dict[str, Any], result: dict[str, Any]) -> bool:
        """Take in one result of a batch; False for a conflict to resolve."""
        activation_id = doc["_id"]
        record = self._state.records.get(activation_id)
        if record is None:
            return True
        if result.get("error") == "conflict":
            return False
        if result.get("error"):
            error = f"{result.get('error')}: {result.get('reason')}"
            log.error("activation %s could not be stored: %s", activation_id, error)
            if record.stored is not None and not record.stored.done():
                record.stored.set_exception(
                    HTTPError(500, "activation_refused", f"CouchDB refused the record: {error}")
                )
            del self._state.records[activation_id]
            return True
        self.written += 1
        record.doc["_rev"] = result["rev"]
        if record.stored is not None and not record.stored.done():
            record.stored.set_result(None)
        if not record.dirty and record.doc.get("state") in FINAL_STATES:
            del self._state.records[activation_id]  # done: nothing more will change
        return True

    def _failed(self, ids: list[str], exc: StoreError) -> None:
        """CouchDB did not take the batch: refuse what waits for acceptance, retry the rest."""
        self.last_error = str(exc)
        log.warning("cannot write activations (%d waiting): %s", len(ids), exc)
        for activation_id in ids:
            record = self._state.records.get(activation_id)
            if record is None:
                continue
            if record.stored is not None and not record.stored.done():
                record.stored.set_exception(unavailable(exc))
                del self._state.records[activation_id]  # never acknowledged: forget it
            else:
                self._state.queue[activation_id] = None
