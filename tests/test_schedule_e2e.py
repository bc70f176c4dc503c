"""End to end: events fired by their schedule, once per fire time even with two daemons on one
CouchDB; a bad cron expression is the event's error."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.docs import RECORD_PY, recorded
from tests.test_daemon_e2e import (
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e


def runs(*daemons: Daemon) -> list[dict[str, Any]]:
    return recorded(*(daemon.work_dir for daemon in daemons))


def setup_every_second(daemon: Daemon) -> None:
    daemon.worker("record", {"w.py": RECORD_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event(
        {"_id": "tick", "trigger": [{"schedule": {"every": 1}}], "workers": {"record": {}}}
    )


def test_every_second_fires_the_event(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    setup_every_second(daemon)
    daemon.wait_loaded("tick")
    found = wait_for(lambda: len(runs(daemon)) >= 2 and runs(daemon), timeout=3.5)
    first = found[0]
    assert first["event"] == "tick" and first["worker"] == "record"
    request = first["request"]
    assert (request["method"], request["path"], request["peer"]) == ("POST", "/tick", "schedule")
    assert request["body"]["scheduled"].endswith("Z")
    schedules = daemon.status()["schedules"]
    assert schedules["tick"]["last_error"] is None
    assert schedules["tick"]["last_fire"] is not None
    assert schedules["tick"]["next_fire"] > schedules["tick"]["last_fire"]
    stop_and_check(daemon)


def test_two_daemons_fire_each_time_once(start_daemon: StartDaemon) -> None:  # noqa: F811
    one = start_daemon()
    two = start_daemon(events_db=one.events_db, workers_db=one.workers_db)
    setup_every_second(one)
    one.wait_loaded("tick")
    two.wait_loaded("tick")
    time.sleep(3.5)
    found = runs(one, two)
    times = [message["request"]["body"]["scheduled"] for message in found]
    assert len(found) >= 2
    assert len(set(times)) == len(times), times
    stop_and_check(one)
    stop_and_check(two)


def test_bad_cron_is_the_events_error(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker("record", {"w.py": RECORD_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event(
        {
            "_id": "bad",
            "trigger": {"schedule": {"cron": "61 * * * *", "timezone": "Europe/Berlin"}},
            "workers": {"record": {}},
        }
    )
    daemon.wait_loaded("bad")
    status = daemon.status()
    assert status["events"]["bad"]["error"] == (
        "event 'bad': schedule: invalid cron expression '61 * * * *'"
    )
    assert "bad" not in status["schedules"]
    stop_and_check(daemon)
