"""End to end: CouchDB going away while the daemon runs, with durable records. Every fire gets
its 503 promptly (within ``couchdb_timeout`` and a little), not after the activation writer's
growing back-off; what was accepted before is written once CouchDB is back."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.couch import OwnCouch, http_json
from tests.test_daemon_e2e import (
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e

# A reply worker (python) taking 2 s per message.
SLOW_PY = """
import json, sys, time
for line in sys.stdin:
    time.sleep(2)
    print(json.dumps({"ok": True}), flush=True)
"""


def test_fires_get_their_503_promptly_while_couchdb_is_away(
    start_daemon: StartDaemon,  # noqa: F811
    own_couch: Callable[..., OwnCouch],
) -> None:
    couch = own_couch("ev", "wk")
    url = couch.url
    timeout = 2.0
    daemon = start_daemon(
        couchdb_url=url, events_db="ev", workers_db="wk", couchdb_timeout=str(timeout)
    )
    daemon.worker("slow", {"w.py": SLOW_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "slow", "workers": {"slow": {}}})
    daemon.wait_loaded("slow")
    status, _h, body = daemon.fire("/slow", method="POST")
    assert status == 202, body
    before = body["runs"][0]["id"]
    couch.stop()  # while that run is still under way: its final state cannot be written

    took = []
    for _attempt in range(7):
        began = time.monotonic()
        status, headers, body = daemon.fire("/slow", method="POST")
        took.append(round(time.monotonic() - began, 2))
        assert status == 503, body
        assert body["error"] == "unavailable"
        assert "nothing was accepted" in body["reason"]
        assert headers["Retry-After"]
    # Before: 0.3, 1, 2, 4, 8, 10, 10 s as the writer's back-off grew.
    assert max(took) < timeout + 2.0, took

    couch.start_again()

    def written() -> bool:
        _status, names = http_json("GET", url + "_all_dbs")
        months = [db for db in names if db.startswith("ev_activations_")]
        for db in months:
            status, doc = http_json("GET", f"{url}{db}/{before}")
            if status == 200 and doc.get("state") == "succeeded":
                return True
        return False

    wait_for(written, timeout=30)
    status, _h, body = daemon.fire("/slow", method="POST")
    assert status == 202, body
    stop_and_check(daemon, limit=8.0)
