"""End to end: the command line for runs against the real service (a daemon on the tests'
CouchDB), run as users run it, as its own process."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest

from tests.couch import with_credentials
from tests.test_activations_e2e import activation_prefixes, reply_worker, start  # noqa: F401
from tests.test_daemon_e2e import Daemon, StartDaemon, start_daemon  # noqa: F401

pytestmark = pytest.mark.e2e


def url_of(daemon: Daemon) -> str:
    """The daemon's root with the admin's name and password in it (none on an admin party)."""
    couch = urllib.parse.urlsplit(daemon.couch_url)
    if couch.username is None:
        return daemon.url
    user = (urllib.parse.unquote(couch.username), urllib.parse.unquote(couch.password or ""))
    return with_credentials(daemon.url, user)


def argv(daemon: Daemon, *args: str) -> list[str]:
    return [sys.executable, "-m", "couchdb_events", *args, "--url", url_of(daemon)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(daemon, *args), capture_output=True, text=True, env=env(), timeout=60, check=False
    )


def until(check: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def fired_id(daemon: Daemon, event: str, *args: str) -> str:
    done = cli(daemon, "fire", event, "--json", *args)
    assert done.stderr == "" or "failed" in done.stderr, done.stderr
    [run] = json.loads(done.stdout)["runs"]
    return str(run["id"])


def setup_events(daemon: Daemon) -> None:
    reply_worker(daemon, "mail")
    reply_worker(daemon, "slow", processes=1)
    daemon.event({"_id": "go", "workers": {"mail": {}}})
    daemon.event({"_id": "bad", "workers": {"mail": {"fail": True}}})
    daemon.event({"_id": "nap", "workers": {"slow": {"sleep": 30}}})
    for event in ("go", "bad", "nap"):
        daemon.wait_loaded(event)


def test_status_fire_runs_and_run(start: StartDaemon) -> None:  # noqa: F811
    daemon = start()
    setup_events(daemon)
    status = cli(daemon, "status")
    assert status.returncode == 0, status.stderr
    assert "connected: yes" in status.stdout and "mail" in status.stdout
    assert json.loads(cli(daemon, "status", "--json").stdout)["workers"]["mail"]["mode"] == "reply"

    fired = cli(daemon, "fire", "/go", "--data", '{"n": 7}', "--wait", "20")
    assert fired.returncode == 0, fired.stderr
    assert "succeeded" in fired.stdout and '"done":' in fired.stdout
    run_id = fired_id(daemon, "go", "--wait", "20")
    listed = until(lambda: run_id in cli(daemon, "runs", "--event", "go").stdout)
    assert listed, cli(daemon, "runs", "--event", "go").stdout
    records = json.loads(cli(daemon, "runs", "--event", "go", "--json").stdout)["activations"]
    assert {r["event"] for r in records} == {"go"} and run_id in [r["_id"] for r in records]
    assert run_id not in cli(daemon, "runs", "--event", "bad").stdout

    failed = cli(daemon, "fire", "bad", "--wait", "20")
    assert failed.returncode == 1
    assert failed.stderr.startswith("couchdb-events: run ") and "told to fail" in failed.stderr
    bad_id = failed.stderr.split()[2]

    def logs() -> str:
        shown = cli(daemon, "run", bad_id, "--logs")
        return shown.stdout if f"working on {bad_id}" in shown.stdout else ""

    shown = until(logs)
    assert shown, cli(daemon, "run", bad_id, "--logs").stdout
    assert "failed" in shown and "told to fail" in shown and "stderr" in shown
    missing = cli(daemon, "run", "no-such-run")
    assert missing.returncode == 1
    assert missing.stderr == "couchdb-events: 404 not_found: no activation 'no-such-run'\n"


def read_line(proc: subprocess.Popen[str], needle: str, timeout: float = 20) -> str:
    """The first line holding ``needle`` that the process prints within ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if needle in line:
            return line
    raise AssertionError(f"no line with {needle!r} from runs --follow")


def test_runs_follow_prints_a_run_fired_after_it_started(start: StartDaemon) -> None:  # noqa: F811
    daemon = start()
    setup_events(daemon)
    before = fired_id(daemon, "go", "--wait", "20")
    proc = subprocess.Popen(
        argv(daemon, "runs", "--follow", "--event", "go", "--interval", "0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        read_line(proc, before)  # it is following
        after = fired_id(daemon, "go")
        read_line(proc, after)
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "Traceback" not in err and err == ""


# -- run controls: these need POST /_activations/<id>/retry and /cancel ---------------------------
def test_retry_and_cancel(start: StartDaemon) -> None:  # noqa: F811
    daemon = start()
    setup_events(daemon)
    failed = fired_id(daemon, "bad", "--wait", "20")
    retried = cli(daemon, "retry", failed)
    assert retried.returncode == 0, retried.stderr
    assert f"retried {failed} as " in retried.stdout
    new_id = retried.stdout.split(" as ")[1].split()[0]
    record = json.loads(cli(daemon, "run", new_id, "--json").stdout)
    assert record["retry_of"] == failed and record["attempt"] == 2
    again = cli(daemon, "retry", failed)
    assert again.returncode == 1 and again.stderr.startswith("couchdb-events: 409 conflict")

    running = fired_id(daemon, "nap")
    queued = fired_id(daemon, "nap")  # one process: waits behind the first
    cancelled = cli(daemon, "cancel", queued)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"{queued}: cancelled (was accepted)" in cancelled.stdout
    stopped = cli(daemon, "cancel", running, "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] in ("cancelled", "cancelling")
    final = cli(daemon, "cancel", queued)
    assert final.returncode == 1 and final.stderr.startswith("couchdb-events: 409 conflict")
