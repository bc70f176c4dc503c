"""How the store names CouchDB's refusals, as python-couchdb raises them. No server."""

from __future__ import annotations

import couchdb.http
import pytest

from couchdb_events.couch.store import Store
from couchdb_events.errors import Conflict, NotFound, StoreError, Unauthorized


class Refusing(Store):
    def __init__(self, error: Exception) -> None:
        super().__init__("http://127.0.0.1:9/", timeout=1)
        self.error = error

    def fail(self) -> None:
        def refuse() -> None:
            raise self.error

        self._call("GET /orders", refuse)


@pytest.mark.parametrize(
    ("error", "raised", "text"),
    [
        # CouchDB 2 and later: a logged-in user who is not a member of the database.
        (
            couchdb.http.Forbidden(("forbidden", "You are not allowed to access this db.")),
            Unauthorized,
            "GET /orders: forbidden (forbidden: You are not allowed to access this db.)",
        ),
        (
            couchdb.http.Unauthorized(("unauthorized", "You are not a server admin.")),
            Unauthorized,
            "GET /orders: unauthorized (unauthorized: You are not a server admin.)",
        ),
        (
            couchdb.http.ResourceNotFound(("not_found", "Database does not exist.")),
            NotFound,
            "GET /orders: not found (not_found: Database does not exist.)",
        ),
        (couchdb.http.ResourceConflict(("conflict", "x")), Conflict, None),
        (
            couchdb.http.ServerError((500, ("unknown_error", "badarg"))),
            StoreError,
            "GET /orders: CouchDB answered 500: ('unknown_error', 'badarg')",
        ),
    ],
)
def test_refusals_are_named(error: Exception, raised: type[StoreError], text: str | None) -> None:
    with pytest.raises(StoreError) as caught:
        Refusing(error).fail()
    assert type(caught.value) is raised
    if text is not None:
        assert str(caught.value) == text
