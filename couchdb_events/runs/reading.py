"""Reading the activation records back: the open ones (resuming), those of daemons that are
gone (claimed for this one), one record, the listing. All blocking.

Through Mango's ``_find``, with two indexes in ``_design/couchdb-events``; on a server without
Mango (CouchDB 1.x, found out at start when ``_index`` is missing) through two views in that
design document (``views``).
"""

from __future__ import annotations

import time
from typing import Any

from ..config import Config
from ..couch.store import Store
from ..errors import NotFound
from ..model.capabilities import Capabilities
from . import views
from .daemons import Liveness, Owner
from .months import LISTING_DDOC, LISTING_FIELDS, Months
from .records import BATCH, OPEN_STATES, iso, month_db, parse_iso
from .writer import Writer


class Reader:
    """The records of every month's database, and of the writer while it holds them."""

    def __init__(
        self, store: Store, config: Config, owner: Owner, capabilities: Capabilities,
        months: Months, writer: Writer,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config
        self.owner = owner
        self.capabilities = capabilities
        self.months = months
        self.writer = writer
        self.prefix = config.activations_db

    def open_records(self, before: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Every record not in a final state (accepted before ``before``, if given), oldest
        first (blocking; for resuming)."""
        found: list[tuple[str, dict[str, Any]]] = []
        where: dict[str, Any] = {"state": {"$in": list(OPEN_STATES)}}
        if before is not None:
            where["accepted"] = {"$lt": iso(before)}
        for db in reversed(self.months.databases()):
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
            if self.writer.holds(doc["_id"]) or not liveness.gone(doc.get("daemon")):
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
        return self.locate(activation_id)[1]

    def locate(self, activation_id: str) -> tuple[str, dict[str, Any]]:
        """One record and its database (``get``); raises ``NotFound`` (blocking)."""
        held = self.writer.held_in(activation_id)
        if held is not None:
            return held
        for db in self.months.databases():
            try:
                return db, self.store.get(db, activation_id)
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
            dbs = self.months.databases()
            if since:  # the months from since's on
                dbs = [db for db in dbs if db >= month_db(self.prefix, parse_iso(since) or 0)]
            return views.listing(self.store, dbs, selector, since, until, limit, skip)
        # Sorted by an index ending in accepted, so that the limit keeps the newest, not the
        # first ones the index happens to yield (the oldest); filtered by one field, by that
        # field's index [field, accepted], so that CouchDB reads the page, not every record.
        field = next((f for f in LISTING_FIELDS if isinstance(selector.get(f), str)), None)
        sort: list[Any] = [{"accepted": "desc"}]
        use_index: list[str] | None = None
        if field is not None:
            sort, use_index = [{field: "desc"}, {"accepted": "desc"}], [LISTING_DDOC, field]
        found: list[dict[str, Any]] = []
        for db in self.months.databases():
            found.extend(
                self.store.find(db, where, limit=skip + limit, sort=sort, use_index=use_index)
            )
            if since and db <= month_db(self.prefix, parse_iso(since) or 0):
                break
        found.sort(key=lambda doc: str(doc.get("accepted", "")), reverse=True)
        return found[skip : skip + limit]
