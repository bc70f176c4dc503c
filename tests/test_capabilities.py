"""Telling a server without Mango (CouchDB 1.x) apart: by its version, and by its answers to
``POST /{db}/_index`` and ``_find``, as python-couchdb raises them. No server."""

from __future__ import annotations

from typing import Any

import couchdb.http
import pytest

from couchdb_events.couch.failures import missing_endpoint
from couchdb_events.couch.store import Store
from couchdb_events.errors import NotFound, StoreError, Unsupported
from couchdb_events.model.capabilities import Capabilities, has_mango
from couchdb_events.runs import views as activations_views
from couchdb_events.runs.months import INDEX_DDOC

RESERVED = "Only reserved document ids may start with underscore."


@pytest.mark.parametrize(
    ("version", "mango"),
    [("1.7.1", False), ("1.1.0", False), ("0.11.2", False), ("2.0.0", True), ("3.5.0", True),
     ("4.2.0", True), ("", True), ("unknown", True), ("v2", True)],
)  # fmt: skip
def test_mango_came_with_2_0(version: str, mango: bool) -> None:
    assert has_mango(version) is mango
    capabilities = Capabilities()
    assert capabilities.mango and capabilities.selector_error() is None  # until learned
    capabilities.learn(version)
    assert capabilities.mango is mango
    assert (capabilities.selector_error() is None) is mango


def test_the_selector_error_names_the_server() -> None:
    capabilities = Capabilities()
    capabilities.learn("1.6.1")
    assert capabilities.selector_error() == (
        "selector needs CouchDB 2.0 or later (this server: CouchDB 1.6.1); "
        "use a design document filter"
    )


@pytest.mark.parametrize(
    ("status", "reason", "missing"),
    [
        (400, RESERVED, True),  # CouchDB 1.x: _index taken for a document id
        (400, 'invalid language for ddoc with id "_design/x" (should be "query")', False),
        (404, "missing", True),  # a server or proxy without the path
        (404, "<html>Not Found</html>", True),
        (404, "no_db_file", False),  # the database is missing (1.x, PouchDB Server)
        (404, "Database does not exist.", False),  # the database is missing (2.0 and later)
        (405, "Only GET,HEAD allowed", True),
        (501, "Not Implemented", True),
        (500, "badarg", False),
        (401, "You are not a server admin.", False),
        (None, "", False),
    ],
)
def test_which_answers_mean_no_mango(status: int | None, reason: str, missing: bool) -> None:
    assert missing_endpoint(status, reason) is missing


class Answering(Store):
    """A store whose Mango requests fail with the given python-couchdb error."""

    def __init__(self, error: Exception) -> None:
        super().__init__("http://127.0.0.1:9/", timeout=1)
        self.error = error

    def _post_json(self, db: str, path: str, body: Any, **params: str) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (couchdb.http.ServerError((400, ("bad_request", RESERVED))), Unsupported),
        # The same answer without Content-Type application/json: the body as bytes.
        (
            couchdb.http.ServerError(
                (400, b'{"error":"bad_request","reason":"' + RESERVED.encode() + b'"}\n')
            ),
            Unsupported,
        ),
        (couchdb.http.ResourceNotFound(("not_found", "missing")), Unsupported),
        (couchdb.http.ResourceNotFound(b"<html>Not Found</html>"), Unsupported),
        (couchdb.http.ServerError((405, ("method_not_allowed", "Only GET"))), Unsupported),
        (couchdb.http.ServerError((501, b"Not Implemented")), Unsupported),
        (couchdb.http.ResourceNotFound(("not_found", "Database does not exist.")), NotFound),
        (couchdb.http.ResourceNotFound(("not_found", "no_db_file")), NotFound),
        (couchdb.http.ServerError((400, ("bad_request", "invalid index"))), StoreError),
        (couchdb.http.ServerError((500, ("unknown_error", "badarg"))), StoreError),
    ],
)
def test_store_says_unsupported_for_those_answers_only(
    error: Exception, raised: type[StoreError]
) -> None:
    store = Answering(error)
    for call in (
        lambda: store.index("acts", ["state"], "state", INDEX_DDOC),
        lambda: store.find("acts", {"state": "accepted"}),
    ):
        with pytest.raises(StoreError) as caught:
            call()
        assert type(caught.value) is raised, caught.value
    if raised is Unsupported:
        assert "the server has no Mango" in str(caught.value)


def test_the_views_live_where_mango_keeps_its_indexes() -> None:
    assert activations_views.DDOC == INDEX_DDOC == "couchdb-events"
    assert set(activations_views.VIEWS) == {"open", "accepted"}


@pytest.mark.parametrize(
    ("value", "wanted", "passes"),
    [
        (["mail", "w1", "failed"], [None, None, None], True),
        (["mail", "w1", "failed"], ["mail", None, "failed"], True),
        (["mail", "w1", "failed"], ["sms", None, None], False),
        (["mail", "w1", "failed"], [None, "w1", "running"], False),
        (None, [None, None, None], False),
        (["mail", "w1"], [None, None, None], False),
    ],
)
def test_the_listing_filters_rows_by_their_value(
    value: Any, wanted: list[Any], passes: bool
) -> None:
    assert activations_views._passes(value, wanted) is passes


def test_the_listing_refuses_what_the_view_cannot_select() -> None:
    store: Any = None  # never reached
    with pytest.raises(ValueError, match="cannot select"):
        activations_views.listing(store, [], {"type": "activation", "answer": 1}, None, None, 5, 0)
