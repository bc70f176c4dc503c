"""Taking over the open records of daemons that are gone, with a fake store: a record a live
daemon runs is left alone; a claim a cluster took beside a greater one does not count."""

from __future__ import annotations

import os
import socket
from typing import Any

import psutil

from couchdb_events.config import Config
from couchdb_events.runs.activations import Activations
from couchdb_events.runs.daemons import Owner
from couchdb_events.runs.records import iso

HERE = socket.gethostname()
ME = Owner(HERE, os.getpid(), psutil.Process().create_time())
GONE = {"id": f"{HERE}:1", "host": HERE, "pid": 1, "started": 1.0}  # pid 1 started later
DB = "events_activations_2026_12"


class FakeStore:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = {doc["_id"]: doc for doc in docs}
        self.beaten: set[str] = set()  # claims a cluster took beside a greater one
        self.asked: list[str] = []

    def databases(self) -> list[str]:
        return [DB]

    def find(self, db: str, selector: Any, limit: int, skip: int = 0) -> list[dict[str, Any]]:
        docs = [dict(d) for d in self.docs.values() if d["state"] in ("accepted", "running")]
        return docs[skip : skip + limit]

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        from couchdb_events.errors import NotFound

        raise NotFound(doc_id)  # no heartbeats: every other daemon's is gone

    def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for doc in docs:
            out.append({"ok": True, "id": doc["_id"], "rev": "2-mine"})
        return out

    def prevails(self, db: str, doc_id: str, rev: str) -> bool:
        self.asked.append(doc_id)
        return doc_id not in self.beaten


def record(doc_id: str, daemon: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "_rev": "1-a",
        "state": "accepted",
        "accepted": iso(1_796_000_000.0 + len(doc_id)),
        "daemon": daemon,
    }


def test_orphans_are_claimed_and_a_claim_without_quorum_beside_another_is_not() -> None:
    live_here = Owner(HERE, os.getppid(), psutil.Process(os.getppid()).create_time()).fields()
    store = FakeStore(
        [
            record("gone", GONE),
            record("live", live_here),  # its daemon runs it: left alone
            record("raced", GONE),  # a cluster took a greater claim beside this one's
        ]
    )
    store.beaten = {"raced"}
    records = Activations(store, Config(), ME)  # type: ignore[arg-type]
    claimed = records.orphans()
    assert [doc["_id"] for _db, doc in claimed] == ["gone"]
    assert all(doc["daemon"] == ME.fields() and doc["_rev"] == "2-mine" for _db, doc in claimed)
    assert sorted(store.asked) == ["gone", "raced"]
