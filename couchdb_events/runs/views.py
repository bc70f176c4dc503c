"""Activation records without Mango (CouchDB 1.x has no ``_find``): two JavaScript views in the
records' design document ``_design/couchdb-events``, where 2.0 and later keep the Mango indexes.

::

    open       key: accepted, for records in an open state (scheduled, accepted,  resuming
               running)
    accepted   key: accepted, value: [event, worker, state], for every record          listing

The listing reads ``accepted`` newest first, filters event, worker and state in Python and
counts ``skip`` and ``limit`` over the rows that pass, so that its pages are those ``_find``
gives; then it fetches the page's documents in one ``_all_docs`` request. Views are read in
batches, each going on from the last key read (``startkey``, skipping the rows of that key
already seen: PouchDB has no ``startkey_docid``). A database whose design document is missing
(deleted, or from before) gets it on the first read. All calls block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import takewhile
from typing import Any

from ..couch.store import Store
from ..errors import Conflict, NotFound

DDOC = "couchdb-events"
DDOC_ID = "_design/" + DDOC
OPEN_MAP = """function (doc) {
  if (doc.type === 'activation' && typeof doc.accepted === 'string' &&
      (doc.state === 'scheduled' || doc.state === 'accepted' ||
       doc.state === 'running')) {
    emit(doc.accepted, null);
  }
}"""
ACCEPTED_MAP = """function (doc) {
  if (doc.type === 'activation' && typeof doc.accepted === 'string') {
    emit(doc.accepted, [doc.event, doc.worker, doc.state]);
  }
}"""
VIEWS = {"open": {"map": OPEN_MAP}, "accepted": {"map": ACCEPTED_MAP}}
FILTERS = ("event", "worker", "state")  # what the listing filters on, in the value's order
ROWS = 1000  # rows per request, without documents
DOCS = 500  # rows per request, with their documents


def ensure(store: Store, db: str) -> None:
    """Put the design document into ``db`` unless it is there with these views."""
    try:
        doc: dict[str, Any] | None = store.get(db, DDOC_ID)
    except NotFound:
        doc = None
    if doc is not None and doc.get("views") == VIEWS and doc.get("language") == "javascript":
        return
    new: dict[str, Any] = {"_id": DDOC_ID, "language": "javascript", "views": VIEWS}
    if doc is not None:
        new["_rev"] = doc["_rev"]
    try:
        store.put(db, new)
    except Conflict:
        pass  # another daemon put it meanwhile


def _view(store: Store, db: str, view: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        return store.view(db, DDOC, view, **options)
    except NotFound:
        ensure(store, db)
        return store.view(db, DDOC, view, **options)


def rows(store: Store, db: str, view: str, batch: int, **options: Any) -> Iterator[dict[str, Any]]:
    """Every row of ``view`` (``options``: as for ``Store.view``), ``batch`` per request."""
    query = dict(options)
    while True:
        found = _view(store, db, view, {**query, "limit": batch})
        yield from found
        if len(found) < batch:
            return
        last, same = _last_key(found)
        seen = query.get("skip", 0) if "startkey" in query and query["startkey"] == last else 0
        query.update(startkey=last, skip=seen + same)


def _last_key(found: list[dict[str, Any]]) -> tuple[Any, int]:
    """The last row's key, and how many rows at the end have it."""
    last = found[-1].get("key")
    return last, sum(1 for _ in takewhile(lambda row: row.get("key") == last, reversed(found)))


def open_records(store: Store, db: str, before: str | None) -> list[dict[str, Any]]:
    """The records of ``db`` in an open state, accepted before ``before`` if given, oldest
    first."""
    options: dict[str, Any] = {"include_docs": True}
    if before is not None:
        options.update(endkey=before, inclusive_end=False)
    found = rows(store, db, "open", DOCS, **options)
    return [dict(row["doc"]) for row in found if isinstance(row.get("doc"), dict)]


def listing(
    store: Store, dbs: list[str], where: Mapping[str, Any], since: str | None,
    until: str | None, limit: int, skip: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The records of ``dbs`` (newest first) that ``where`` (equality on ``type`` and
    ``FILTERS``, as ``activations_api.selector`` makes it) matches, accepted in [since, until],
    newest first: ``limit`` of them after the first ``skip``."""
    unknown = set(where) - {"type", *FILTERS}
    if unknown or where.get("type", "activation") != "activation":
        raise ValueError(f"the view cannot select by {dict(where)!r}")
    wanted = [where.get(name) for name in FILTERS]
    options: dict[str, Any] = {"descending": True}
    if until:
        options["startkey"] = until
    if since:
        options["endkey"] = since
    page: list[dict[str, Any]] = []
    passed = 0
    for db in dbs:
        if passed >= skip + limit:
            break
        ids = []
        for row in rows(store, db, "accepted", ROWS, **options):
            if not _passes(row.get("value"), wanted):
                continue
            passed += 1
            if passed > skip:
                ids.append(str(row["id"]))
            if passed >= skip + limit:
                break
        if ids:
            page.extend(store.all_docs(db, ids))
    return page


def _passes(value: Any, wanted: list[Any]) -> bool:
    if not isinstance(value, list) or len(value) != len(wanted):
        return False
    return all(want is None or want == have for want, have in zip(wanted, value, strict=True))
