"""The shipped reverse-proxy configurations, run for real in front of the tests' server
(PouchDB Server, or the CouchDB of COUCHDB_URL) and ``couchdb-events serve`` (started with the
shipped ``deploy/couchdb-events.ini.example``, its addresses overridden by flags).

Each check runs through nginx (``deploy/nginx/couchdb-events.conf``; nginx must be installed,
``./run-tests`` installs it) and through haproxy (``deploy/haproxy/couchdb-events.cfg``; only
when haproxy is installed, it is never required). Requests to CouchDB through the proxy carry
the credentials of ``couch_url`` (a real CouchDB 3 lets only its admins into new databases).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from tests.couch import (
    LOOPBACK,
    REPO_ROOT,
    CouchServer,
    free_port,
    http_json,
    split_credentials,
    with_credentials,
)
from tests.daemon_host import http
from tests.docs import put_doc, put_worker
from tests.nginx import NginxProxy, nginx_binary_fixture  # noqa: F401 - nginx_binary

pytestmark = pytest.mark.e2e

HAPROXY_CONFIG = REPO_ROOT / "deploy" / "haproxy" / "couchdb-events.cfg"
INI_EXAMPLE = REPO_ROOT / "deploy" / "couchdb-events.ini.example"
HAPROXY_CANDIDATES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")

# A reply worker that answers with the request it was given.
ECHO_PY = """\
import couchdb_events_worker as w


def handle(message):
    request = message["request"]
    return {"path": request["path"], "peer": request["peer"], "headers": request["headers"]}


w.run(handle, mode="reply")
"""
EVENT = "echo_event"
CLIENT_ADDRESS = "203.0.113.7"  # what a client (or a proxy before ours) claims; never dialled


# -- haproxy ---------------------------------------------------------------------------------
def find_haproxy() -> str | None:
    found = shutil.which("haproxy")
    if found:
        return found
    for candidate in HAPROXY_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def render_haproxy(
    text: str,
    *,
    public_port: int,
    events_port: int,
    couchdb_port: int,
    couchdb_host: str = LOOPBACK,
) -> str:
    """The shipped config with the test's ports, and a ``global`` section fit for a test run
    (no user switch, no syslog). Fails when the file no longer has the lines it replaces."""
    sections: list[tuple[str, list[str]]] = []
    for raw in text.splitlines():
        line = re.sub(r"#.*", "", raw).rstrip()
        if not line:
            continue
        if not line[0].isspace():
            sections.append((line, []))
        elif sections:
            sections[-1][1].append(line)
    servers = {
        "couchdb_events": f"{LOOPBACK}:{events_port}",
        "couchdb": f"{couchdb_host}:{couchdb_port}",
    }
    out = ["global", "    maxconn 256"]
    replaced: list[str] = []
    for header, body in sections:
        kind, _, name = header.partition(" ")
        if kind == "global":
            continue
        out.append(header)
        for line in body:
            words = line.split()
            if kind == "frontend" and words[0] == "bind":
                out.append(f"    bind {LOOPBACK}:{public_port}")
                replaced.append("bind")
            elif kind == "backend" and words[0] == "server" and name.strip() in servers:
                out.append(f"    server {words[1]} {servers[name.strip()]}")
                replaced.append(name.strip())
            else:
                out.append(line)
    if sorted(replaced) != ["bind", "couchdb", "couchdb_events"]:
        raise ValueError(f"{HAPROXY_CONFIG.name}: expected one bind and one server each, got "
                         f"{replaced}")  # fmt: skip
    return "\n".join(out) + "\n"


class HaproxyProxy:
    """haproxy running the shipped config (ports replaced) in the foreground."""

    def __init__(
        self, haproxy: str, *, events_port: int, couchdb_port: int, couchdb_host: str = LOOPBACK
    ) -> None:
        self.haproxy = haproxy
        self.events_port = events_port
        self.couchdb_port = couchdb_port
        self.couchdb_host = couchdb_host
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/"
        self._dir = Path(tempfile.mkdtemp(prefix="couchdb-events-haproxy-"))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> HaproxyProxy:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        config = self._dir / "haproxy.cfg"
        config.write_text(
            render_haproxy(
                HAPROXY_CONFIG.read_text(encoding="utf-8"),
                public_port=self.port,
                events_port=self.events_port,
                couchdb_port=self.couchdb_port,
                couchdb_host=self.couchdb_host,
            ),
            encoding="utf-8",
        )
        with (self._dir / "output.txt").open("wb") as output:
            self._proc = subprocess.Popen(
                [self.haproxy, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self._proc.returncode}:\n{self.log()}")
            try:
                http("GET", self.url + "_events/", timeout=1)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not answer in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self._dir / "output.txt"
        return path.read_text(errors="replace") if path.is_file() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> HaproxyProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- the stack: the tests' server, couchdb-events serve, a proxy -----------------------------
@dataclass(frozen=True)
class Service:
    couch_url: str
    port: int
    events_db: str
    workers_db: str
    db: str  # a plain database, for the CouchDB checks


@dataclass(frozen=True)
class Proxy:
    name: str
    url: str
    port: int
    couch_url: str  # the proxy's URL with the credentials of couch_url, for CouchDB's side


def _wait_for_event(proc: subprocess.Popen[bytes], url: str, admin: dict[str, str]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited at start"
        try:
            status, _h, body = http("GET", url + "_status", headers=admin, timeout=2)
            if status == 200 and EVENT in body.get("events", {}):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not answer with the event known")


@pytest.fixture(scope="module")
def service(couch: CouchServer) -> Iterator[Service]:
    """``couchdb-events serve --config <the shipped ini example>`` on fresh databases."""
    couch_url = couch.url
    scope = couch.scope()
    events_db, workers_db, db = (
        scope.create_db(prefix) for prefix in ("events", "workers", "plain")
    )
    put_worker(
        couch_url, workers_db, "echo", {"echo.py": ECHO_PY},
        type="python", delegate="echo.py", mode="reply",
    )  # fmt: skip
    put_doc(couch_url, events_db, {"_id": EVENT, "workers": {"echo": {}}})
    port = free_port()
    work_dir = Path(tempfile.mkdtemp(prefix="couchdb-events-proxy-test-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "couchdb_events", "serve", "--config", str(INI_EXAMPLE),
         "--couchdb-url", couch_url, "--port", str(port), "--events-db", events_db,
         "--workers-db", workers_db, "--work-dir", str(work_dir), "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        _wait_for_event(proc, f"http://{LOOPBACK}:{port}/_events/", split_credentials(couch_url)[1])
        yield Service(couch_url, port, events_db, workers_db, db)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        shutil.rmtree(work_dir, ignore_errors=True)
        scope.clean_up()
    assert proc.returncode == 0, err.decode(errors="replace")


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(request: pytest.FixtureRequest, service: Service, couch: CouchServer) -> Iterator[Proxy]:
    """The proxy, in front of the service and the tests' server."""
    runner: NginxProxy | HaproxyProxy
    if request.param == "nginx":
        nginx = request.getfixturevalue("nginx_binary")
        runner = NginxProxy(
            nginx, events_port=service.port, couchdb_port=couch.port, couchdb_host=couch.host
        )
    else:
        haproxy = find_haproxy()
        if haproxy is None:
            pytest.skip("haproxy is not installed (optional: apt-get install haproxy)")
        runner = HaproxyProxy(
            haproxy, events_port=service.port, couchdb_port=couch.port, couchdb_host=couch.host
        )
    with runner:
        url = with_credentials(runner.url, couch.admin)
        yield Proxy(request.param, runner.url, runner.port, url)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


# -- the checks -------------------------------------------------------------------------------
def test_event_fires_through_the_proxy_and_the_worker_sees_the_forwarded_headers(
    proxy: Proxy,
) -> None:
    # nginx appends the address it saw to the client's X-Forwarded-For, in one header. haproxy
    # adds a second X-Forwarded-For header instead, and the service hands a worker only the
    # first of repeated headers (the client's own claim): through haproxy, send none.
    sent = {"X-Forwarded-For": CLIENT_ADDRESS} if proxy.name == "nginx" else {}
    status, _h, body = http("GET", f"{proxy.url}_events/{EVENT}?wait=10", headers=sent)
    assert status == 200, body
    [run] = body["runs"]
    assert (run["worker"], run["state"]) == ("echo", "succeeded"), run
    answer = run["answer"]
    assert answer["path"] == f"/{EVENT}"
    headers = answer["headers"]
    expected = f"{CLIENT_ADDRESS}, {LOOPBACK}" if sent else LOOPBACK
    assert _header(headers, "X-Forwarded-For") == expected, headers
    assert _header(headers, "X-Forwarded-Proto") == "http"
    assert _header(headers, "X-Forwarded-Host") == f"{LOOPBACK}:{proxy.port}"


def test_status_and_welcome_through_the_proxy(proxy: Proxy, service: Service) -> None:
    status, _h, body = http("GET", f"{proxy.couch_url}_events/_status")  # for admins
    assert status == 200, body
    info = body["couchdb_events"]
    assert (info["events_db"], info["workers_db"]) == (service.events_db, service.workers_db)
    assert "echo" in body["workers"]
    for path in ("_events", "_events/"):
        status, _h, body = http("GET", proxy.url + path)
        assert (status, body.get("couchdb_events")) == (200, "Welcome"), (path, body)


def test_everything_else_goes_to_couchdb(
    proxy: Proxy, service: Service, couch: CouchServer
) -> None:
    _status, welcome = http_json("GET", couch.url)
    status, _h, body = http("GET", proxy.url)
    assert status == 200 and body["uuid"] == welcome["uuid"], body
    status, _h, body = http("GET", proxy.couch_url + service.db)
    assert (status, body["db_name"]) == (200, service.db), body
    # A write through the proxy, body and all; the Location names the proxy's address.
    doc_id = f"through_{proxy.name}"
    status, _h, body = http("PUT", f"{proxy.couch_url}{service.db}/{doc_id}", {"via": proxy.name})
    assert status == 201 and body["id"] == doc_id, body
    status, direct = http_json("GET", f"{couch.url}{service.db}/{doc_id}")
    assert (status, direct["via"]) == (200, proxy.name), direct
    # A name under /_events... that is not /_events itself is CouchDB's.
    status, _h, body = http("GET", proxy.couch_url + "_eventsdb")
    assert "couchdb_events" not in body, body


def _write_doc_after(couch_url: str, db: str, doc_id: str, delay: float) -> float:
    time.sleep(delay)
    status, body = http_json("PUT", f"{couch_url}{db}/{doc_id}", {"written": True})
    assert status == 201, body
    return time.monotonic()


def test_longpoll_changes_feed_stays_open_and_returns_on_a_change(
    proxy: Proxy, service: Service, couch: CouchServer
) -> None:
    doc_id = f"longpoll_{proxy.name}_{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {}

    def poll() -> None:
        url = f"{proxy.couch_url}{service.db}/_changes?feed=longpoll&since=now&timeout=30000"
        result["answer"] = http("GET", url, timeout=20)
        result["returned"] = time.monotonic()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), f"the longpoll returned before any change: {result}"
    written = _write_doc_after(couch.url, service.db, doc_id, 0)
    thread.join(timeout=5)
    assert not thread.is_alive(), "the longpoll did not return after the change"
    status, _h, body = result["answer"]
    assert status == 200, body
    assert doc_id in [change["id"] for change in body["results"]], body
    assert result["returned"] - written < 2.0


def test_continuous_changes_feed_streams_through_the_proxy(
    proxy: Proxy, service: Service, couch: CouchServer
) -> None:
    doc_id = f"continuous_{proxy.name}_{uuid.uuid4().hex[:6]}"
    connection = HTTPConnection(LOOPBACK, proxy.port, timeout=10)
    writes: list[float] = []
    writer = threading.Thread(
        target=lambda: writes.append(_write_doc_after(couch.url, service.db, doc_id, 0.5)),
        daemon=True,
    )
    try:
        connection.request(
            "GET",
            f"/{urllib.parse.quote(service.db)}/_changes?feed=continuous&since=now",
            headers=split_credentials(proxy.couch_url)[1],
        )
        # PouchDB Server sends the response head with the first line of the feed.
        writer.start()
        response = connection.getresponse()
        assert response.status == 200
        # The change arrives as one line while the response goes on.
        while True:
            line = response.readline()
            assert line, "the continuous feed ended"
            if line.strip() and json.loads(line).get("id") == doc_id:
                break
        arrived = time.monotonic()
        writer.join(timeout=5)
        assert writes and arrived - writes[0] < 2.0
    finally:
        connection.close()
        writer.join(timeout=5)  # never leave a write behind for the next test


def test_oversized_event_body_is_a_json_413(proxy: Proxy) -> None:
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    status, _h, answer = http(
        "POST", f"{proxy.url}_events/{EVENT}", raw=body,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 413, answer
    assert isinstance(answer, dict) and answer["error"] == "too_large", answer


def test_nginx_answers_json_when_the_service_is_down(nginx_binary: str) -> None:
    nothing = free_port()  # neither couchdb-events nor CouchDB listens there
    with NginxProxy(nginx_binary, events_port=nothing, couchdb_port=nothing) as proxy:
        for path in (f"_events/{EVENT}", "_events"):
            status, headers, body = http("GET", proxy.url + path)
            assert status == 503, (path, body)
            assert body == {"error": "unavailable", "reason": "couchdb-events does not answer"}
            assert _header(headers, "Retry-After") == "5"


def test_shipped_haproxy_config_is_valid() -> None:
    haproxy = find_haproxy()
    if haproxy is None:
        pytest.skip("haproxy is not installed (optional: apt-get install haproxy)")
    done = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace")
