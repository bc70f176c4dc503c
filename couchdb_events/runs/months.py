"""The activations databases, one per month (``<activations_db>_YYYY_MM``), so that expiring
old records is dropping a database, not deleting documents one by one: each made when first
needed, with the indexes (or, without Mango, the views) that reading the records needs, in one
design document, ``_design/couchdb-events``.
"""

from __future__ import annotations

import asyncio

from .. import logs
from ..config import Config
from ..couch.store import Store
from ..errors import Unsupported
from ..model.capabilities import Capabilities
from . import views
from .records import month_db

log = logs.get("activations")

INDEX_DDOC = views.DDOC  # Mango's indexes or, without Mango, the views
# The listing's filters, each with an index of its own on [field, accepted], so that a page of
# the newest records of one event, worker or state reads that page, not every record: in a
# design document of their own, which CouchDB brings up to date only when a listing reads it
# (an index in INDEX_DDOC is brought up to date with the others whenever resuming reads them).
LISTING_DDOC = views.DDOC + "-listing"
LISTING_FIELDS = ("event", "worker", "state")


class Months:
    """The monthly databases of ``activations_db``; ``ensure`` learns whether the server has
    Mango (into ``capabilities``)."""

    def __init__(self, store: Store, config: Config, capabilities: Capabilities) -> None:
        self.store = store
        self.config = config
        self.capabilities = capabilities
        self.prefix = config.activations_db
        self._known_dbs: set[str] = set()

    def known(self, db: str) -> bool:
        """Whether ``db`` was made (or found) already."""
        return db in self._known_dbs

    async def ensure(self, db: str, probe: bool = False) -> None:
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
                    for field in LISTING_FIELDS:  # built when a listing first reads them
                        self.store.index(db, [field, "accepted"], field, LISTING_DDOC)
                    return True
                except Unsupported as exc:
                    if not probe:
                        raise
                    log.debug("%s", exc)
            views.ensure(self.store, db)
            return False

        self.capabilities.mango = await loop.run_in_executor(None, make, self.capabilities.mango)
        self._known_dbs.add(db)

    def databases(self) -> list[str]:
        """The activations databases, newest first (blocking)."""
        prefix = self.prefix + "_"
        names = [db for db in self.store.databases() if db.startswith(prefix)]
        return sorted(names, reverse=True)

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
