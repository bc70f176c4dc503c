"""A changes trigger's state document: its checkpoint, and the lease that lets one daemon of
several follow the trigger.

``changes:<event id>`` in the state database (``couch.state``: an ordinary document, whose
revision CouchDB checks)::

    {"event": "order_paid", "db": "orders", "seq": "42-g1AAA...", "owner": "<host>:<pid>",
     "daemon": {"id": "<host>:<pid>", "host": "<host>", "pid": 4242, "started": 1795912000.1},
     "lease_until": 1795912345.6, "updated": "2026-...Z"}

Its ``owner`` follows the trigger until ``lease_until``, renewing it; another daemon takes it
only once it has run out (or was given back, ``lease_until`` now, at a clean stop). Every write
goes from the revision last seen, so a conflict means another daemon wrote it first: it holds
the trigger now (``LeaseLost``), and a holder that was paused past its lease (a stalled VM)
finds that out at its next write, before it fires anything more: the follower renews before
each batch whenever the lease is near its end. The checkpoint moves only with the lease, so a
slower daemon can never move it back. A lease whose owner is a process of this host that no
longer runs (a daemon killed and started again) is taken over at once, without waiting for it
to run out.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..couch import state
from ..couch.cluster import written_as
from ..couch.store import Store
from ..errors import Conflict
from ..runs.daemons import Owner, process_gone
from .schedule import iso

T = TypeVar("T")

KIND = "changes"
LEASE = 30.0  # seconds a lease lasts without renewing
RENEW = 10.0  # seconds between renewals


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, a blocking store call, in the loop's executor."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


class LeaseLost(Exception):
    """Another daemon wrote the state document: it follows the trigger now (``holder``, when
    known)."""

    def __init__(self, holder: str | None = None) -> None:
        super().__init__(holder)
        self.holder = holder


def owner_gone(doc: Mapping[str, Any], host: str) -> bool:
    """Whether the lease in ``doc`` is held by a process of ``host`` that no longer runs."""
    daemon = doc.get("daemon")
    if not isinstance(daemon, Mapping):
        return False
    return process_gone(daemon.get("host"), daemon.get("pid"), daemon.get("started"), host) is True


@dataclass
class Lease:
    store: Store
    state_db: str
    events_db: str  # where earlier versions kept it (``state.read``)
    event_id: str
    db: str  # the watched database: a checkpoint of another database does not count
    owner: Owner
    clock: Callable[[], float]
    held: bool = False
    seq: Any = None  # the checkpoint last written by this daemon
    holder: str | None = None  # the owner, as last seen
    until: float = 0.0
    written: float = 0.0  # when this daemon last wrote it
    _rev: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def doc_id(self) -> str:
        return state.doc_id(KIND, self.event_id)

    async def _read(self) -> dict[str, Any] | None:
        doc = await blocking(
            state.read, self.store, self.state_db, self.events_db, KIND, self.event_id
        )
        rev = doc.get("_rev") if doc is not None else None
        self._rev = str(rev) if rev is not None else None
        return doc

    async def _lost(self) -> LeaseLost:
        """After a conflict: the lease is not ours; who holds it now, if CouchDB says."""
        self.held = False
        try:
            doc = await self._read()
        except Exception:  # only for the message: the lease is lost either way
            return LeaseLost(None)
        owner = doc.get("owner") if doc else None
        self.holder = str(owner) if owner is not None else None
        return LeaseLost(self.holder)

    async def _write(self, seq: Any, lease: float) -> None:
        """From the revision last seen; raises ``Conflict`` if another daemon wrote first."""
        now = self.clock()
        doc: dict[str, Any] = {
            "_id": self.doc_id,
            "event": self.event_id,
            "db": self.db,
            "seq": seq,
            "owner": self.owner.id,
            "daemon": self.owner.fields(),
            "lease_until": now + lease,
            "updated": iso(now),
        }
        if self._rev is not None:
            doc["_rev"] = self._rev
        try:
            self._rev = await blocking(self._put, doc)
        except Conflict:
            if not written_as(await self._read(), doc):
                raise
        self.until, self.written, self.seq = now + lease, now, seq

    def _put(self, doc: dict[str, Any]) -> str:
        return self.store.put(self.state_db, doc, exclusive=True)

    async def acquire(self, start: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """Take the lease: ``(True, checkpoint)``, the checkpoint being ``await start()`` when
        there is none for this database; or ``(False, checkpoint or None)`` when another
        daemon holds it."""
        while True:
            doc = await self._read()
            seq = doc["seq"] if doc and doc.get("db") == self.db and "seq" in doc else None
            owner, until = (doc.get("owner"), doc.get("lease_until")) if doc else (None, None)
            if (
                doc is not None
                and owner not in (None, self.owner.id)
                and isinstance(until, (int, float))
                and until > self.clock()
                and not owner_gone(doc, self.owner.host)
            ):
                self.holder, self.held = str(owner), False
                return False, seq
            if seq is None:
                seq = await start()
            async with self._lock:
                try:
                    await self._write(seq, LEASE)
                except Conflict:
                    continue
            self.holder, self.held = self.owner.id, True
            return True, seq

    async def save(self, seq: Any) -> None:
        """Move the checkpoint (and renew the lease); ``LeaseLost`` if it is not ours."""
        async with self._lock:
            if not self.held:
                raise LeaseLost
            try:
                await self._write(seq, LEASE)
            except Conflict:
                raise await self._lost() from None

    def due(self) -> bool:
        """Whether the lease needs renewing before more changes are fired."""
        return self.clock() > self.until - RENEW

    async def renew(self) -> None:
        """Renew if not written for ``RENEW`` seconds, with the checkpoint last written;
        ``LeaseLost`` if it is not ours."""
        async with self._lock:
            if not self.held or self.clock() - self.written < RENEW:
                return
            try:
                await self._write(self.seq, LEASE)
            except Conflict:
                raise await self._lost() from None

    async def give_back(self, seq: Any) -> None:
        """At a stop: the checkpoint stays, the lease ends now."""
        async with self._lock:
            if self.held:
                self.held = False
                try:
                    await self._write(seq, 0.0)
                except Conflict:
                    pass  # another daemon holds it already: nothing to give back
