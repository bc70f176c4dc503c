"""End to end: LivelyCouch's list form of an event, fired through a ``:name`` path pattern."""

from __future__ import annotations

import pytest

from tests.test_daemon_e2e import (
    REPLY_PY,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
)

pytestmark = pytest.mark.e2e


def test_list_form_event_fires_through_a_pattern(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker(
        "tick", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply", processes=2
    )
    daemon.event(
        {
            "_id": "timer_event",
            "trigger": [
                {"path": "/timer/:timerid", "method": "GET", "parameters": {"id": ":timerid"}}
            ],
            "workers": [
                {"name": "tick", "parameters": {"n": 1, "rest": "fixed"}},
                {"name": "tick", "parameters": {"n": 2, "id": "mine"}},
            ],
            "disabled": False,
        }
    )
    daemon.wait_loaded("timer_event")

    status, _h, body = daemon.fire("/timer/42?wait=10&timerid=ignored")
    assert status == 200, body
    assert body["events"] == ["timer_event"]
    answers = sorted((run["answer"]["arguments"] for run in body["runs"]), key=lambda a: a["n"])
    # The path binding wins over the query; the worker's own "id" wins over the trigger's.
    assert answers == [{"id": "42", "n": 1, "rest": "fixed"}, {"id": "mine", "n": 2}]
    assert [run["worker"] for run in body["runs"]] == ["tick", "tick"]

    status, _h, body = daemon.fire("/_events/timer/7?wait=10")  # the unstripped form
    assert status == 200, body
    assert {run["answer"]["arguments"]["id"] for run in body["runs"]} == {"7", "mine"}

    status, headers, body = daemon.fire("/timer/42", method="POST")
    assert (status, body["error"], headers["Allow"]) == (405, "method_not_allowed", "GET")
    status, _h, body = daemon.fire("/timer/42/43")
    assert (status, body["error"]) == (404, "not_found")
    status, _h, body = daemon.fire("/timer/")
    assert (status, body["error"]) == (404, "not_found")

    triggers = daemon.status()["events"]["timer_event"]["triggers"]
    assert triggers == [{"path": "/timer/:timerid", "methods": ["GET"]}]
    stop_and_check(daemon)
