"""End to end: a changes trigger on a database split into shards (``q=8``, CouchDB 2 and later:
its ``_changes`` interleaves the shards' feeds, so changes come out of write order and its
sequences are opaque). Two daemons share it; every change fires once, also across a restart
of the follower from its checkpoint. (PouchDB Server takes ``?q=8`` and keeps one feed.)"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.couch import FreshDb, http_json
from tests.docs import RECORD_PY, put_doc, recorded
from tests.test_daemon_e2e import (
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def sharded(couch_url: str, new_db_name: FreshDb) -> str:
    """A database of 8 shards; deleted afterwards (its name comes from ``new_db_name``)."""
    name = new_db_name("sharded")
    status, body = http_json("PUT", f"{couch_url}{name}?q=8")
    assert status in (201, 202), body
    return name


def test_a_trigger_on_a_sharded_database_fires_each_change_once(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    sharded: str,
) -> None:
    one = start_daemon()
    two = start_daemon(events_db=one.events_db, workers_db=one.workers_db)
    one.worker("record", {"w.py": RECORD_PY}, type="python", delegate="w.py", mode="reply")
    one.event(
        {
            "_id": "on_doc",
            "trigger": {"changes": {"db": sharded, "since": 0}},
            "workers": {"record": {}},
        }
    )
    daemons = [one, two]

    def state(daemon: Daemon) -> str:
        return str(daemon.status()["changes"].get("on_doc", {}).get("state", ""))

    def ids() -> list[str]:
        return [m["request"]["body"]["id"] for d in daemons for m in recorded(d.work_dir)]

    wait_for(lambda: sorted(map(state, daemons)) == ["following", "standby"], timeout=15)
    for n in range(60):
        put_doc(couch_url, sharded, {"_id": f"d{n:02d}"})
    wait_for(lambda: len(ids()) >= 60, timeout=30)
    follower = next(d for d in daemons if state(d) == "following")
    other = two if follower is one else one
    stop_and_check(follower)  # gives the lease back with its checkpoint
    wait_for(lambda: state(other) == "following", timeout=15)
    for n in range(60, 90):
        put_doc(couch_url, sharded, {"_id": f"d{n:02d}"})
    wait_for(lambda: len(ids()) >= 90, timeout=30)
    time.sleep(1.0)
    counts = Counter(ids())
    assert sorted(counts) == [f"d{n:02d}" for n in range(90)]
    assert set(counts.values()) == {1}
    stop_and_check(other)
