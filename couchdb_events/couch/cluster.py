"""The store's writes that settle something between daemons, on a CouchDB cluster too.

CouchDB refuses a second write from one revision, except on a cluster, where two writes sent to
different nodes at once can each be taken by some copies of a document (the one without its
write quorum answered 202 Accepted). These methods find such writes out, from the revision
trees of every copy (``leaves``), and leave the document with one of them (``prevails``,
``settled``). A mixin of ``store.Store``, through whose requests it goes; it imports no
``couchdb``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import StoreError

T = TypeVar("T")
SETTLE = 0.1  # seconds before a second look at leaves that another write got in beside
MAX_COPIES = 9  # CouchDB reads min(r, n) copies: this asks for every copy of a document


def written_as(stored: Mapping[str, Any] | None, doc: Mapping[str, Any]) -> bool:
    """Whether ``stored`` is ``doc`` as written, revisions aside: a write of ours whose answer
    was lost on the way (python-couchdb sends a request again after a reset connection), so
    that the second sending met the first as a conflict."""
    if stored is None:
        return False
    return {k: v for k, v in stored.items() if k != "_rev"} == {
        k: v for k, v in doc.items() if k != "_rev"
    }


def _rev_order(doc: Mapping[str, Any]) -> tuple[int, str]:
    """CouchDB's order of leaves: the longer revision path wins, then the greater hash."""
    number, _dash, digest = str(doc.get("_rev", "")).partition("-")
    return (int(number) if number.isdigit() else 0, digest)


class ClusterWrites:
    """``prevails``, ``settled``, ``leaves`` and ``copies``, for ``Store``."""

    if TYPE_CHECKING:  # what Store provides
        _copies: dict[str, int]

        def _call(self, what: str, fn: Callable[[], T]) -> T: ...
        def _db(self, db: str) -> Any: ...
        def _document(self, db: str, doc_id: str) -> Any: ...

    def prevails(self, db: str, doc_id: str, rev: str) -> bool:
        """After an update that settles something between daemons, whether it is the one that
        counts. CouchDB refuses a second write from one revision, except on a cluster, where
        two writes sent to different nodes at once can each be taken by some copies of the
        document (the one without its write quorum answered 202): both revisions are then
        leaves, and each writer sees them all (``leaves``). The greatest, CouchDB's winner,
        prevails; the others withdraw their leaf, so the document is left with it alone. On a
        cluster the winner looks twice, ``SETTLE`` apart, for a write whose copies were still
        on their way at its first look (this narrows that window; nothing can close it)."""
        looks = 2 if self.copies(db) > 1 else 1
        for look in range(looks):
            if look:
                time.sleep(SETTLE)  # another write's copies may still have been on their way
            leaves = self.leaves(db, doc_id)
            if not leaves or str(leaves[0]["_rev"]) != rev:
                self._withdraw(db, doc_id, rev)
                return False
        return True

    def copies(self, db: str) -> int:
        """How many copies of each document a database keeps (``n``: 1 on a single node or a
        CouchDB 1.x; a cluster's databases say it in ``GET /{db}``); asked once per database."""
        if db not in self._copies:
            info = self._call(f"GET /{db}", lambda: self._db(db).info())
            cluster = info.get("cluster") if isinstance(info, dict) else None
            n = cluster.get("n") if isinstance(cluster, dict) else None
            self._copies[db] = n if isinstance(n, int) and not isinstance(n, bool) else 1
        return self._copies[db]

    def _withdraw(self, db: str, doc_id: str, rev: str) -> None:
        with contextlib.suppress(StoreError):
            self._call(
                f"DELETE /{db}/{doc_id}?rev={rev}",
                lambda: self._document(db, doc_id).delete_json(rev=rev),
            )

    def settled(self, db: str, doc_id: str, rev: str) -> bool:
        """After creating a document that a cluster took without its write quorum (202, in
        ``_bulk_docs`` ``"accepted": true``), whether it is the document's only live leaf.
        Another daemon's creation of the same id may have been taken by the other copies: the
        one with its quorum (201) counts, and a 202 one that finds another leaf beside it
        withdraws its own. When every writer got only a 202, all of them withdraw and the
        document is left deleted: whoever writes it next (from no revision) gets it."""
        found = [str(doc["_rev"]) for doc in self.leaves(db, doc_id)]
        if found == [rev]:
            return True
        self._withdraw(db, doc_id, rev)
        return False

    def leaves(self, db: str, doc_id: str) -> list[dict[str, Any]]:
        """The document's live leaf revisions as every copy holds them, CouchDB's winner first
        (none: missing or deleted). A plain GET, even with ``conflicts=true``, shows one copy's
        view; ``open_revs=all`` merges the revision trees of every copy that answers, and
        ``r`` past their number waits for all of them."""

        def fetch() -> list[dict[str, Any]]:
            answer = self._document(db, doc_id).get_json(
                open_revs="all", r=MAX_COPIES, headers={"Accept": "application/json"}
            )[2]
            if not isinstance(answer, list):
                raise ValueError(f"open_revs answered {answer!r}")
            docs = [
                dict(leaf["ok"])
                for leaf in answer
                if isinstance(leaf, dict)
                and isinstance(leaf.get("ok"), dict)
                and not leaf["ok"].get("_deleted")
            ]
            return sorted(docs, key=_rev_order, reverse=True)

        return self._call(f"GET /{db}/{doc_id}?open_revs=all", fetch)
