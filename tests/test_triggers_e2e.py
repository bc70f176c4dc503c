"""End to end: LivelyCouch's list form of an event, fired through a ``:name`` path pattern;
chains of events fired by workers' answers, bounded by ``max_chain_depth``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_activations_e2e import final_record
from tests.test_daemon_e2e import (
    REPLY_PY,
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e

# Notes each message in its data folder, then answers with the events its arguments name.
STEP_PY = """
import json, os, sys
out = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "ran.jsonl")
for line in sys.stdin:
    message = json.loads(line)
    with open(out, "a") as handle:
        handle.write(json.dumps(message) + "\\n")
    print(json.dumps({"emit": message["arguments"].get("next", [])}), flush=True)
"""


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


BAD_EMIT = (
    'emit 3 must be an event id or path, or an object like {"event": "next_event", '
    '"body": {...}, "method": "POST"}'
)


def ran(daemon: Daemon, count: int) -> list[dict[str, Any]]:
    path = daemon.work_dir / "data" / "step" / "ran.jsonl"

    def lines() -> list[str] | None:
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= count else None

    return [json.loads(line) for line in wait_for(lines)]


def test_chain_of_three_events(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker("step", {"w.py": STEP_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "a", "workers": {"step": {"next": ["b"]}}})
    daemon.event({"_id": "b", "workers": {"step": {"next": [{"event": "/c/5", "body": {"x": 1}}]}}})
    daemon.event(
        {
            "_id": "c",
            "trigger": [{"path": "/c/:n", "method": "POST"}],
            "workers": [{"name": "step", "parameters": {"n": ":n", "x": ":x"}}],
        }
    )
    for event in ("a", "b", "c"):
        daemon.wait_loaded(event)

    status, _h, body = daemon.fire("/a?wait=10")
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "succeeded", run.get("error")
    [emitted] = run["emitted"]
    assert emitted["event"] == "b" and len(emitted["runs"]) == 1

    a, b, c = ran(daemon, 3)
    assert [m["event"] for m in (a, b, c)] == ["a", "b", "c"]
    assert a["chain"] == {"depth": 0, "parent": None}
    assert b["chain"] == {"depth": 1, "parent": a["id"]}
    assert c["chain"] == {"depth": 2, "parent": b["id"]}
    assert c["arguments"] == {"n": "5", "x": 1}
    assert c["request"] == {
        "method": "POST",
        "path": "/c/5",
        "query": {},
        "headers": {"X-Couchdb-Events-Chain": "2"},
        "body": {"x": 1},
        "peer": "worker:step",
        "user": None,
    }
    assert a["request"]["headers"]["X-Couchdb-Events-Chain"] == "0"
    record = final_record(daemon, c["id"])
    assert record["chain"] == {"depth": 2, "parent": b["id"]}
    assert final_record(daemon, b["id"])["emitted"] == [{"event": "/c/5", "runs": [c["id"]]}]
    stop_and_check(daemon)


def test_chain_loop_stops_at_max_chain_depth(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon(max_chain_depth="3")
    daemon.worker("step", {"w.py": STEP_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "loop", "workers": {"step": {"next": ["loop", "nowhere", 5]}}})
    daemon.wait_loaded("loop")

    status, _h, body = daemon.fire("/loop")
    assert status == 202, body
    runs = ran(daemon, 4)
    assert [m["chain"]["depth"] for m in runs] == [0, 1, 2, 3]
    last = final_record(daemon, runs[3]["id"])
    assert last["state"] == "succeeded"
    assert last["emitted"] == [
        {"event": "loop", "error": "chain depth 3 exceeded: event loop not fired"},
        {"event": "nowhere", "error": "no event has the id or trigger path /nowhere"},
        {"event": None, "error": BAD_EMIT},
    ]
    daemon.host.wait_for_log("chain depth 3 exceeded: event loop not fired")
    assert len(ran(daemon, 4)) == 4  # nothing beyond the depth ran

    # A worker's own request passing its header on is bounded the same way.
    status, _h, body = daemon.fire("/loop", headers={"X-Couchdb-Events-Chain": "3"})
    assert (status, body["error"]) == (508, "chain_too_deep")
    assert body["reason"] == "chain depth 3 exceeded: event loop not fired"
    status, _h, body = daemon.fire("/loop", headers={"X-Couchdb-Events-Chain": "x"})
    assert status == 400
    stop_and_check(daemon)
