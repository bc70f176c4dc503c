"""End to end: several daemons on one CouchDB, started at the same instant, share the work.

Each schedule fire runs once, also across a SIGKILL of the daemon that fired last; each change
of a changes trigger runs once, none missed across a SIGKILL of its follower and the takeover;
a dead daemon's unfinished runs are resumed by exactly one of the others; a daemon paused past
its lease (SIGSTOP, then SIGCONT) never becomes a second follower.

With ``COUCHDB_NODE_URLS`` (space-separated root URLs of the nodes of one CouchDB cluster,
credentials included), daemon i talks to node i modulo their number, as daemons on the nodes of
a cluster would; otherwise every daemon uses the server the tests run against.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from tests.couch import FreshDb
from tests.daemon_host import wait_until_serving
from tests.docs import RECORD_PY, put_doc, recorded
from tests.test_daemon_e2e import (
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e


def node_urls(couch_url: str) -> list[str]:
    return os.environ.get("COUCHDB_NODE_URLS", "").split() or [couch_url]


@pytest.fixture
def fresh_names(new_db_name: FreshDb) -> str:
    """A unique prefix for databases the daemons create themselves; every database whose name
    starts with it is deleted afterwards (it comes from ``new_db_name``)."""
    return new_db_name("many")


def record_worker(daemon: Daemon, **fields: Any) -> None:
    fields.setdefault("mode", "reply")
    daemon.worker("record", {"w.py": RECORD_PY}, type="python", delegate="w.py", **fields)


def ran(daemons: list[Daemon]) -> list[tuple[int, dict[str, Any]]]:
    """Every message the record worker got, with the index of the daemon that ran it."""
    return [(i, m) for i, d in enumerate(daemons) for m in recorded(d.work_dir)]


def fire_times(daemons: list[Daemon]) -> list[str]:
    return [m["request"]["body"]["scheduled"] for _i, m in ran(daemons)]


def assert_once_each_and_no_gap(times: list[str], every: int = 1) -> None:
    counts = Counter(times)
    assert all(n == 1 for n in counts.values()), [t for t, n in counts.items() if n > 1]
    seconds = sorted(_epoch(t) for t in counts)
    missing = [t for t in range(seconds[0], seconds[-1] + 1, every) if t not in set(seconds)]
    assert missing == [], f"fires missing: {missing}"


def _epoch(text: str) -> int:
    import calendar

    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))


def settings_for(couch_url: str, index: int) -> dict[str, str]:
    urls = node_urls(couch_url)
    return {"couchdb_url": urls[index % len(urls)]}


def start_many(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    count: int,
    events_db: str,
    workers_db: str,
) -> list[Daemon]:
    daemons = [
        start_daemon(
            wait=False, events_db=events_db, workers_db=workers_db, **settings_for(couch_url, i)
        )
        for i in range(count)
    ]
    for daemon in daemons:
        wait_until_serving(daemon.host, daemon.url, headers=daemon.admin)
    return daemons


@pytest.mark.parametrize("count", [2, 3])
def test_daemons_started_at_once_on_new_databases_share_each_schedule_fire(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    fresh_names: str,
    count: int,
) -> None:
    """The databases do not exist yet: every daemon creates them (and the activations index)
    at the same moment, and all start. Then each fire of an every-second schedule runs once,
    also after the daemon that fired last is killed."""
    daemons = start_many(
        start_daemon, couch_url, count, f"{fresh_names}_events", f"{fresh_names}_workers"
    )
    first = daemons[0]
    record_worker(first)
    first.event({"_id": "tick", "trigger": {"schedule": {"every": 1}}, "workers": {"record": {}}})
    for daemon in daemons:
        daemon.wait_loaded("tick")
    wait_for(lambda: len(fire_times(daemons)) >= 4, timeout=15)
    # Half-way between two fires, kill the daemon that ran the latest one.
    while not 0.4 < time.time() % 1 < 0.6:
        time.sleep(0.01)
    last = max(ran(daemons), key=lambda item: item[1]["request"]["body"]["scheduled"])[0]
    daemons[last].host.kill()
    alive = [d for i, d in enumerate(daemons) if i != last]
    before = len(fire_times(daemons))
    wait_for(lambda: len(fire_times(daemons)) >= before + 4, timeout=15)
    for daemon in alive:
        stop_and_check(daemon)
    assert_once_each_and_no_gap(fire_times(daemons))
    for daemon in alive:
        assert daemon.host.log_text("error") == ""


def follow_orders(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    fresh_db: Any,
    count: int,
) -> tuple[list[Daemon], str]:
    """``count`` daemons started at once, sharing event ``on_order``, which runs the record
    worker for every change of a fresh database (its name is returned)."""
    events, workers, orders = fresh_db("events"), fresh_db("workers"), fresh_db("orders")
    daemons = start_many(start_daemon, couch_url, count, events, workers)
    record_worker(daemons[0])
    daemons[0].event(
        {
            "_id": "on_order",
            "trigger": {"changes": {"db": orders}},
            "workers": {"record": {"order": ":id"}},
        }
    )
    return daemons, orders


def test_three_daemons_share_a_changes_trigger_across_a_kill_of_its_follower(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    fresh_db: Any,
) -> None:
    """One follows, two stand by; every change runs once; the follower killed, another takes
    over from the checkpoint and misses none."""
    daemons, orders = follow_orders(start_daemon, couch_url, fresh_db, 3)

    def states() -> list[str]:
        return sorted(d.status()["changes"].get("on_order", {}).get("state", "") for d in alive)

    def ids() -> list[str]:
        return [m["request"]["body"]["id"] for _i, m in ran(daemons)]

    alive = list(daemons)
    wait_for(lambda: states() == ["following", "standby", "standby"], timeout=15)
    for n in range(30):
        put_doc(couch_url, orders, {"_id": f"a{n:02d}"})
    wait_for(lambda: len(ids()) >= 30, timeout=20)
    follower = next(d for d in alive if d.status()["changes"]["on_order"]["state"] == "following")
    follower.host.kill()
    alive.remove(follower)
    for n in range(20):
        put_doc(couch_url, orders, {"_id": f"b{n:02d}"})
    # Same host, a process that is gone: the lease is taken at the next look (within 5 s).
    wait_for(lambda: len(ids()) >= 50, timeout=30)
    time.sleep(1.0)
    assert sorted(ids()) == sorted(
        [f"a{n:02d}" for n in range(30)] + [f"b{n:02d}" for n in range(20)]
    )
    assert sorted(states()) == ["following", "standby"]
    for daemon in alive:
        stop_and_check(daemon)


SLOW_PY = """
import json, os, sys, time
out = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "ran.jsonl")
for line in sys.stdin:
    time.sleep(float(json.loads(line)["arguments"].get("sleep", 0)))
    with open(out, "a") as handle:
        handle.write(line)
    print(json.dumps({"ok": True}), flush=True)
"""


def test_a_dead_daemons_runs_are_resumed_by_exactly_one_of_the_others(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    fresh_db: Any,
) -> None:
    events, workers = fresh_db("events"), fresh_db("workers")
    daemons = start_many(start_daemon, couch_url, 3, events, workers)
    daemons[0].worker(
        "record", {"w.py": SLOW_PY}, type="python", delegate="w.py", mode="reply", processes=1
    )
    daemons[0].event({"_id": "slow", "workers": {"record": {"sleep": ":sleep"}}})
    for daemon in daemons:
        daemon.wait_loaded("slow")
    doomed = daemons[0]
    accepted = []
    for _n in range(6):
        status, _h, body = doomed.fire("/slow?sleep=1", method="POST")
        assert status == 202, body
        accepted += [run["id"] for run in body["runs"]]
    time.sleep(0.3)
    doomed.host.kill()  # one run is under way, five are queued: all accepted, none finished
    others = daemons[1:]

    def finished() -> list[str]:
        return [m["id"] for i, m in ran(daemons) if i != 0]

    try:
        wait_for(lambda: set(finished()) >= set(accepted), timeout=60)
    except AssertionError:
        for d in others:
            print(d.host.log_text())
        print(accepted, finished())
        raise
    time.sleep(1.5)
    counts = Counter(finished())
    assert {run_id: counts[run_id] for run_id in accepted} == dict.fromkeys(accepted, 1)
    for daemon in others:
        stop_and_check(daemon)


def test_a_daemon_paused_past_its_lease_never_becomes_a_second_follower(
    start_daemon: StartDaemon,  # noqa: F811
    couch_url: str,
    fresh_db: Any,
) -> None:
    """SIGSTOP the follower for longer than its lease: another daemon takes the lease; after
    SIGCONT the paused one sees it lost the lease before firing anything, says so, and every
    change still runs once."""
    daemons, orders = follow_orders(start_daemon, couch_url, fresh_db, 2)

    def state(daemon: Daemon) -> str:
        return str(daemon.status()["changes"].get("on_order", {}).get("state", ""))

    def ids() -> list[str]:
        return [m["request"]["body"]["id"] for _i, m in ran(daemons)]

    wait_for(lambda: sorted(map(state, daemons)) == ["following", "standby"], timeout=15)
    paused = next(d for d in daemons if state(d) == "following")
    other = next(d for d in daemons if d is not paused)
    put_doc(couch_url, orders, {"_id": "before"})
    wait_for(lambda: ids() == ["before"], timeout=10)
    os.kill(paused.host.proc.pid, signal.SIGSTOP)
    try:
        # The lease lasts 30 s; the other daemon looks every 5 s.
        wait_for(lambda: state(other) == "following", timeout=45)
        for n in range(5):
            put_doc(couch_url, orders, {"_id": f"during{n}"})
        wait_for(lambda: len(ids()) >= 6, timeout=10)
    finally:
        os.kill(paused.host.proc.pid, signal.SIGCONT)
    # Changes it would read as soon as it runs again, from its old position.
    for n in range(5):
        put_doc(couch_url, orders, {"_id": f"after{n}"})
    paused.host.wait_for_log("lost its lease", timeout=15)
    wait_for(lambda: len(ids()) >= 11, timeout=15)
    time.sleep(1.5)
    expected = ["before"] + [f"during{n}" for n in range(5)] + [f"after{n}" for n in range(5)]
    assert sorted(ids()) == sorted(expected)
    assert Counter(ids()).most_common(1)[0][1] == 1
    status = paused.status()["changes"]["on_order"]
    assert status["state"] == "standby"
    assert "lost its lease" in (status["last_error"] or "")
    assert state(other) == "following"
    for daemon in daemons:
        stop_and_check(daemon)
