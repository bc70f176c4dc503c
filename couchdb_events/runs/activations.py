"""Activation records: one CouchDB document per worker run, written before the 202 goes out.

Documents live in one database per month (``<activations_db>_YYYY_MM``, ``months``), so that
expiring old records is dropping a database, not deleting documents one by one. Each record
goes through explicit states::

    accepted ─► running ─► succeeded | failed | timeout
        │          └─────► (daemon died) ─► accepted again, attempt + 1, on restart
        └─► rejected (accepted, then refused by a full queue)      lost (see runner)

Writes are group-committed (``writer``, over ``commit``): whatever is waiting when the writer
is free goes out in one ``_bulk_docs`` request, and several updates of one record in the
meantime become one write. ``accept`` waits for its write (the promise behind a 202); state
updates do not wait.

Reading (resuming, the listing, ``reading``) goes through Mango's ``_find``, with two indexes in
``_design/couchdb-events``; on a server without Mango (CouchDB 1.x, found out at start when
``_index`` is missing) through two views in that design document (``views``). What a record
holds is ``records``'. ``Activations`` is all of them as one object.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from .. import logs
from ..config import Config
from ..couch.store import Store
from ..model.capabilities import Capabilities
from ..model.message import Message, Outcome
from . import views
from .daemons import Owner
from .months import Months
from .reading import Reader
from .records import month_db
from .writer import Writer

log = logs.get("activations")


class Activations:
    """The activations databases (``months``), written through one group-committing writer
    task (``writer``), read back by ``reader``."""

    def __init__(
        self, store: Store, config: Config, owner: Owner | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.owner = owner or Owner.this_process()
        self.capabilities = capabilities or Capabilities()
        self.prefix = config.activations_db
        self.months = Months(store, config, self.capabilities)
        self.writer = Writer(store, config, self.owner, self.months)
        self.reader = Reader(store, config, self.owner, self.capabilities, self.months, self.writer)

    # -- life -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.months.ensure(month_db(self.prefix, time.time()), probe=True)
        if self.capabilities.mango:
            log.info("activation records are queried through Mango (_find)")
        else:
            log.info(
                "CouchDB %s has no Mango (_find): activation records are queried through the "
                "views %s/_view/open and %s/_view/accepted",
                self.capabilities.version, views.DDOC_ID, views.DDOC_ID,
            )  # fmt: skip
        self.writer.start()

    async def close(self, timeout: float = 3.0) -> None:
        """Write what is waiting (for at most ``timeout`` seconds), then stop the writer."""
        await self.writer.close(timeout)

    # -- writing (``writer``) -------------------------------------------------------------
    async def accept(self, messages: Iterable[Message], store_output: dict[str, bool]) -> None:
        """Store the ``accepted`` record of each message; raises 503 when CouchDB fails."""
        await self.writer.accept(messages, store_output)

    def adopt(self, db: str, doc: dict[str, Any]) -> None:
        """Take over a record read back from CouchDB (resuming after a restart)."""
        self.writer.adopt(db, doc)

    def update(self, activation_id: str, **fields: Any) -> None:
        """Change a record; written soon, with whatever else is waiting. Never waits."""
        self.writer.update(activation_id, **fields)

    def started(self, message: Message) -> None:
        self.writer.started(message)

    def retrying(self, message: Message, error: str | None) -> None:
        self.writer.retrying(message, error)

    def finished(self, message: Message, outcome: Outcome) -> None:
        self.writer.finished(message, outcome)

    @property
    def backlog(self) -> int:
        return self.writer.backlog

    @property
    def writes(self) -> int:
        """``_bulk_docs`` requests."""
        return self.writer.writes

    @property
    def written(self) -> int:
        """Documents."""
        return self.writer.written

    @property
    def last_error(self) -> str | None:
        return self.writer.last_error

    # -- reading (``reader``, ``months``) -------------------------------------------------
    def databases(self) -> list[str]:
        """The activations databases, newest first (blocking)."""
        return self.months.databases()

    def open_records(self, before: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every record not in a final state (accepted before ``before``, if given), oldest
        first (blocking; for resuming)."""
        return self.reader.open_records(before)

    def orphans(self, before: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The open records of daemons that are gone, now claimed for this daemon, oldest
        first (blocking; see ``Reader.orphans``)."""
        return self.reader.orphans(before)

    def get(self, activation_id: str) -> dict[str, Any]:
        """One record, from memory if it is still changing, else from CouchDB (blocking)."""
        return self.reader.get(activation_id)

    def query(
        self, selector: dict[str, Any], since: str | None, until: str | None, limit: int, skip: int
    ) -> list[dict[str, Any]]:
        """Records matching ``selector`` accepted in [since, until], newest first (blocking)."""
        return self.reader.query(selector, since, until, limit, skip)

    def expire(self, now: float) -> list[str]:
        """Drop the monthly databases wholly older than ``activations_retention_days``."""
        return self.months.expire(now)
