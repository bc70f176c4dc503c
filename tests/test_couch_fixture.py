"""The test server itself: PouchDB Server (or the CouchDB of COUCHDB_URL) behaves enough like
CouchDB for our tests, and the tests leave nothing behind on it."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest

from tests.couch import CouchServer, FreshDb, NewUser, http_json, with_credentials


def test_server_answers(couch: CouchServer, couch_url: str) -> None:
    assert couch_url == couch.url and couch.public_url == f"http://{couch.host}:{couch.port}/"
    if not couch.is_couchdb:
        assert couch_url == f"http://127.0.0.1:{couch.port}/"
    status, welcome = http_json("GET", couch_url)
    assert status == 200
    assert "version" in welcome
    status, session = http_json("GET", couch_url + "_session")
    assert status == 200 and "_admin" in session["userCtx"]["roles"]


def test_document_round_trip_in_fresh_db(couch_url: str, fresh_db: FreshDb) -> None:
    name = fresh_db("docs")
    assert name.startswith("t_docs_")
    db = couch_url + name

    status, created = http_json("PUT", db + "/greeting", {"text": "hello", "n": 1})
    assert status == 201
    assert created["ok"] is True

    status, doc = http_json("GET", db + "/greeting")
    assert status == 200
    assert doc["_id"] == "greeting"
    assert doc["_rev"] == created["rev"]
    assert (doc["text"], doc["n"]) == ("hello", 1)

    status, conflict = http_json("PUT", db + "/greeting", {"text": "no rev"})
    assert (status, conflict["error"]) == (409, "conflict")


def test_longpoll_changes_return_after_a_write(couch_url: str, fresh_db: FreshDb) -> None:
    db = couch_url + fresh_db("changes")
    _, info = http_json("GET", db)
    since = info["update_seq"]
    answers: queue.Queue[tuple[int, Any] | BaseException] = queue.Queue()

    def longpoll() -> None:
        try:
            answers.put(http_json("GET", f"{db}/_changes?feed=longpoll&since={since}"))
        except BaseException as error:  # handed to the test, which raises it
            answers.put(error)

    poller = threading.Thread(target=longpoll, daemon=True)
    poller.start()
    try:
        time.sleep(0.5)
        assert answers.empty(), "the longpoll returned before any write"

        status, _ = http_json("PUT", db + "/wake-up", {"n": 1})
        assert status == 201
        written = time.monotonic()
        try:
            answer = answers.get(timeout=2.0)
        except queue.Empty:
            pytest.fail("the longpoll did not return within 2 s of the write")
        assert time.monotonic() - written < 2.0
        if isinstance(answer, BaseException):
            raise answer
        status, changes = answer
        assert status == 200
        assert [row["id"] for row in changes["results"]] == ["wake-up"]
        assert changes["last_seq"] != since
    finally:
        if poller.is_alive():
            # PouchDB Server ignores `timeout` on feeds: only a change ends the request.
            http_json("PUT", db + "/release", {})
        poller.join(timeout=5.0)


def test_fresh_databases_are_isolated(couch_url: str, fresh_db: FreshDb) -> None:
    first, second = fresh_db(), fresh_db()
    assert first != second
    assert first.startswith("t_db_")

    status, _ = http_json("PUT", f"{couch_url}{first}/only-here", {"where": "first"})
    assert status == 201

    status, missing = http_json("GET", f"{couch_url}{second}/only-here")
    assert (status, missing["error"]) == (404, "not_found")
    _, first_info = http_json("GET", couch_url + first)
    _, second_info = http_json("GET", couch_url + second)
    assert (first_info["doc_count"], second_info["doc_count"]) == (1, 0)

    _, all_dbs = http_json("GET", couch_url + "_all_dbs")
    assert {first, second} <= set(all_dbs)


def test_fresh_db_rejects_names_couchdb_would_refuse(fresh_db: FreshDb) -> None:
    with pytest.raises(ValueError, match="not a valid CouchDB database name"):
        fresh_db("Upper")


def test_databases_made_by_the_tests_are_dropped_with_those_named_after_them(
    couch: CouchServer,
) -> None:
    scope = couch.scope()
    first, second = scope.create_db("drop"), scope.new_db_name("drop")
    derived = [f"{first}_activations_2026_01", f"{second}_state"]  # as a daemon names them
    for name in [second, *derived]:
        assert http_json("PUT", couch.db_url(name))[0] == 201
    kept = couch.scope().create_db("kept")
    try:
        with pytest.raises(ValueError, match="not database names the tests made"):
            scope.drop_dbs("t_kept")  # only whole names handed out, never a guessed prefix
        scope.clean_up()
        _, all_dbs = http_json("GET", couch.url + "_all_dbs")
        assert not [db for db in all_dbs if db.startswith((first, second))]
        assert kept in all_dbs
    finally:
        http_json("DELETE", couch.db_url(kept))


def test_users_made_by_a_test_are_deleted_at_its_end(couch: CouchServer) -> None:
    scope = couch.scope()
    name, _password = scope.add_user("someone", roles=["readers"])
    assert name.startswith("t_someone_")
    doc_url = f"{couch.url}_users/org.couchdb.user:{name}"
    status, doc = http_json("GET", doc_url)
    assert (status, doc["roles"]) == (200, ["readers"])
    scope.clean_up()
    assert http_json("GET", doc_url)[0] == 404


def test_new_user_logs_in(couch_url: str, new_user: NewUser) -> None:
    name, password = new_user("login", roles=["r1"])
    status, session = http_json("GET", with_credentials(couch_url, (name, password)) + "_session")
    assert status == 200
    assert session["userCtx"] == {"name": name, "roles": ["r1"]}


@pytest.mark.couchdb_only("PouchDB Server checks a _local document's revision as an ordinary one's")
def test_a_local_document_takes_a_stale_revision(couch_url: str, fresh_db: FreshDb) -> None:
    # Why claims and leases rest on ordinary documents (POUCHDB_DIFFERENCES.md).
    url = f"{couch_url}{fresh_db('local')}/_local/claim"
    status, first = http_json("PUT", url, {"holder": "a"})
    assert status == 201
    status, _ = http_json("PUT", url, {"holder": "b", "_rev": first["rev"]})
    assert status == 201
    status, stale = http_json("PUT", url, {"holder": "c", "_rev": first["rev"]})
    assert (status, stale["ok"]) == (201, True)
    status, _ = http_json("PUT", url, {"holder": "d"})
    assert status == 201
    assert http_json("GET", url)[1]["holder"] == "d"
