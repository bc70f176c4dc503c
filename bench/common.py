"""What the benchmarks share: setting up PouchDB Server documents, running ``couchdb-events serve``
as a subprocess, CPU time of processes and latency percentiles."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from couchdb_events.couch.embedded import free_port

# A standard-library Python worker answering each message with its id and the process id. It
# serves every mode: in ``once`` mode it gets one line, then end of file.
ECHO_WORKER = """\
import json
import os
import sys

for line in sys.stdin:
    message = json.loads(line)
    answer = {"ok": True, "id": message["id"], "pid": os.getpid()}
    sys.stdout.write(json.dumps(answer, separators=(",", ":")) + "\\n")
    sys.stdout.flush()
"""


# -- CouchDB ----------------------------------------------------------------------------------
def authorized(url: str, data: bytes | None = None, method: str = "GET") -> urllib.request.Request:
    """A request for ``url`` sending the credentials it carries (urllib does not by itself)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        netloc = parts.netloc.rpartition("@")[2]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    request = urllib.request.Request(url, data=data, method=method)
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    return request


def couch_request(method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
    """One JSON request; the parsed answer (raises ``urllib.error.URLError`` on failure)."""
    data = json.dumps(body).encode() if body is not None else None
    request = authorized(url, data, method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def with_credentials(url: str, of: str) -> str:
    """``url`` with the credentials of the URL ``of`` (if it has any)."""
    userinfo = urllib.parse.urlsplit(of).netloc.rpartition("@")
    if not userinfo[1]:
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo[0]}@{parts.netloc}"))


def put_worker(
    couch_url: str,
    workers_db: str,
    name: str,
    mode: str,
    processes: int,
    script: str = ECHO_WORKER,
    **fields: Any,
) -> None:
    """A ``"type": "python"`` worker document running ``script`` (its one attachment)."""
    code = base64.b64encode(script.encode()).decode("ascii")
    worker = {
        "_id": name,
        "type": "python",
        "delegate": "worker.py",
        "mode": mode,
        "processes": processes,
        **fields,
        "_attachments": {"worker.py": {"content_type": "text/x-python", "data": code}},
    }
    couch_request("PUT", f"{couch_url}{workers_db}/{name}", worker)


def put_event(couch_url: str, events_db: str, name: str, path: str, workers: Sequence[str]) -> None:
    """An event ``name`` fired by GET or POST on ``path``, running each of ``workers``."""
    event = {
        "_id": name,
        "trigger": {path: {"method": ["GET", "POST"]}},
        "workers": {worker: {} for worker in workers},
    }
    couch_request("PUT", f"{couch_url}{events_db}/{name}", event)


def get_json(url: str) -> dict[str, Any] | None:
    """The JSON object a GET answers with 200, or None."""
    with (
        contextlib.suppress(OSError, ValueError),
        urllib.request.urlopen(authorized(url), timeout=2) as answer,
    ):
        if answer.status == 200:
            result: dict[str, Any] = json.loads(answer.read())
            return result
    return None


# -- processes --------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process, not of its children; NaN when it is gone."""
    if pid <= 0:
        return math.nan
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return math.nan


def children(pid: int) -> list[int]:
    """The process ids of the direct children of ``pid``."""
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children()]
    return []


class Service:
    """``couchdb-events serve`` as a subprocess; its log and work directory in ``scratch``.

    ``settings`` go into the ``[couchdb_events]`` section of its config file; ``events`` are the
    event ids it must have loaded to count as ready. ``name`` tells several services apart.
    """

    def __init__(
        self,
        couch_url: str,
        scratch: Path,
        interpreter: str,
        events_db: str,
        workers_db: str,
        events: Iterable[str],
        settings: Mapping[str, str] | None = None,
        name: str = "service",
    ) -> None:
        self.name = name
        self.couch_url = couch_url
        self.events = set(events)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/_events/"
        self.log_path = scratch / f"{name}.log"
        # Pin the interpreter of ``"type": "python"`` workers: ``python3`` on PATH may be a
        # version-manager shim that costs more than the interpreter itself to start.
        config = scratch / f"{name}.ini"
        lines = []
        if settings:
            lines += ["[couchdb_events]", *(f"{key} = {value}" for key, value in settings.items())]
        lines += ["[couchdb_events_interpreters]", f"python = {interpreter} -u", ""]
        config.write_text("\n".join(lines))
        self.argv = [
            sys.executable,
            "-m",
            "couchdb_events",
            "serve",
            "--config",
            str(config),
            "--couchdb-url",
            couch_url,
            "--port",
            str(self.port),
            "--events-db",
            events_db,
            "--workers-db",
            workers_db,
            "--work-dir",
            str(scratch / f"{name}-work"),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.ready_after = math.nan  # seconds from spawn to answering with the events loaded

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        spawned = time.monotonic()
        deadline = spawned + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"couchdb-events ({self.name}) exited at start "
                    f"(status {self.proc.returncode}):\n{self.log_tail()}"
                )
            status = self.status()
            if status is not None and self.events <= set(status.get("events", {})):
                self.ready_after = time.monotonic() - spawned
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"couchdb-events ({self.name}) did not answer within {timeout:g} s:\n" + self.log_tail()
        )

    def cpu_seconds(self) -> float:
        """CPU time of the service process itself, not of its workers."""
        return cpu_seconds(self.pid)

    def workers_cpu_seconds(self) -> float:
        """CPU time of the worker processes running now (not of those already gone)."""
        return math.fsum(cpu for cpu in map(cpu_seconds, children(self.pid)) if not math.isnan(cpu))

    def status(self) -> dict[str, Any] | None:
        return get_json(with_credentials(self.base, self.couch_url) + "_status")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_problems(self) -> list[str]:
        """Warning and error lines of the service's log."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return [line for line in text.splitlines() if "[WARNING]" in line or "[ERROR]" in line]
        return []

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not go. The exit status."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        return proc.returncode


# -- figures ----------------------------------------------------------------------------------
def percentile_ms(latencies: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of latencies in seconds, in milliseconds."""
    if not latencies:
        return math.nan
    ordered = sorted(latencies)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


# -- the server under test --------------------------------------------------------------------
def add_couchdb_url(parser: argparse.ArgumentParser) -> None:
    """The ``--couchdb-url`` option every benchmark takes (``Target``'s URL)."""
    parser.add_argument(
        "--couchdb-url",
        default=None,
        metavar="URL",
        help="the CouchDB to run against, with credentials (default: an in-memory PouchDB "
        "Server started for the run); its databases get a prefix of their own and are deleted "
        "at the end",
    )


class Target:
    """The CouchDB the benchmark runs against: one given by URL (``--couchdb-url``), or an
    in-memory PouchDB Server started for the run. Databases get names with a prefix of their
    own (``prefix``), and every database with that prefix is deleted when the run ends, so a
    real server is left as it was found."""

    def __init__(self, couchdb_url: str | None, prefix: str = "bench") -> None:
        self.given = couchdb_url
        self.url = ""
        self.pid = 0  # the server's process on this machine, when it can be found (for CPU)
        self.label = ""
        self.prefix = f"{prefix}_{time.strftime('%H%M%S')}_{os.getpid()}_"
        self._embedded: Any = None

    def __enter__(self) -> Target:
        if self.given is None:
            from couchdb_events.couch.embedded import EmbeddedCouch

            self._embedded = EmbeddedCouch().start()
            self.url = self._embedded.url
            self.pid = listening_pid(self._embedded.port)
        else:
            self.url = self.given if self.given.endswith("/") else self.given + "/"
            parts = urllib.parse.urlsplit(self.url)
            if parts.hostname in ("127.0.0.1", "localhost", "::1"):  # its CPU can be read
                self.pid = listening_pid(parts.port or 5984)
        try:
            welcome = couch_request("GET", self.url)
        except BaseException as exc:
            if self._embedded is not None:
                self._embedded.stop()
            if isinstance(exc, OSError | ValueError):
                parts = urllib.parse.urlsplit(self.url)
                where = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
                reason = getattr(exc, "reason", exc)
                raise RuntimeError(f"no CouchDB answers at {where}: {reason}") from None
            raise
        if "express-pouchdb" in welcome:
            self.label = f"PouchDB Server {welcome.get('version', '?')}"
            if self._embedded is not None:
                self.label += " (in memory)"
        else:
            self.label = f"Apache CouchDB {welcome.get('version', '?')}"
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            for name in couch_request("GET", self.url + "_all_dbs"):
                if isinstance(name, str) and name.startswith(self.prefix):
                    couch_request("DELETE", self.url + urllib.parse.quote(name, safe=""))
        if self._embedded is not None:
            self._embedded.stop()

    def db(self, name: str) -> str:
        return self.prefix + name


def listening_pid(port: int) -> int:
    """The process listening on ``port`` on this machine, 0 when it cannot be told."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return int(conn.pid or 0)
    return 0
