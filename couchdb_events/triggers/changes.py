"""Changes triggers: an event whose trigger has ``changes`` fires for every change of a database.

Each change that passes the trigger's filter fires the event like ``POST /_events/<event id>``
from the peer ``changes``, with the change row as the body plus the database's name::

    {"db": "orders", "id": "o17", "seq": ..., "changes": [{"rev": "2-..."}], "doc": {...}}

(``doc`` with ``include_docs``; ``deleted: true`` for a deletion), so that ``":id"`` or
``":doc"`` can be used in the event's worker arguments.

One ``Follower`` per such event reads the database's ``_changes`` (a batch at a time, then
long-polling), fires a batch's changes (all at once, so that their activation records share
group commits), and only when every one of them is accepted moves its checkpoint, kept with a
lease in the state database (``lease.py``). After a restart it goes on from there: no change is
missed, and in normal operation none fires twice. A daemon killed between accepting and
checkpointing fires that batch's changes again, but with ``durable`` on their runs' ids derive
from the event, the database, the document and its revision, so CouchDB refuses the second
record of each and nothing runs twice (without ``durable``: at least once). A change whose
firing is refused (a full queue, a missing worker) is retried with back-off, holding the
checkpoint before it. With several daemons on one CouchDB, the one holding the lease follows
the trigger and the others wait in ``standby``.

Here the follower's reading and firing; its state, checkpoint and lease are ``Holding``
(``holding.py``), what a change row means is ``rows.py``. ``ChangesTriggers``
(``followers.py``) starts, restarts and stops followers as event documents change.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from .. import logs
from ..couch.store import Changes
from ..errors import AlreadyFired, EventsError, HTTPError, NotFound, StoreError
from ..model.request import Request
from .holding import Holding
from .lease import LeaseLost, blocking
from .rows import change_body, change_origin, seq_number
from .threads import in_thread

log = logs.get("changes")

BATCH = 100  # changes per request, fired together
LONGPOLL_MS = 25_000
STANDBY_POLL = 5.0  # seconds between looks at another daemon's lease
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 5.0  # CouchDB unreachable, database missing
FIRE_BACKOFF_CAP = 30.0  # firing refused


class Follower(Holding):
    """One event's changes trigger: ``run`` is its loop, ``stop`` ends it after its batch."""

    # -- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        if self.trigger.selector is not None and self._unsupported():
            return
        backoff = BACKOFF_FIRST
        renewer: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if not self.lease.held:
                        if not await self._acquire():
                            self.state = "standby"
                            await self._pause(STANDBY_POLL)
                            continue
                        renewer = renewer or asyncio.create_task(self._renew_forever())
                    if self._next != self.seq:  # accepted, but the checkpoint failed
                        await self._checkpoint(self._next)
                    batch = await self._fetch()
                    if batch is None:
                        break
                    self._reached()
                    backoff = BACKOFF_FIRST
                    if await self._fire_all(batch):
                        self._next = batch.last_seq
                        await self._checkpoint(self._next)
                        await self._measure(batch)
                except LeaseLost as exc:
                    self._lost(exc)
                except StoreError as exc:
                    self._failed(exc, backoff)
                    await self._pause(backoff)
                    backoff = min(BACKOFF_CAP, backoff * 2)
        finally:
            if renewer is not None:
                renewer.cancel()
            if self.lease.held:
                await self._give_back()

    async def stop(self) -> None:
        """Ends ``run`` once the batch being fired is accepted and checkpointed."""
        self._stopping.set()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # -- reading and firing ---------------------------------------------------------------
    async def _fetch(self) -> Changes | None:
        """The next batch, or None when stopped while waiting for it."""
        trigger = self.trigger
        fetch = functools.partial(
            self.ctx.feed_store.changes,
            trigger.db,
            self._next,
            longpoll_ms=LONGPOLL_MS if self._caught_up and self.connected else 0,
            limit=BATCH,
            include_docs=trigger.include_docs,
            selector=trigger.selector,
            filter=trigger.filter,
            query_params=trigger.query_params,
        )
        fetching = asyncio.ensure_future(in_thread(fetch))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not fetching.done():  # stopped: the answer, whenever it comes, is dropped
            fetching.add_done_callback(lambda f: f.cancelled() or f.exception())
            return None
        batch = fetching.result()
        self._caught_up = len(batch.results) < BATCH
        return batch

    async def _fire_all(self, batch: Changes) -> bool:
        """Fire every change of the batch; retry the refused ones with back-off. True once all
        are accepted; False if stopped first (the checkpoint then stays before the first change
        not accepted)."""
        changes = batch.results
        self.lag = len(changes) + (batch.pending or 0)
        done = [False] * len(changes)
        delay = BACKOFF_FIRST
        while True:
            if not self.lease.held or self.lease.due():
                await self._checkpoint(self.seq)  # renew before firing: is it still ours?
            todo = [i for i, ok in enumerate(done) if not ok]
            errors = await asyncio.gather(*(self._fire(changes[i]) for i in todo))
            for i, error in zip(todo, errors, strict=True):
                done[i] = error is None
            if all(done):
                return True
            progress = any(error is None for error in errors)
            delay = BACKOFF_FIRST if progress else delay  # a queue draining: soon again
            first = done.index(False)
            error = next(e for e in errors if e is not None)
            message = f"change {changes[first].get('id')!r} not fired: {error}"
            if message != self.last_error:
                log.warning("changes trigger of event %s: %s; retrying in %.1f s",
                            self.event_id, message, delay)  # fmt: skip
            self.state, self.last_error = "retrying", message
            before = changes[first - 1].get("seq") if first > 0 else None
            if before is not None and before != self._next:
                self._next = before
                await self._checkpoint(self._next)
            if self._stopping.is_set():
                return False
            await self._pause(delay)
            if self._stopping.is_set():
                return False
            delay = min(FIRE_BACKOFF_CAP, delay * 2)

    async def _fire(self, change: dict[str, Any]) -> str | None:
        """Fire the event for one change: None once accepted, or why not."""
        spec = self.ctx.registry.events.get(self.event_id)
        if spec is None or spec.disabled or spec.error:
            return f"event {self.event_id!r} is deleted, disabled or invalid"
        request = Request(
            "POST",
            f"/{self.event_id}",
            body=change_body(self.trigger.db, change),
            peer="changes",
            origin=change_origin(self.event_id, self.trigger.db, change),
        )
        try:
            fired = self.ctx.dispatcher.prepare(request, [spec])
            await self.ctx.runner.run(fired.runs)
        except AlreadyFired:
            return None  # another daemon (or this one, before a restart) fired it: done
        except HTTPError as exc:
            return exc.reason
        except EventsError as exc:
            return str(exc)
        self.fired += 1
        return None

    async def _measure(self, batch: Changes) -> None:
        """Lag: changes after the checkpoint, as CouchDB says (``pending``) or as estimated."""
        if batch.pending is not None:
            self.lag = batch.pending
        elif len(batch.results) < BATCH:
            self.lag = 0
        else:
            current = seq_number(await blocking(self.ctx.store.update_seq, self.trigger.db))
            at = seq_number(batch.last_seq)
            self.lag = max(0, current - at) if current is not None and at is not None else None
        if self.state == "retrying":
            self.last_error = None
        self.state = "following"

    # -- what went wrong ------------------------------------------------------------------
    def _unsupported(self) -> bool:
        """A selector on a server without Mango (``filter=_selector`` came with 2.0): said in
        status and log, once, and nothing is followed until the event document changes."""
        error = self.ctx.capabilities.selector_error()
        if error is None:
            return False
        self.state, self.last_error = "unsupported", error
        log.error("changes trigger of event %s: %s", self.event_id, error)
        return True

    def _reached(self) -> None:
        if not self.connected and self.last_error:
            log.warning("changes trigger of event %s: reading %s again, from %s",
                        self.event_id, self.trigger.db, self.seq)  # fmt: skip
            self.last_error = None
        self.connected = True
        self._db_was_missing = False
        if self.state == "waiting":
            self.state = "following"

    def _failed(self, exc: StoreError, backoff: float) -> None:
        db = self.trigger.db
        if isinstance(exc, NotFound):
            if self.trigger.filter:
                message = f"database {db!r} or its filter {self.trigger.filter!r} does not exist"
            else:
                message = f"database {db!r} does not exist"
            message += f" ({exc})"
        else:
            message = str(exc)
        if self.connected or self.last_error != message:
            log.warning("changes trigger of event %s: %s; retrying in %.1f s",
                        self.event_id, message, backoff)  # fmt: skip
        self.connected = False
        self.state = "waiting"
        self.last_error = message
