"""Activation records: one CouchDB document per worker run, written before the 202 goes out.

Documents live in one database per month (``<activations_db>_YYYY_MM``), so that expiring old
records is dropping a database, not deleting documents one by one. Each record goes through
explicit states::

    accepted ─► running ─► succeeded | failed | timeout
        │          └─────► (daemon died) ─► accepted again, attempt + 1, on restart
        └─► rejected (accepted, then refused by a full queue)      lost (see runner)

Writes are group-committed: whatever is waiting when the writer is free goes out in one
``_bulk_docs`` request, and several updates of one record in the meantime become one write.
``accept`` waits for its write (the promise behind a 202); state updates do not wait.

Reading (resuming, the listing) goes through Mango's ``_find``, with two indexes in
``_design/couchdb-events``; on a server without Mango (CouchDB 1.x, found out at start when
``_index`` is missing) through two views in that design document (``activations_views``).
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..config import Config
from ..couch.store import Store
from ..errors import AlreadyFired, HTTPError, NotFound, StoreError, Unsupported
from ..model.capabilities import Capabilities
from ..model.message import Message, Outcome
from . import views
from .daemons import Liveness, Owner

log = logs.get("activations")

FINAL_STATES = frozenset({"succeeded", "failed", "timeout", "lost", "rejected"})
OPEN_STATES = ("accepted", "running")
BATCH = 500  # documents per _bulk_docs request
RETRY_FIRST, RETRY_CAP = 0.5, 10.0  # seconds between attempts to write updates
# Seconds that updates nobody waits for (running, final states) may wait for an ``accepted``
# record to share their ``_bulk_docs`` request, when no record is waiting for its 202: a final
# state reaches CouchDB that much later, and a burst makes about half as many requests.
LINGER = 0.03
GRACE = 1.0  # seconds past couchdb_timeout that a fire may wait for its record to be stored
MAX_ANSWER = 64 * 1024  # bytes of JSON kept of an answer
INDEX_DDOC = views.DDOC  # Mango's indexes or, without Mango, the views
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


def bounded(value: Any, limit: int = MAX_ANSWER) -> Any:
    """``value``, or a note of its size when its JSON is longer than ``limit`` bytes."""
    text = _COMPACT.encode(value)
    if len(text) <= limit:
        return value
    return {"truncated": True, "bytes": len(text), "start": text[:1000]}


@dataclass
class _Record:
    db: str
    doc: dict[str, Any]
    stored: asyncio.Future[None] | None = None  # resolved when the accepted state is stored
    dirty: bool = True


@dataclass
class _Writer:
    """What the writer task shares with callers; only the loop touches it."""

    records: dict[str, _Record] = field(default_factory=dict)
    queue: dict[str, None] = field(default_factory=dict)  # ids waiting to be written, in order
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a record someone waits for (an ``accepted`` one) is queued, or to flush (close).
    urgent: asyncio.Event = field(default_factory=asyncio.Event)
    flushing: bool = False  # closing: nothing lingers any more
    busy: bool = False  # a _bulk_docs request is in flight
    in_flight: frozenset[str] = frozenset()  # the ids it writes


class Activations:
    """The activations databases, written through one group-committing writer task."""

    def __init__(
        self, store: Store, config: Config, owner: Owner | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.owner = owner or Owner.this_process()
        self.capabilities = capabilities or Capabilities()
        self.prefix = config.activations_db
        self._writer = _Writer()
        self._task: asyncio.Task[None] | None = None
        self._known_dbs: set[str] = set()
        self.writes = 0  # _bulk_docs requests
        self.written = 0  # documents
        self.last_error: str | None = None

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._ensure_db(month_db(self.prefix, time.time()), probe=True)
        if self.capabilities.mango:
            log.info("activation records are queried through Mango (_find)")
        else:
            log.info(
                "CouchDB %s has no Mango (_find): activation records are queried through the "
                "views %s/_view/open and %s/_view/accepted",
                self.capabilities.version, views.DDOC_ID, views.DDOC_ID,
            )  # fmt: skip
        self._task = asyncio.create_task(self._write_forever())

    async def close(self, timeout: float = 3.0) -> None:
        """Write what is waiting (for at most ``timeout`` seconds), then stop the writer."""
        deadline = time.monotonic() + timeout
        self._writer.flushing = True
        self._writer.urgent.set()
        writer = self._writer
        while (writer.queue or writer.busy) and time.monotonic() < deadline:
            if self.last_error is not None and not writer.busy:
                break  # CouchDB refuses: what waits stays open, for the next start
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()

    async def _ensure_db(self, db: str, probe: bool = False) -> None:
        """Create ``db`` if missing, with the indexes (or, without Mango, the views) the
        reading needs. ``probe`` (at start): a server without ``_index`` has no Mango; later,
        a month's database does not change that (a missing ``_index`` is an error then)."""
        if db in self._known_dbs:
            return
        loop = asyncio.get_running_loop()

        def make(mango: bool) -> bool:
            """Whether the server has Mango."""
            if self.store.create(db):
                log.info("created activations database %s", db)
            # Both in one design document: every write reads a database's design documents
            # (validation functions), so fewer is faster.
            if mango:
                try:
                    self.store.index(db, ["state"], "state", INDEX_DDOC)
                    self.store.index(db, ["accepted"], "accepted", INDEX_DDOC)
                    return True
                except Unsupported as exc:
                    if not probe:
                        raise
                    log.debug("%s", exc)
            views.ensure(self.store, db)
            return False

        self.capabilities.mango = await loop.run_in_executor(None, make, self.capabilities.mango)
        self._known_dbs.add(db)

    # -- writing --------------------------------------------------------------------------
    async def accept(self, messages: Iterable[Message], store_output: dict[str, bool]) -> None:
        """Store the ``accepted`` record of each message; raises 503 when CouchDB fails."""
        futures = []
        loop = asyncio.get_running_loop()
        for message in messages:
            db = month_db(self.prefix, message.accepted)
            if db not in self._known_dbs:
                try:
                    await self._ensure_db(db)
                except StoreError as exc:
                    raise _unavailable(exc) from None
            doc = {
                "_id": message.id,
                "type": "activation",
                "event": message.event,
                "worker": message.worker,
                "worker_rev": message.worker_rev,
                "arguments": message.arguments,
                "request": message.request,
                "state": "accepted",
                "attempt": message.attempt,
                "chain": message.chain,
                "accepted": iso(message.accepted),
                "started": None,
                "ended": None,
                "store_output": store_output.get(message.worker, True),
                "daemon": self.owner.fields(),
            }
            stored: asyncio.Future[None] = loop.create_future()
            self._writer.records[message.id] = _Record(db, doc, stored=stored)
            self._enqueue(message.id)
            futures.append((message.id, stored))
        self._writer.urgent.set()
        await self._stored(futures)

    async def _stored(self, futures: list[tuple[str, asyncio.Future[None]]]) -> None:
        """Wait until every record is stored; after ``couchdb_timeout`` (and a little), records
        not yet on their way to CouchDB (the writer still busy with an earlier request) are
        taken back and the caller gets its 503: a fire never waits behind the writer's
        retries."""
        waiting = asyncio.gather(*(future for _id, future in futures))
        try:
            await asyncio.wait_for(asyncio.shield(waiting), self.config.couchdb_timeout + GRACE)
            return
        except asyncio.TimeoutError:
            pass
        writer = self._writer
        if not any(activation_id in writer.in_flight for activation_id, _f in futures):
            error = _unavailable(StoreError(self.last_error or "CouchDB did not answer in time"))
            for activation_id, future in futures:
                writer.queue.pop(activation_id, None)
                if writer.records.get(activation_id) is not None and not future.done():
                    del writer.records[activation_id]  # never acknowledged: forget it
                    future.set_exception(error)
        await waiting  # being written: its answer (or timeout) decides

    def adopt(self, db: str, doc: dict[str, Any]) -> None:
        """Take over a record read back from CouchDB (resuming after a restart)."""
        self._writer.records[doc["_id"]] = _Record(db, doc, dirty=False)

    def update(self, activation_id: str, **fields: Any) -> None:
        """Change a record; written soon, with whatever else is waiting. Never waits."""
        record = self._writer.records.get(activation_id)
        if record is None:
            return
        record.doc.update(fields)
        self._enqueue(activation_id)

    def started(self, message: Message) -> None:
        self.update(message.id, state="running", attempt=message.attempt, started=iso(time.time()))

    def retrying(self, message: Message, error: str | None) -> None:
        self.update(message.id, state="accepted", attempt=message.attempt, last_error=error)

    def finished(self, message: Message, outcome: Outcome) -> None:
        record = self._writer.records.get(message.id)
        if record is None:
            return
        state = "succeeded" if outcome.state == "delivered" else outcome.state
        fields: dict[str, Any] = {"state": state, "ended": iso(time.time()), "error": outcome.error}
        if record.doc.get("store_output", True):
            fields["answer"] = bounded(outcome.answer)
            fields["stdout"] = list(outcome.stdout)
            fields["stderr"] = list(outcome.stderr)
        if outcome.emitted:
            fields["emitted"] = list(outcome.emitted)
        if outcome.state == "delivered":
            fields["delivered_only"] = True  # a stream worker: done once delivered
        self.update(message.id, **fields)

    def _enqueue(self, activation_id: str) -> None:
        record = self._writer.records[activation_id]
        record.dirty = True
        self._writer.queue[activation_id] = None
        self._writer.wake.set()

    @property
    def backlog(self) -> int:
        return len(self._writer.queue)

    async def _write_forever(self) -> None:
        delay = RETRY_FIRST
        writer = self._writer
        while True:
            await writer.wake.wait()
            writer.wake.clear()
            while writer.queue:
                if not writer.urgent.is_set() and not writer.flushing:
                    await self._linger()
                writer.urgent.clear()
                ids = list(writer.queue)[:BATCH]
                for activation_id in ids:
                    del writer.queue[activation_id]
                if writer.queue:  # more than a batch waiting: the rest goes out right after
                    writer.urgent.set()
                writer.busy, writer.in_flight = True, frozenset(ids)
                try:
                    await self._write(ids)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the writer must never die: fires would hang
                    if not isinstance(exc, StoreError):
                        log.exception("writing activation records failed")
                        exc = StoreError(f"{type(exc).__name__}: {exc}")
                    self._failed(ids, exc)
                    writer.busy, writer.in_flight = False, frozenset()
                    await self._back_off(delay)
                    delay = min(RETRY_CAP, delay * 2)
                    continue
                finally:
                    writer.busy, writer.in_flight = False, frozenset()
                delay = RETRY_FIRST
                self.last_error = None

    async def _back_off(self, delay: float) -> None:
        """After a failed write: wait ``delay`` before writing updates again, but write at once
        when an accepted record comes (its caller waits for this one attempt, not for the
        back-off)."""
        try:
            await asyncio.wait_for(self._writer.urgent.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _linger(self) -> None:
        """Only updates are queued: wait up to ``LINGER`` for an accepted record to join them."""
        try:
            await asyncio.wait_for(self._writer.urgent.wait(), LINGER)
        except asyncio.TimeoutError:
            pass

    async def _write(self, ids: list[str]) -> None:
        records = self._writer.records
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
        record = self._writer.records.get(activation_id)
        if record is None:
            return
        waiting = record.stored is not None and not record.stored.done()
        if current is not None and waiting:
            if _same(current, record.doc):  # our own write, its answer lost on the way
                record.doc["_rev"] = current["_rev"]
                self._written(dict(record.doc), {"ok": True, "rev": current["_rev"]})
                return
            if current.get("state") != "rejected":  # a fire another daemon stored first
                assert record.stored is not None
                del self._writer.records[activation_id]
                self._writer.queue.pop(activation_id, None)
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
        record = self._writer.records.get(activation_id)
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
            del self._writer.records[activation_id]
            return True
        self.written += 1
        record.doc["_rev"] = result["rev"]
        if record.stored is not None and not record.stored.done():
            record.stored.set_result(None)
        if not record.dirty and record.doc.get("state") in FINAL_STATES:
            del self._writer.records[activation_id]  # done: nothing more will change
        return True

    def _failed(self, ids: list[str], exc: StoreError) -> None:
        """CouchDB did not take the batch: refuse what waits for acceptance, retry the rest."""
        self.last_error = str(exc)
        log.warning("cannot write activations (%d waiting): %s", len(ids), exc)
        for activation_id in ids:
            record = self._writer.records.get(activation_id)
            if record is None:
                continue
            if record.stored is not None and not record.stored.done():
                record.stored.set_exception(_unavailable(exc))
                del self._writer.records[activation_id]  # never acknowledged: forget it
            else:
                self._writer.queue[activation_id] = None

    # -- reading --------------------------------------------------------------------------
    def databases(self) -> list[str]:
        """The activations databases, newest first (blocking)."""
        prefix = self.prefix + "_"
        names = [db for db in self.store.databases() if db.startswith(prefix)]
        return sorted(names, reverse=True)

    def open_records(self, before: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every record not in a final state (accepted before ``before``, if given), oldest
        first (blocking; for resuming)."""
        found: list[tuple[str, dict[str, Any]]] = []
        where: dict[str, Any] = {"state": {"$in": list(OPEN_STATES)}}
        if before is not None:
            where["accepted"] = {"$lt": iso(before)}
        for db in reversed(self.databases()):
            if not self.capabilities.mango:
                docs = views.open_records(self.store, db, None if before is None else iso(before))
                found.extend((db, doc) for doc in docs)
                continue
            skip = 0
            while True:
                docs = self.store.find(db, where, limit=BATCH, skip=skip)
                found.extend((db, doc) for doc in docs)
                if len(docs) < BATCH:
                    break
                skip += BATCH
        found.sort(key=lambda item: str(item[1].get("accepted", "")))
        return found

    def orphans(self, before: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The open records of daemons that are gone (see ``daemons.py``), now claimed for this
        daemon: each rewritten from the revision read to name it, so that of several daemons
        taking over, one gets each record (on a cluster: ``Store.prevails``). Oldest first
        (blocking)."""
        now = time.time()
        liveness = Liveness(self.store, self.config.events_db, self.owner, now)
        claims: dict[str, list[dict[str, Any]]] = {}
        order: list[str] = []
        for db, doc in self.open_records(before):
            if doc["_id"] in self._writer.records or not liveness.gone(doc.get("daemon")):
                continue  # this daemon's own run, or one a live daemon runs
            claims.setdefault(db, []).append({**doc, "daemon": self.owner.fields()})
            order.append(doc["_id"])
        claimed: dict[str, tuple[str, dict[str, Any]]] = {}
        for db, docs in claims.items():
            for doc, result in zip(docs, self.store.bulk_docs(db, docs), strict=False):
                if not result.get("ok") or result.get("id") != doc["_id"]:
                    continue
                rev = str(result["rev"])
                if not self.store.prevails(db, doc["_id"], rev):
                    continue  # a cluster took another daemon's claim beside it
                claimed[doc["_id"]] = (db, {**doc, "_rev": rev})
        return [claimed[doc_id] for doc_id in order if doc_id in claimed]

    def get(self, activation_id: str) -> dict[str, Any]:
        """One record, from memory if it is still changing, else from CouchDB (blocking)."""
        record = self._writer.records.get(activation_id)
        if record is not None:
            return dict(record.doc)
        for db in self.databases():
            try:
                return self.store.get(db, activation_id)
            except NotFound:
                continue
        raise NotFound(f"no activation {activation_id!r}")

    def query(
        self, selector: dict[str, Any], since: str | None, until: str | None, limit: int, skip: int
    ) -> list[dict[str, Any]]:
        """Records matching ``selector`` accepted in [since, until], newest first (blocking)."""
        where = dict(selector)
        span: dict[str, str] = {}
        if since:
            span["$gte"] = since
        if until:
            span["$lte"] = until
        where["accepted"] = span or {"$gt": None}
        if not self.capabilities.mango:
            dbs = self.databases()
            if since:  # the months from since's on
                dbs = [db for db in dbs if db >= month_db(self.prefix, _parse_iso(since) or 0)]
            return views.listing(self.store, dbs, selector, since, until, limit, skip)
        found: list[dict[str, Any]] = []
        for db in self.databases():
            # Sorted by the index on accepted, so that the limit keeps the newest, not the
            # first ones the index happens to yield (the oldest).
            found.extend(
                self.store.find(db, where, limit=skip + limit, sort=[{"accepted": "desc"}])
            )
            if since and db <= month_db(self.prefix, _parse_iso(since) or 0):
                break
        found.sort(key=lambda doc: str(doc.get("accepted", "")), reverse=True)
        return found[skip : skip + limit]

    def expire(self, now: float) -> list[str]:
        """Drop the monthly databases wholly older than ``activations_retention_days``."""
        horizon = now - self.config.activations_retention_days * 86400
        keep = month_db(self.prefix, horizon)
        dropped = []
        for db in self.databases():
            if db < keep:
                self.store.delete(db)
                self._known_dbs.discard(db)
                dropped.append(db)
        return dropped


def _same(stored: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether ``stored`` is ``doc`` as written (revisions aside)."""
    return {k: v for k, v in stored.items() if k != "_rev"} == {
        k: v for k, v in doc.items() if k != "_rev"
    }


def _parse_iso(text: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _unavailable(exc: StoreError) -> HTTPError:
    return HTTPError(
        503,
        "unavailable",
        f"cannot store the activation record, so nothing was accepted: {exc}",
        {"Retry-After": "5"},
    )
