"""``couchdb-events serve``: the same core, standalone, configured from an ini file and flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from couchdb_events.config import redact_url
from couchdb_events.couch.embedded import free_port
from tests.couch import CouchServer, server_with_admin, split_credentials
from tests.daemon_host import http

pytestmark = pytest.mark.e2e


def _wait_serving(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited at start"
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not answer")


def test_serve_reads_couchdbs_local_ini_and_flags_override(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> None:
    events, workers = fresh_db("events"), fresh_db("workers")
    ini_port, flag_port = free_port(), free_port()
    ini = tmp_path / "local.ini"
    ini.write_text(
        "; CouchDB's own local.ini, with our section in it\n"
        "[couchdb]\nuuid = 123\n\n[httpd]\nport = 5984\n\n"
        "[couchdb_events]\n"
        f"couchdb_url = {couch_url}\n"
        f"port = {ini_port}\n"
        f"events_db = {events}\n"
        "workers_db = not_this_one\n"
        f"work_dir = {tmp_path / 'work'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "couchdb_events", "serve", "--config", str(ini),
         "--port", str(flag_port), "--workers-db", workers],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{flag_port}/_events/"
        _wait_serving(proc, url)
        _status, _h, body = http("GET", url + "_status", headers=split_credentials(couch_url)[1])
        info = body["couchdb_events"]
        assert (info["events_db"], info["workers_db"]) == (events, workers)
        assert info["host"] == "standalone" and info["pid"] == proc.pid
        assert http("GET", url)[2]["couchdb_events"] == "Welcome"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == b""  # logs go to stderr
    assert b"stopped" in err


def test_serve_bad_config_file_is_one_clear_line(tmp_path: Path) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text("[couchdb_events]\nport = eighty\n")
    done = subprocess.run(
        [sys.executable, "-m", "couchdb_events", "serve", "--config", str(ini)],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "couchdb-events: [couchdb_events] port = 'eighty': not a port number"
    )
    missing = subprocess.run(
        [sys.executable, "-m", "couchdb_events", "serve", "--config", str(tmp_path / "nope.ini")],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and b"cannot read config file" in missing.stderr
    assert b"Traceback" not in missing.stderr


def test_status_never_shows_the_couchdb_password(couch: CouchServer, tmp_path: Path) -> None:
    # A server with an admin, whose credentials couchdb-events uses; the status shows no
    # password.
    with server_with_admin(couch) as server:
        assert server.admin is not None
        password = server.admin[1]
        authed = server.url
        events, workers = server.create_db("events"), server.create_db("workers")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "serve", "--couchdb-url", authed,
             "--events-db", events, "--workers-db", workers,
             "--port", str(port), "--work-dir", str(tmp_path / "w")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/_events/"
            _wait_serving(proc, url)
            status, _h, body = http("GET", url + "_status")
            assert status == 401  # admins only, and an admin exists now
            admin = split_credentials(authed)[1]
            _status, _h, body = http("GET", url + "_status", headers=admin)
            assert body["couchdb_events"]["couchdb"] == redact_url(authed)
            assert "*****" in redact_url(authed)
            assert password not in str(body)
        finally:
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=10)
        assert password.encode() not in err
