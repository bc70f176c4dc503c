"""CouchDB access: the server, documents, ``_changes`` feeds, many documents at once. With
``failures`` (python-couchdb's error types, which it maps), the only module that imports
``couchdb`` (python-couchdb).

Every session has a socket timeout (python-couchdb has none by default), and every failure
comes out as one of the project's ``StoreError``s (``failures``). ``Store`` also has
``cluster``'s writes that settle something between daemons, on a cluster too, and ``queries``'
Mango and views. All calls block: the asynchronous parts run them in threads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import couchdb
import couchdb.http

from ..config import redact_url
from ..errors import Conflict, NotFound, StoreError, Unauthorized, Unreachable
from . import failures
from .cluster import ClusterWrites
from .queries import Queries

T = TypeVar("T")

_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Changes:
    """One batch of a ``_changes`` feed."""

    results: list[dict[str, Any]]
    last_seq: Any
    pending: int | None = None  # changes left after this batch, when CouchDB says (2.0+)


class _NoCache:
    """python-couchdb keeps up to 75 GET answers (attachments included) to revalidate with ETags;
    this service reads each thing once, so it keeps none."""

    def get(self, url: str) -> None:
        return None

    def put(self, url: str, response: Any) -> None:
        pass

    def remove(self, url: str) -> None:
        pass


class Store(ClusterWrites, Queries):
    """A CouchDB server, reached through python-couchdb with a socket timeout."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        # One quick retry on a reset connection (python-couchdb needs a non-empty list here).
        self._session = couchdb.http.Session(timeout=timeout, retry_delays=[0])
        self._session.cache = _NoCache()
        self._server = couchdb.Server(url, session=self._session)
        self._copies: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)!r}, timeout={self.timeout})"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with failures.mapped(what):
            return fn()

    # -- server ---------------------------------------------------------------------------
    def version(self) -> str:
        """CouchDB's version string; raises ``Unreachable`` if it does not answer."""
        return str(self._call(f"GET {redact_url(self.url)}", self._server.version))

    def exists(self, db: str) -> bool:
        return self._call(f"HEAD /{db}", lambda: db in self._server)

    def create(self, db: str) -> bool:
        """Create ``db``; False when it already existed (or another client made it at the same
        moment: CouchDB 3.5 can answer that race 500 ``{"error": "error", "reason":
        "conflict"}`` instead of 412)."""
        try:
            self._call(f"PUT /{db}", lambda: self._server.create(db))
        except Conflict:
            return False
        except (Unreachable, Unauthorized, NotFound):
            raise
        except StoreError:
            if self.exists(db):
                return False
            raise
        return True

    def delete(self, db: str) -> None:
        self._call(f"DELETE /{db}", lambda: self._server.delete(db))

    def session(self) -> dict[str, Any]:
        """Who the URL's credentials are to CouchDB: ``/_session``'s ``userCtx`` (``name``,
        ``roles``); ``Unauthorized`` when CouchDB rejects them."""

        def fetch() -> dict[str, Any]:
            answer = self._server.resource.get_json("_session")[2]
            ctx = answer.get("userCtx") if isinstance(answer, dict) else None
            if not isinstance(ctx, dict):
                raise ValueError("no userCtx in the answer")
            return dict(ctx)

        return self._call("GET /_session", fetch)

    def get_security(self, db: str) -> dict[str, Any]:
        """The database's ``_security`` object (``{}`` when none was set)."""
        return self._call(f"GET /{db}/_security", lambda: dict(self._db(db).security or {}))

    def put_security(self, db: str, security: Mapping[str, Any]) -> None:
        """Replace the database's ``_security`` object (needs a database or server admin)."""

        def save() -> None:
            self._db(db).security = dict(security)

        self._call(f"PUT /{db}/_security", save)

    def _db(self, db: str) -> couchdb.Database:
        return couchdb.Database(self.url + quote(db, safe=""), session=self._session)

    def _document(self, db: str, doc_id: str) -> Any:
        """The resource of a document, a ``_design/`` or ``_local/`` one's slash left unescaped."""
        base = self._db(db).resource
        if doc_id[:1] == "_":
            return base(*doc_id.split("/", 1))
        return base(doc_id)

    # -- documents ------------------------------------------------------------------------
    def get(self, db: str, doc_id: str, **options: Any) -> dict[str, Any]:
        """A document; ``NotFound`` when it is missing or deleted."""

        def fetch() -> dict[str, Any]:
            doc = self._db(db).get(doc_id, **options)
            if doc is None:
                raise couchdb.http.ResourceNotFound(("not_found", "missing"))
            return dict(doc)

        return self._call(f"GET /{db}/{doc_id}", fetch)

    def put(self, db: str, doc: Mapping[str, Any], *, exclusive: bool = False) -> str:
        """Create or update a document in one request (inline attachments included); its new
        rev. ``exclusive``: the write settles something between daemons (a claim, a lease), so
        it must be the only one from its revision (see ``settled``): ``Conflict`` otherwise."""
        doc_id = str(doc["_id"])

        def save() -> tuple[int, str]:
            resource = self._document(db, doc_id)
            status, _headers, answer = resource.put_json(body=dict(doc))
            return int(status), str(answer["rev"])

        what = f"PUT /{db}/{doc_id}"
        _status, rev = self._call(what, save)
        if exclusive and not self.prevails(db, doc_id, rev):
            raise Conflict(f"{what}: conflict (another write from the same revision got in)")
        return rev

    def attachments(self, db: str, doc_id: str, rev: str) -> dict[str, bytes]:
        """All attachments of one revision of a document, in one request."""
        doc = self.get(db, doc_id, rev=rev, attachments=True)
        out: dict[str, bytes] = {}
        for name, att in (doc.get("_attachments") or {}).items():
            data = att.get("data") if isinstance(att, dict) else None
            if not isinstance(data, str):
                raise StoreError(
                    f"GET /{db}/{doc_id}?rev={rev}: attachment {name!r} came as a stub"
                )
            out[name] = base64.b64decode(data)
        return out

    # -- feeds ----------------------------------------------------------------------------
    def changes(
        self,
        db: str,
        since: Any,
        *,
        longpoll_ms: int = 0,
        limit: int = 500,
        include_docs: bool = True,
        selector: Mapping[str, Any] | None = None,
        filter: str | None = None,
        query_params: Mapping[str, str] | None = None,
    ) -> Changes:
        """One batch of ``_changes``. ``longpoll_ms`` > 0 waits for news. ``selector``: only
        changes of documents it matches (``POST ?filter=_selector``, CouchDB 2 and later);
        ``filter``: a design document's filter function ``"ddoc/name"``, given
        ``query_params``."""
        options: dict[str, Any] = {"since": since, "limit": limit}
        if include_docs:
            options["include_docs"] = True
        if longpoll_ms:
            options.update(feed="longpoll", timeout=longpoll_ms)
        if selector is not None:
            options.update(filter="_selector", _selector={"selector": dict(selector)})
        elif filter is not None:
            options.update(query_params or {})
            options["filter"] = filter

        def fetch() -> Changes:
            answer = self._db(db).changes(**options)
            if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
                raise ValueError("no results list")
            pending = answer.get("pending")
            return Changes(
                [row for row in answer["results"] if isinstance(row, dict)],
                answer.get("last_seq", since),
                pending if isinstance(pending, int) and not isinstance(pending, bool) else None,
            )

        verb = "POST" if selector is not None else "GET"
        return self._call(f"{verb} /{db}/_changes", fetch)

    def update_seq(self, db: str) -> Any:
        """The database's current update sequence (``GET /{db}``)."""

        def fetch() -> Any:
            info = self._db(db).info()
            if not isinstance(info, dict) or "update_seq" not in info:
                raise ValueError("no update_seq")
            return info["update_seq"]

        return self._call(f"GET /{db}", fetch)

    # -- many documents at once ------------------------------------------------------------
    def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write ``docs`` in one ``_bulk_docs`` request; one result per doc, in order
        (``{"ok": true, "id", "rev"}`` or ``{"id", "error", "reason"}``)."""

        def write() -> list[dict[str, Any]]:
            # Encoded here rather than by python-couchdb: compact, and ASCII (faster to make,
            # and a lone surrogate from a "\ud800" escape stays escaped instead of failing).
            body = json.dumps({"docs": docs}, allow_nan=False, separators=(",", ":")).encode()
            resource = self._db(db).resource
            answer = resource.post_json("_bulk_docs", body=body, headers=_JSON)[2]
            if not isinstance(answer, list):
                raise ValueError(f"_bulk_docs answered {answer!r}")
            return [dict(result) for result in answer]

        return self._call(f"POST /{db}/_bulk_docs", write)

    def _post_json(self, db: str, path: str, body: Any, **params: str) -> Any:
        """The JSON answer to ``POST /{db}/{path}?{params}``; python-couchdb's errors as they
        come."""
        return self._db(db).resource.post_json(path, body=body, **params)[2]

    def all_docs(self, db: str, ids: list[str]) -> list[dict[str, Any]]:
        """The documents of ``ids`` that exist (not deleted), in that order, in one request."""

        def fetch() -> list[dict[str, Any]]:
            answer = self._post_json(db, "_all_docs", {"keys": ids}, include_docs="true")
            if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
                raise ValueError("no rows list")
            rows = answer["rows"]
            return [dict(r["doc"]) for r in rows if isinstance(r, dict) and r.get("doc")]

        return self._call(f"POST /{db}/_all_docs", fetch)

    def databases(self) -> list[str]:
        """Every database name (``_all_dbs``)."""
        return self._call("GET /_all_dbs", lambda: [str(name) for name in self._server])
