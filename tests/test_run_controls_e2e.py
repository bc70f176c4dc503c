"""End to end: run controls. Retrying a final run, cancelling a scheduled, queued or running
one (also from another daemon), idempotent fires (``Idempotency-Key``) and delayed fires
(``?delay=``, ``?at=``), stored so that a restart or another daemon honours them."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.couch import NewUser
from tests.docs import put_doc
from tests.test_activations_e2e import (  # noqa: F401
    REPLY_PY,
    SLOW_FIRST_PY,
    activation_prefixes,
    final_record,
    fire_run,
    record,
    reply_worker,
    start,
    stored,
)
from tests.test_daemon_e2e import (  # noqa: F401
    Daemon,
    StartDaemon,
    start_daemon,
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e

# Fails its first attempt, answers on later ones (a retry is attempt 2).
FLAKY_PY = """
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message["attempt"] == 1:
        print("first attempts fail here", file=sys.stderr, flush=True)
        print(json.dumps({"error": "flaky", "reason": "attempt 1"}), flush=True)
    else:
        print(json.dumps({"attempt": message["attempt"]}), flush=True)
"""


def control(daemon: Daemon, path: str, method: str = "POST", **kwargs: Any) -> tuple[int, Any]:
    status, _h, body = daemon.fire(path, method, **kwargs)
    return status, body


def worker_runs(daemon: Daemon, worker: str, activation_id: str) -> int:
    """How many times ``REPLY_PY`` started the run ``activation_id``."""
    path: Path = daemon.work_dir / "data" / worker / f"{activation_id}.attempts"
    return len(path.read_text().split()) if path.exists() else 0


def test_retry_a_failed_run(
    start: StartDaemon,  # noqa: F811
    new_user: NewUser,
) -> None:
    daemon = start()
    daemon.worker("flaky", {"f.py": FLAKY_PY}, type="python", delegate="f.py", mode="reply")
    daemon.event({"_id": "go", "workers": {"flaky": {"n": 1}}})
    daemon.wait_loaded("go")
    _status, run = fire_run(daemon, "/go")
    failed = final_record(daemon, run["id"])
    assert failed["state"] == "failed" and "first attempts fail here" in failed["stderr"]

    status, body = control(daemon, f"/_activations/{run['id']}/retry")
    assert status == 202, body
    assert body["ok"] is True and body["retry_of"] == run["id"] and body["events"] == ["go"]
    [again] = body["runs"]
    assert again["worker"] == "flaky" and again["id"] != run["id"]
    retried = final_record(daemon, again["id"])
    assert retried["state"] == "succeeded" and retried["answer"] == {"attempt": 2}
    assert retried["retry_of"] == run["id"] and retried["attempt"] == 2
    assert retried["arguments"] == failed["arguments"] and retried["request"] == failed["request"]
    assert wait_for(lambda: (stored(daemon, run["id"]) or {}).get("retried_as")) == again["id"]

    # Two retries at once (a button clicked twice): one starts, the other is told.
    _status, twice = fire_run(daemon, "/go")
    final_record(daemon, twice["id"])
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _n: control(daemon, f"/_activations/{twice['id']}/retry"),
                                range(2)))  # fmt: skip
    assert sorted(status for status, _body in answers) == [202, 409], answers

    # Once per run (retry the retry); never a run that succeeded or is not over; precise errors.
    status, body = control(daemon, f"/_activations/{run['id']}/retry")
    assert status == 409 and body["error"] == "conflict" and again["id"] in body["reason"]
    status, body = control(daemon, f"/_activations/{again['id']}/retry")
    assert status == 409 and "succeeded" in body["reason"], body
    status, body = control(daemon, "/_activations/nope/retry")
    assert (status, body["error"]) == (404, "not_found")
    status, body = control(daemon, f"/_activations/{run['id']}/retry", "GET")
    assert (status, body["error"]) == (405, "method_not_allowed")
    status, body = control(daemon, f"/_activations/{run['id']}/again")
    assert status == 404, body

    # Steering is for server admins where status is theirs (the default).
    name, password = new_user("u")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}
    status, body = control(daemon, f"/_activations/{run['id']}/retry", headers=basic)
    assert (status, body["error"]) == (403, "forbidden"), body
    stop_and_check(daemon)


def test_cancel_a_queued_a_running_and_a_scheduled_run(
    start: StartDaemon,  # noqa: F811
) -> None:
    daemon = start()
    daemon.worker(
        "slow", {"s.py": SLOW_FIRST_PY}, type="python", delegate="s.py", mode="reply", processes=1
    )
    daemon.event({"_id": "go", "workers": {"slow": {}}})
    daemon.wait_loaded("go")
    _s, running = fire_run(daemon, "/go")  # attempt 1 sleeps 30 s
    _s, queued = fire_run(daemon, "/go")  # waits behind it (one process)
    wait_for(lambda: record(daemon, running["id"])["state"] == "running")

    status, body = control(daemon, f"/_activations/{queued['id']}", "DELETE")
    assert status == 200, body
    assert body == {"ok": True, "id": queued["id"], "state": "cancelled", "was": "accepted"}
    status, body = control(daemon, f"/_activations/{running['id']}/cancel")
    assert status == 200 and body["was"] == "running", body
    for run_id in (queued["id"], running["id"]):
        doc = final_record(daemon, run_id)
        assert doc["state"] == "cancelled", doc
    assert final_record(daemon, queued["id"])["started"] is None  # never started
    status, body = control(daemon, f"/_activations/{running['id']}", "DELETE")
    assert status == 409 and "cancelled already" in body["reason"], body
    status, body = control(daemon, "/_activations/nope", "DELETE")
    assert (status, body["error"]) == (404, "not_found")

    # The killed process was asked to go: no crash, no back-off; the worker serves at once.
    slow = daemon.status()["workers"]["slow"]
    assert slow["state"] == "ok" and slow["restarts"] == 0, slow
    _s, later = fire_run(daemon, "/go")
    wait_for(lambda: record(daemon, later["id"])["state"] == "running")
    assert control(daemon, f"/_activations/{later['id']}/cancel")[0] == 200

    _s, scheduled = fire_run(daemon, "/go?delay=60")
    assert record(daemon, scheduled["id"])["state"] == "scheduled"
    status, body = control(daemon, f"/_activations/{scheduled['id']}/cancel")
    assert status == 200 and body["was"] == "scheduled", body
    assert final_record(daemon, scheduled["id"])["state"] == "cancelled"
    stop_and_check(daemon)


def test_delayed_fires_run_then_and_outlive_a_restart(
    start: StartDaemon,  # noqa: F811
) -> None:
    daemon = start()
    reply_worker(daemon, "mail")
    daemon.event({"_id": "go", "workers": {"mail": {}}})
    daemon.wait_loaded("go")
    fired = time.time()
    status, run = fire_run(daemon, "/go?delay=1.5")
    assert status == 202
    doc = record(daemon, run["id"])
    assert doc["state"] == "scheduled" and doc["run_at"] > doc["accepted"]
    assert stored(daemon, run["id"]) is not None  # stored before the 202
    done = final_record(daemon, run["id"])
    assert done["state"] == "succeeded" and done["started"] >= done["run_at"]
    assert time.time() - fired >= 1.5

    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    _s, later = fire_run(daemon, f"/go?at={at}")
    assert record(daemon, later["id"])["run_at"] == at[:-1] + ".000Z"
    for query, words in [
        ("delay=-1", "delay must be 0 to"),
        ("delay=soon", "delay must be 0 to"),
        ("delay=99999999", "delay must be 0 to"),
        ("at=2026-01-01T00:00:00", "with its zone"),
        ("at=tomorrow", "ISO 8601"),
        ("at=2001-01-01T00:00:00Z", "in the past"),
        (f"at={at}&delay=1", "not both"),
    ]:
        status, _h, body = daemon.fire(f"/go?{query}")
        assert status == 400 and words in body["reason"], (query, body)

    # A restart in between: the next daemon runs it once, at its time.
    _s, soon = fire_run(daemon, "/go?delay=2")
    stop_and_check(daemon)
    again = start(events_db=daemon.events_db, workers_db=daemon.workers_db)
    done = final_record(again, soon["id"])
    assert done["state"] == "succeeded" and done["started"] >= done["run_at"]
    assert worker_runs(again, "mail", soon["id"]) == 1
    assert record(again, later["id"])["state"] == "scheduled"  # still waiting for its time
    stop_and_check(again)


def test_idempotency_key_fires_once_across_restarts_and_daemons(
    start: StartDaemon,  # noqa: F811
) -> None:
    daemon = start()
    reply_worker(daemon, "mail")
    daemon.event({"_id": "go", "workers": {"mail": {}}})
    daemon.wait_loaded("go")
    key = {"Idempotency-Key": "order-1234"}
    status, first_h, first = daemon.fire("/go", headers=key)
    assert status == 202 and "Idempotent-Replayed" not in first_h
    status, headers, second = daemon.fire("/go", headers=key)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true"
    assert second["runs"] == first["runs"]
    [run] = first["runs"]
    assert final_record(daemon, run["id"])["idempotency_key"] == "order-1234"
    _s, _h, other = daemon.fire("/go", headers={"Idempotency-Key": "order-1235"})
    assert other["runs"][0]["id"] != run["id"]
    for bad in ("", "x" * 256, "naïve"):
        status, _h, body = daemon.fire("/go", headers={"Idempotency-Key": bad})
        assert status == 400 and "Idempotency-Key" in body["reason"], (bad, body)

    # Another daemon on the same CouchDB, and this one after a restart, know the key.
    beside = start(events_db=daemon.events_db, workers_db=daemon.workers_db)
    status, headers, third = beside.fire("/go", headers=key)
    assert status == 202 and headers.get("Idempotent-Replayed") == "true", third
    assert [r["id"] for r in third["runs"]] == [run["id"]] and third["events"] == ["go"]
    stop_and_check(beside)
    stop_and_check(daemon)
    again = start(events_db=daemon.events_db, workers_db=daemon.workers_db)
    status, headers, fourth = again.fire("/go", headers=key)
    assert headers.get("Idempotent-Replayed") == "true" and fourth["runs"][0]["id"] == run["id"]
    assert worker_runs(again, "mail", run["id"]) == 0  # not run by this daemon
    assert worker_runs(daemon, "mail", run["id"]) == 1  # run once, by the first
    stop_and_check(again)


def test_cancel_a_run_another_daemon_holds(
    start: StartDaemon,  # noqa: F811
) -> None:
    holder = start()
    reply_worker(holder, "mail")
    holder.event({"_id": "go", "workers": {"mail": {}}})
    holder.wait_loaded("go")
    other = start(events_db=holder.events_db, workers_db=holder.workers_db)
    _s, run = fire_run(holder, "/go?delay=60")
    status, body = control(other, f"/_activations/{run['id']}/cancel")
    assert status == 202 and body["state"] == "cancelling" and body["was"] == "scheduled", body
    doc = final_record(holder, run["id"])
    assert doc["state"] == "cancelled", doc
    status, body = control(other, f"/_activations/{run['id']}/cancel")
    assert status == 409, body
    stop_and_check(other)
    stop_and_check(holder)


def test_cancel_a_run_whose_daemon_is_gone(
    start: StartDaemon,  # noqa: F811
) -> None:
    first = start()
    reply_worker(first, "mail")
    first.event({"_id": "go", "workers": {"mail": {}}})
    first.wait_loaded("go")
    _s, gone = fire_run(first, "/go?delay=60")
    _s, asked = fire_run(first, "/go?delay=60")
    first.host.kill()  # SIGKILL: both records stay "scheduled", of a daemon that is gone
    # A cancel request that reached no live daemon (as if the holder died before acting on it).
    put_doc(
        first.couch_url,
        first.events_db + "_state",
        {"_id": f"cancel:{asked['id']}", "type": "cancel", "run": asked["id"]},
    )
    other = start(events_db=first.events_db, workers_db=first.workers_db)
    # The next daemon resumes the open records, but not the one asked to be cancelled.
    assert final_record(other, asked["id"])["state"] == "cancelled"
    status, body = control(other, f"/_activations/{gone['id']}/cancel")
    assert status == 200 and body["state"] == "cancelled", body
    assert final_record(other, gone["id"])["state"] == "cancelled"
    stop_and_check(other)
