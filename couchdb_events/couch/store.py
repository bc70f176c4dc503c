"""CouchDB access. The only module that imports ``couchdb`` (python-couchdb).

Every session has a socket timeout (python-couchdb has none by default), and every failure
comes out as one of the project's ``StoreError``s: ``Unreachable`` for anything on the wire
(python-couchdb raises a bare ``ConnectionRefusedError``, ``socket.timeout`` or ``http.client``
errors), ``NotFound``, ``Conflict`` and ``Unauthorized`` for those answers, ``Unsupported``
when Mango's endpoints are missing (CouchDB 1.x), ``StoreError`` for the rest. All calls block:
the asynchronous parts run them in threads.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import couchdb
import couchdb.http

from ..config import redact_url
from ..errors import Conflict, NotFound, StoreError, Unauthorized, Unreachable, Unsupported

T = TypeVar("T")
INDEX_ATTEMPTS = 4
SETTLE = 0.1  # seconds before a second look at leaves that another write got in beside
MAX_COPIES = 9  # CouchDB reads min(r, n) copies: this asks for every copy of a document


def _rev_order(doc: Mapping[str, Any]) -> tuple[int, str]:
    """CouchDB's order of leaves: the longer revision path wins, then the greater hash."""
    number, _dash, digest = str(doc.get("_rev", "")).partition("-")
    return (int(number) if number.isdigit() else 0, digest)


def _doc_resource(base: Any, doc_id: str) -> Any:
    """The resource of a document, a ``_design/`` or ``_local/`` one's slash left unescaped."""
    if doc_id[:1] == "_":
        return base(*doc_id.split("/", 1))
    return base(doc_id)


_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Changes:
    """One batch of a ``_changes`` feed."""

    results: list[dict[str, Any]]
    last_seq: Any
    pending: int | None = None  # changes left after this batch, when CouchDB says (2.0+)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except couchdb.http.ResourceNotFound as exc:
        raise NotFound(f"{what}: not found ({_reason(exc)})") from None
    except couchdb.http.ResourceConflict as exc:
        raise Conflict(f"{what}: conflict ({_reason(exc)})") from None
    except couchdb.http.Unauthorized as exc:
        raise Unauthorized(f"{what}: unauthorized ({_reason(exc)})") from None
    except couchdb.http.Forbidden as exc:  # its own class, not an Unauthorized, nor a ServerError
        raise Unauthorized(f"{what}: forbidden ({_reason(exc)})") from None
    except couchdb.http.PreconditionFailed as exc:
        raise Conflict(f"{what}: precondition failed ({_reason(exc)})") from None
    except couchdb.http.ServerError as exc:
        raise StoreError(f"{what}: CouchDB answered {_reason(exc)}") from None
    except couchdb.http.HTTPError as exc:
        raise StoreError(f"{what}: {_reason(exc)}") from None
    except TimeoutError:
        raise Unreachable(f"{what}: CouchDB did not answer in time") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Unreachable(f"{what}: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # a body that is not JSON
        raise StoreError(f"{what}: CouchDB sent an unreadable answer ({exc})") from None


# 404 reasons that mean the database is missing (1.x and PouchDB Server; 2.0 and later), not
# the endpoint.
_NO_DB = frozenset({"no_db_file", "Database does not exist."})
# CouchDB 1.x takes ``POST /{db}/_index`` (or ``_find``) for a document id, and refuses it so.
_RESERVED_ID = "Only reserved document ids may start with underscore."


def missing_endpoint(status: int | None, reason: str) -> bool:
    """Whether this answer to ``POST /{db}/_index`` or ``_find`` means the server has no such
    endpoint (no Mango): 400 with CouchDB 1.x's reason above; a 404 that is not about the
    database (a server or proxy without the path); 405 (the path, not for POST); 501."""
    if status == 400:
        return reason == _RESERVED_ID
    if status == 404:
        return reason not in _NO_DB
    return status in (405, 501)


def _answer(exc: couchdb.http.HTTPError) -> tuple[int | None, str]:
    """The status and reason of python-couchdb's error (its status is in its class, but for
    ``ServerError``)."""
    arg = exc.args[0] if exc.args else None
    status = _STATUSES.get(type(exc))
    if status is None and isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[0], int):
        status, arg = arg
    if isinstance(arg, bytes):  # a body that did not come as application/json
        text = arg.decode("utf-8", "replace")
        try:
            body = json.loads(text)
        except ValueError:
            return status, text.strip()
        arg = (body.get("error"), body.get("reason")) if isinstance(body, dict) else text
    if isinstance(arg, tuple) and len(arg) == 2:
        return status, str(arg[1])
    return status, str(arg)


def _mango(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, a Mango request, with ``Unsupported`` for an answer saying there is no Mango."""
    try:
        return fn()
    except couchdb.http.HTTPError as exc:
        status, reason = _answer(exc)
        if missing_endpoint(status, reason):
            raise Unsupported(f"{what}: the server has no Mango ({status}: {reason})") from None
        raise


def _reason(exc: Exception) -> str:
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, tuple) and len(arg) == 2:
        return f"{arg[0]}: {arg[1]}"
    return str(arg)


_STATUSES: dict[type[Exception], int] = {
    couchdb.http.Unauthorized: 401,
    couchdb.http.Forbidden: 403,
    couchdb.http.ResourceNotFound: 404,
    couchdb.http.ResourceConflict: 409,
    couchdb.http.PreconditionFailed: 412,
}


class _NoCache:
    """python-couchdb keeps up to 75 GET answers (attachments included) to revalidate with ETags;
    this service reads each thing once, so it keeps none."""

    def get(self, url: str) -> None:
        return None

    def put(self, url: str, response: Any) -> None:
        pass

    def remove(self, url: str) -> None:
        pass


class Store:
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
        with _mapped(what):
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
            resource = _doc_resource(self._db(db).resource, doc_id)
            status, _headers, answer = resource.put_json(body=dict(doc))
            return int(status), str(answer["rev"])

        what = f"PUT /{db}/{doc_id}"
        _status, rev = self._call(what, save)
        if exclusive and not self.prevails(db, doc_id, rev):
            raise Conflict(f"{what}: conflict (another write from the same revision got in)")
        return rev

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
                lambda: _doc_resource(self._db(db).resource, doc_id).delete_json(rev=rev),
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
            answer = _doc_resource(self._db(db).resource, doc_id).get_json(
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

    def find(
        self, db: str, selector: Mapping[str, Any], *, limit: int = 100, skip: int = 0,
        sort: list[Any] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Documents matching a Mango ``selector`` (``_find``)."""
        body: dict[str, Any] = {"selector": dict(selector), "limit": limit, "skip": skip}
        if sort:
            body["sort"] = sort

        what = f"POST /{db}/_find"

        def query() -> list[dict[str, Any]]:
            answer = _mango(what, lambda: self._post_json(db, "_find", body))
            return [dict(doc) for doc in answer.get("docs", [])]

        return self._call(what, query)

    def index(self, db: str, fields: list[str], name: str, ddoc: str) -> None:
        """Make sure a Mango index on ``fields`` exists in design document ``ddoc``
        (idempotent in CouchDB); ``Unsupported`` when the server has no Mango."""
        body = {"index": {"fields": fields}, "name": name, "ddoc": ddoc, "type": "json"}
        what = f"POST /{db}/_index"
        for attempt in range(INDEX_ATTEMPTS):
            try:
                self._call(what, lambda: _mango(what, lambda: self._post_json(db, "_index", body)))
                return
            except (Unreachable, NotFound, Unauthorized, Unsupported):
                raise
            except StoreError:
                # Two clients making the same index at once: CouchDB answers one of them 500
                # error_saving_ddoc (or 409). Asked again, it finds the index made.
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _post_json(self, db: str, path: str, body: Any, **params: str) -> Any:
        """The JSON answer to ``POST /{db}/{path}?{params}``; python-couchdb's errors as they
        come."""
        return self._db(db).resource.post_json(path, body=body, **params)[2]

    def view(self, db: str, ddoc: str, name: str, **options: Any) -> list[dict[str, Any]]:
        """The rows of the view ``_design/{ddoc}/_view/{name}``. ``options`` are CouchDB's query
        parameters, each given as the JSON value CouchDB reads (``startkey="a"``,
        ``descending=True``, ``limit=10``)."""
        params = {key: json.dumps(value) for key, value in options.items()}

        def query() -> list[dict[str, Any]]:
            path = ["_design", ddoc, "_view", name]
            answer = self._db(db).resource.get_json(path, **params)[2]
            if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
                raise ValueError("no rows list")
            return [dict(row) for row in answer["rows"] if isinstance(row, dict)]

        return self._call(f"GET /{db}/_design/{ddoc}/_view/{name}", query)

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
