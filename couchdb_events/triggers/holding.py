"""What a changes follower stands on: the parts every follower uses (``Context``), and
``Holding``, the follower's state (what its status shows) and its hold on the trigger: the
checkpoint, kept with the lease in the state database (``lease.py``), taken, renewed, given
back and lost. ``Follower`` (``changes.py``) adds the reading and firing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import logs
from ..couch.store import Store
from ..errors import NotFound, StoreError
from ..model.capabilities import Capabilities
from ..model.registry import Registry
from ..model.sources import ChangesTrigger
from ..runs.daemons import Owner
from .lease import RENEW, Lease, LeaseLost, blocking

if TYPE_CHECKING:
    from ..runs.dispatch import Dispatcher
    from ..runs.runner import Runner

log = logs.get("changes")


@dataclass
class Context:
    """What every follower uses."""

    registry: Registry
    dispatcher: Dispatcher
    runner: Runner
    store: Store  # state documents (short calls)
    feed_store: Store  # long-polls: its socket timeout outlasts LONGPOLL_MS
    events_db: str
    state_db: str
    owner: Owner
    clock: Callable[[], float] = time.time
    capabilities: Capabilities = field(default_factory=Capabilities)


@dataclass
class Holding:
    """A follower's state and its checkpoint and lease (``Follower`` is the whole of it)."""

    event_id: str
    trigger: ChangesTrigger
    ctx: Context
    # following, standby, retrying, waiting (CouchDB or database), unsupported (see run)
    state: str = "starting"
    seq: Any = None  # the checkpoint written: every change up to it is accepted
    lag: int | None = None
    fired: int = 0
    connected: bool = False
    last_error: str | None = None
    _next: Any = None  # where to read on: changes up to it are accepted (checkpoint or later)
    _caught_up: bool = False
    _db_was_missing: bool = False
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    lease: Lease = field(init=False)

    def __post_init__(self) -> None:
        ctx = self.ctx
        self.lease = Lease(
            ctx.store,
            ctx.state_db,
            ctx.events_db,
            self.event_id,
            self.trigger.db,
            ctx.owner,
            ctx.clock,
        )

    # -- the checkpoint and the lease ---------------------------------------------------
    async def _acquire(self) -> bool:
        """Take the lease (True), or see that another daemon holds it (False)."""
        before = self.lease.holder
        held, seq = await self.lease.acquire(self._start_seq)
        self.seq = seq
        if not held:
            if self.lease.holder != before:
                log.info("changes of %s for event %s: followed by %s", self.trigger.db,
                         self.event_id, self.lease.holder)  # fmt: skip
            return False
        self._next = seq
        self.state = "following"
        if self.last_error and "lease" in self.last_error:
            self.last_error = None  # it holds the lease again
        log.info("changes of %s for event %s: following from %s", self.trigger.db,
                 self.event_id, seq)  # fmt: skip
        return True

    async def _start_seq(self) -> Any:
        """Where a trigger without a checkpoint starts: the database's first change, or now."""
        if self.trigger.since == 0 or self._db_was_missing:
            return 0
        try:
            return await blocking(self.ctx.store.update_seq, self.trigger.db)
        except NotFound:
            self._db_was_missing = True  # once created, every change of it is new
            raise

    async def _checkpoint(self, seq: Any) -> None:
        await self.lease.save(seq)
        self.seq = seq

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW / 2)
            try:
                await self.lease.renew()
            except LeaseLost as exc:
                self._lost(exc)  # the loop sees it before firing more
            except StoreError as exc:
                log.warning("changes trigger of event %s: cannot renew its lease: %s",
                            self.event_id, exc)  # fmt: skip
                if self.lease.held and self.ctx.clock() > self.lease.until:
                    # Run out: another daemon may hold it by now. Nothing more is fired until
                    # this daemon has taken it again.
                    self.lease.held = False
                    self._lost(LeaseLost(None), ran_out=True)

    async def _give_back(self) -> None:
        try:
            await self.lease.give_back(self._next)
            self.seq = self._next
        except StoreError as exc:
            log.warning("changes trigger of event %s: cannot give back its lease: %s",
                        self.event_id, exc)  # fmt: skip

    def _lost(self, exc: LeaseLost, ran_out: bool = False) -> None:
        if self.state == "standby":
            return  # said already
        self.state = "standby"
        if ran_out:
            self.last_error = (
                f"its lease ran out while CouchDB could not be reached: stopped following "
                f"{self.trigger.db} until it has the lease again"
            )
            log.warning("changes trigger of event %s: %s", self.event_id, self.last_error)
            return
        by = f"daemon {exc.holder}" if exc.holder else "another daemon"
        self.last_error = f"lost its lease to {by}: stopped following {self.trigger.db}"
        log.warning("changes trigger of event %s: lost its lease to %s (this daemon was held up "
                    "past it, or could not renew it): it no longer follows %s", self.event_id,
                    by, self.trigger.db)  # fmt: skip

    # -- what status shows ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        trigger = self.trigger
        return {
            "db": trigger.db,
            "filter": "_selector" if trigger.selector is not None else trigger.filter,
            "state": self.state,
            "checkpoint": self.seq,
            "lag": self.lag if self.lease.held else None,
            "fired": self.fired,
            "connected": self.connected,
            "owner": self.lease.holder,
            "last_error": self.last_error,
        }
