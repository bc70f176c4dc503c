"""How the store takes a CouchDB cluster's 202 Accepted on writes that settle something between
daemons, against a scripted server answering as a real 3-node CouchDB 3.5 did: two writes of
one document from one revision, sent to different nodes at once, can both be taken (each by
some copies), the second one with 202 and ``"accepted": true``; both revisions are then
leaves."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from couchdb_events.couch.store import Store
from couchdb_events.errors import Conflict, StoreError


class Script:
    """What the fake node answers; ``seen`` records each request as (method, path, query)."""

    def __init__(self) -> None:
        self.put_status = 202
        self.copies = 3
        self.db_exists = True
        self.leaves = ["2-ours"]  # the winning revision first, then the conflicts
        self.seen: list[tuple[str, str, dict[str, list[str]]]] = []

    def calls(self) -> list[str]:
        """What was asked, in order: PUT, LEAVES (GET ?open_revs=all), INFO (GET /db), DELETE."""
        names = []
        for method, _path, query in self.seen:
            if method == "GET":
                names.append("LEAVES" if "open_revs" in query else "INFO")
            else:
                names.append(method)
        return names


@pytest.fixture
def node() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _note(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            script.seen.append((self.command, parts.path, query))
            return parts.path, query

        def do_PUT(self) -> None:
            path, _query = self._note()
            if path.count("/") == 1:  # PUT /{db}: a database made by another client meanwhile
                self._answer(500, {"error": "error", "reason": "conflict"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self._answer(script.put_status, {"ok": True, "id": "schedule:e", "rev": "2-ours"})

        def do_GET(self) -> None:
            path, query = self._note()
            if "open_revs" not in query:  # GET /{db}: how many copies it keeps
                self._answer(200, {"db_name": path.strip("/"), "cluster": {"n": script.copies}})
                return
            leaves: list[dict[str, Any]] = [
                {"ok": {"_id": "schedule:e", "_rev": rev}} for rev in script.leaves
            ]
            leaves.append({"ok": {"_id": "schedule:e", "_rev": "1-old", "_deleted": True}})
            self._answer(200, leaves)

        def do_HEAD(self) -> None:
            self._note()
            self.send_response(200 if script.db_exists else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self) -> None:
            self._note()
            self._answer(200, {"ok": True, "id": "schedule:e", "rev": "3-gone"})

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", script
    finally:
        server.shutdown()
        server.server_close()


DOC = {"_id": "schedule:e", "_rev": "1-a", "last_fire": "x"}


def test_an_exclusive_write_taken_without_quorum_beside_another_yields(
    node: tuple[str, Script],
) -> None:
    url, script = node
    script.leaves = ["2-ours", "2-theirs"]
    with pytest.raises(Conflict):
        Store(url, 5).put("state", DOC, exclusive=True)
    assert script.calls() == ["PUT", "INFO", "LEAVES", "DELETE"]
    assert {path for _m, path, _q in script.seen} == {"/state/schedule%3Ae", "/state"}
    _m, _p, query = script.seen[2]
    assert query["open_revs"] == ["all"] and int(query["r"][0]) >= 3  # every copy's leaves
    assert script.seen[3][2]["rev"] == ["2-ours"]  # only its own leaf goes


def test_an_exclusive_write_taken_without_quorum_alone_counts(node: tuple[str, Script]) -> None:
    url, script = node
    script.leaves = ["2-ours"]  # and a deleted leaf, which does not count
    assert Store(url, 5).put("state", DOC, exclusive=True) == "2-ours"
    # A cluster (n = 3): a second look, for a write still on its way at the first.
    assert script.calls() == ["PUT", "INFO", "LEAVES", "LEAVES"]
    script.seen.clear()
    script.copies = 1  # a single node: one look
    assert Store(url, 5).put("state", DOC, exclusive=True) == "2-ours"
    assert script.calls() == ["PUT", "INFO", "LEAVES"]


def test_the_greatest_leaf_prevails_whatever_the_status(node: tuple[str, Script]) -> None:
    """Every exclusive writer reads the leaves back: the greatest (CouchDB's winner) counts,
    even when its own answer was a 202 and the other writer's a 201."""
    url, script = node
    script.leaves = ["2-aaa", "2-ours"]
    assert Store(url, 5).put("state", DOC, exclusive=True) == "2-ours"
    script.put_status = 201
    assert Store(url, 5).put("state", DOC, exclusive=True) == "2-ours"
    assert script.calls() == ["PUT", "INFO", "LEAVES", "LEAVES"] * 2
    script.leaves = ["2-ours", "2-zzz"]
    with pytest.raises(Conflict):  # a 201 too yields to a greater leaf, which stays alone
        Store(url, 5).put("state", DOC, exclusive=True)
    assert script.seen[-1][0] == "DELETE" and script.seen[-1][2]["rev"] == ["2-ours"]


def test_other_writes_are_not_read_back(node: tuple[str, Script]) -> None:
    url, script = node
    assert Store(url, 5).put("state", DOC) == "2-ours"  # a 202, not exclusive: as written
    assert script.calls() == ["PUT"]


def test_a_creation_without_quorum_beside_another_withdraws(node: tuple[str, Script]) -> None:
    """Records: a 202 creation yields to any other leaf (the one with its quorum counts)."""
    url, script = node
    script.leaves = ["2-aaa", "2-ours"]
    assert Store(url, 5).settled("db", "run", "2-ours") is False
    assert script.seen[-1][0] == "DELETE"
    script.leaves = ["2-ours"]
    assert Store(url, 5).settled("db", "run", "2-ours") is True


def test_leaves_come_in_couchdbs_order(node: tuple[str, Script]) -> None:
    url, script = node
    script.leaves = ["2-aa", "3-00", "2-ff"]
    assert [doc["_rev"] for doc in Store(url, 5).leaves("state", "schedule:e")] == [
        "3-00",
        "2-ff",
        "2-aa",
    ]


def test_a_database_made_by_another_client_at_the_same_moment_is_there(
    node: tuple[str, Script],
) -> None:
    """Two daemons starting at once on a CouchDB 3.5: one PUT /{db} is answered 500 conflict."""
    url, script = node
    assert Store(url, 5).create("fresh") is False
    script.db_exists = False
    with pytest.raises(StoreError):
        Store(url, 5).create("fresh")
