"""Which daemons are gone, with a fake store: records of older versions, this daemon's own, a
process of this host, and heartbeats of other hosts; the heartbeat document itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import psutil

from couchdb_events.errors import Conflict, NotFound
from couchdb_events.runs.daemons import PREFIX, Heartbeat, Liveness, Owner, process_gone

HERE = socket.gethostname()
ME = Owner(HERE, os.getpid(), psutil.Process().create_time())


class FakeStore:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.reads = 0
        self.lost_answers = 0  # PUTs that are stored but answered with a dropped connection

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        self.reads += 1
        if doc_id not in self.docs:
            raise NotFound(doc_id)
        return dict(self.docs[doc_id])

    def put(self, db: str, doc: dict[str, Any]) -> str:
        current = self.docs.get(doc["_id"])
        if (current or {}).get("_rev") != doc.get("_rev"):
            raise Conflict(doc["_id"])
        rev = f"0-{int(str((current or {}).get('_rev', '0-0'))[2:]) + 1}"
        self.docs[doc["_id"]] = {**doc, "_rev": rev}
        return rev


def ended_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_a_process_of_this_host_is_told_by_its_pid_and_start_time() -> None:
    assert process_gone(HERE, os.getpid(), ME.started, HERE) is False
    assert process_gone(HERE, os.getpid(), ME.started - 60, HERE) is True  # pid used again
    assert process_gone(HERE, ended_pid(), 1.0, HERE) is True
    assert process_gone("elsewhere", os.getpid(), ME.started, HERE) is None
    assert process_gone(HERE, "7", ME.started, HERE) is None


def test_which_daemons_records_name_are_gone() -> None:
    store = FakeStore()
    other_host = {"id": "far:12", "host": "far", "pid": 12, "started": 5.0}
    store.docs[PREFIX + "far:12"] = {"_id": PREFIX + "far:12", "alive_until": 1030.0}
    stale = {"id": "far:13", "host": "far", "pid": 13, "started": 5.0}
    store.docs[PREFIX + "far:13"] = {"_id": PREFIX + "far:13", "alive_until": 990.0}
    silent = {"id": "far:14", "host": "far", "pid": 14, "started": 5.0}
    dead_here = {"id": f"{HERE}:1", "host": HERE, "pid": ended_pid(), "started": 1.0}
    liveness = Liveness(store, "events", ME, now=1000.0)  # type: ignore[arg-type]
    assert liveness.gone(None) is True  # a record from before records named their daemon
    assert liveness.gone(ME.fields()) is False
    assert liveness.gone(other_host) is False  # its heartbeat runs until 1030
    assert liveness.gone(stale) is True  # ran out at 990
    assert liveness.gone(silent) is True  # never wrote one, or it is gone
    assert liveness.gone(dead_here) is True  # no heartbeat needed: the process is gone
    reads = store.reads
    assert liveness.gone(other_host) is False
    assert store.reads == reads  # one look per daemon and pass


def test_the_heartbeat_is_written_renewed_and_ended() -> None:
    store = FakeStore()
    now = [1000.0]
    beat = Heartbeat(store, "events", ME, clock=lambda: now[0])  # type: ignore[arg-type]
    beat.beat()
    doc = store.docs[PREFIX + ME.id]
    assert doc["alive_until"] == 1030.0 and doc["pid"] == ME.pid and doc["host"] == HERE
    now[0] = 1010.0
    beat.beat()
    assert store.docs[PREFIX + ME.id]["alive_until"] == 1040.0
    # A write whose answer was lost: the next one reads the revision again.
    store.docs[PREFIX + ME.id]["_rev"] = "0-9"
    beat.end()
    assert store.docs[PREFIX + ME.id]["alive_until"] == 0.0
    assert Liveness(store, "events", Owner("far", 1, 1.0), 1011.0).gone(ME.fields()) is True  # type: ignore[arg-type]
