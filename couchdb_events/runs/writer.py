"""The activation records' writer: what callers hand it, over the group commit (``commit``).

``accept`` waits for its write (the promise behind a 202), though never longer than
``couchdb_timeout`` and ``GRACE`` while the writer is busy; state updates do not wait. While a
record may change, this daemon holds it (``held``): reading it is reading memory.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from ..config import Config
from ..couch.store import Store
from ..errors import AlreadyFired, StoreError
from ..model.message import Message, Outcome
from .commit import GroupCommit, Record
from .daemons import Owner
from .months import Months
from .records import accepted_doc, final_fields, iso, month_db, unavailable

GRACE = 1.0  # seconds past couchdb_timeout that a fire may wait for its record to be stored


class Writer(GroupCommit):
    """The records this daemon writes, through one group-committing writer task."""

    def __init__(self, store: Store, config: Config, owner: Owner, months: Months) -> None:
        super().__init__(store)
        self.config = config
        self.owner = owner
        self.months = months
        self.prefix = config.activations_db

    def held(self, activation_id: str) -> dict[str, Any] | None:
        """A copy of the record while this daemon still holds it (it may change), else None."""
        record = self._state.records.get(activation_id)
        return None if record is None else dict(record.doc)

    def held_in(self, activation_id: str) -> tuple[str, dict[str, Any]] | None:
        """``held``, with the record's database."""
        record = self._state.records.get(activation_id)
        return None if record is None else (record.db, dict(record.doc))

    def holds(self, activation_id: str) -> bool:
        return activation_id in self._state.records

    async def accept(self, messages: Iterable[Message], store_output: dict[str, bool]) -> None:
        """Store the ``accepted`` record of each message; raises 503 when CouchDB fails."""
        futures = []
        loop = asyncio.get_running_loop()
        messages = list(messages)
        for message in messages:  # a run this daemon holds already (a retry clicked twice)
            if message.id in self._state.records:
                raise AlreadyFired(f"run {message.id} of event {message.event!r} was fired already")
        for message in messages:
            db = month_db(self.prefix, message.accepted)
            if not self.months.known(db):
                try:
                    await self.months.ensure(db)
                except StoreError as exc:
                    raise unavailable(exc) from None
            doc = accepted_doc(message, store_output.get(message.worker, True), self.owner.fields())
            stored: asyncio.Future[None] = loop.create_future()
            self._state.records[message.id] = Record(db, doc, stored=stored)
            self._enqueue(message.id)
            futures.append((message.id, stored))
        self._state.urgent.set()
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
        state = self._state
        if not any(activation_id in state.in_flight for activation_id, _f in futures):
            error = unavailable(StoreError(self.last_error or "CouchDB did not answer in time"))
            for activation_id, future in futures:
                state.queue.pop(activation_id, None)
                if state.records.get(activation_id) is not None and not future.done():
                    del state.records[activation_id]  # never acknowledged: forget it
                    future.set_exception(error)
        await waiting  # being written: its answer (or timeout) decides

    def adopt(self, db: str, doc: dict[str, Any]) -> None:
        """Take over a record read back from CouchDB (resuming after a restart)."""
        self._state.records[doc["_id"]] = Record(db, doc, dirty=False)

    def update(self, activation_id: str, **fields: Any) -> None:
        """Change a record; written soon, with whatever else is waiting. Never waits."""
        record = self._state.records.get(activation_id)
        if record is None:
            return
        record.doc.update(fields)
        self._enqueue(activation_id)

    def started(self, message: Message) -> None:
        self.update(message.id, state="running", attempt=message.attempt, started=iso(time.time()))

    def retrying(self, message: Message, error: str | None) -> None:
        self.update(message.id, state="accepted", attempt=message.attempt, last_error=error)

    def finished(self, message: Message, outcome: Outcome) -> None:
        record = self._state.records.get(message.id)
        if record is None:
            return
        self.update(message.id, **final_fields(record.doc, outcome))
