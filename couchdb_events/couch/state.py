"""The state database (``state_db``, by default ``<events_db>_state``): what several daemons on
one CouchDB must agree on, as ordinary documents.

``changes:<event id>``
    a changes trigger's checkpoint and lease (``triggers.lease``)
``schedule:<event id>``
    a schedule's last fire (``triggers.schedule``)

Each is written from the revision last read, so that of two daemons writing from the same
revision one gets 409: that is what lets one daemon of several hold a lease or claim a fire.
CouchDB checks revisions only on ordinary documents: a ``_local`` document takes any write,
stale revision or none, so it cannot settle anything between daemons. The documents live in a
database of their own rather than the events database, so that they neither wake every
daemon's events feed nor travel with the events database when it is replicated: do not
replicate the state database (another CouchDB's daemons have leases of their own).

Earlier versions kept both in ``_local`` documents of the events database; ``read`` falls back
to those, so that an upgrade neither misses changes nor fires a schedule twice.
"""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from .store import Store

_LEGACY = {
    "changes": "_local/couchdb-events-changes-",
    "schedule": "_local/couchdb-events-schedule-",
}


def doc_id(kind: str, event_id: str) -> str:
    return f"{kind}:{event_id}"


def read(
    store: Store, state_db: str, events_db: str, kind: str, event_id: str
) -> dict[str, Any] | None:
    """The state document of ``kind`` for an event, or None; a legacy ``_local`` one comes
    back without ``_rev`` (writing it creates the new document). Blocking."""
    try:
        return store.get(state_db, doc_id(kind, event_id))
    except NotFound:
        pass
    try:
        legacy = store.get(events_db, _LEGACY[kind] + event_id)
    except NotFound:
        return None
    legacy.pop("_rev", None)
    legacy["_id"] = doc_id(kind, event_id)
    return legacy
