"""How python-couchdb's failures become the project's ``StoreError``s.

``Unreachable`` for anything on the wire (python-couchdb raises a bare
``ConnectionRefusedError``, ``socket.timeout`` or ``http.client`` errors), ``NotFound``,
``Conflict`` and ``Unauthorized`` for those answers, ``Unsupported`` when Mango's endpoints are
missing (CouchDB 1.x), ``StoreError`` for the rest.

Besides ``store``, the only module that imports ``couchdb``: for its error types
(``couchdb.http``), never to make a request.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import couchdb.http

from ..errors import Conflict, NotFound, StoreError, Unauthorized, Unreachable, Unsupported

T = TypeVar("T")


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Within it, python-couchdb's failures come out as ``StoreError``s that name ``what``."""
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


def mango(what: str, fn: Callable[[], T]) -> T:
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
