"""End to end: ``couchdb-events external`` started exactly as CouchDB starts an external.

CouchDB starts the process on the first request (a plain child with pipes, the command line of
its ``[external]`` entry), writes one request object per line on its stdin and waits for one
answer line, killing the process after ``os_process_timeout`` (5 s by default). Here every
answer must come within 5 s, every stdout line must be a response object, and closing stdin
must end the process and every process of its tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.couch.embedded import free_port
from tests.daemon_host import kill_host, note_tree, survivors
from tests.docs import put_doc, put_worker

pytestmark = pytest.mark.e2e

COUCHDB_TIMEOUT = 5.0  # [couchdb] os_process_timeout, by default

REPLY_PY = """
import json, sys, time
for line in sys.stdin:
    message = json.loads(line)
    time.sleep(message["arguments"].get("sleep", 0))
    request = message["request"]
    print(json.dumps({"user": request["user"], "path": request["path"], "method":
                      request["method"], "body": request["body"],
                      "arguments": message["arguments"]}), flush=True)
"""


class ExternalHost:
    """Plays CouchDB's side of the external protocol."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.lines: list[str] = []
        self.invalid: list[str] = []
        self.stderr: list[str] = []
        self.sent = 0
        self.seen_pids: set[int] = set()
        base = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "external", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**base, **(env or {})},
            start_new_session=True,  # so the test can clean up whatever happens
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            try:
                answer = json.loads(line)
            except ValueError:
                self.invalid.append(line)
                continue
            if not _is_response(answer):
                self.invalid.append(line)
                continue
            self.answers.put(answer)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def send(self, line: bytes) -> dict[str, Any]:
        """Write one line and wait for its answer as CouchDB does: at most 5 s."""
        assert self.proc.stdin is not None
        started = time.monotonic()
        self.proc.stdin.write(line if line.endswith(b"\n") else line + b"\n")
        self.proc.stdin.flush()
        self.sent += 1
        try:
            answer = self.answers.get(timeout=COUCHDB_TIMEOUT)
        except queue.Empty:
            raise AssertionError(
                f"no answer within {COUCHDB_TIMEOUT} s (CouchDB would kill the process and "
                "answer 500); stderr:\n" + self.log_text()
            ) from None
        took = time.monotonic() - started
        assert took < COUCHDB_TIMEOUT, f"answered after {took:.1f} s"
        return answer

    def request(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.send(json.dumps(obj).encode())

    def log_text(self) -> str:
        return "\n".join(self.stderr)

    def note_tree(self) -> None:
        note_tree(self.proc.pid, self.seen_pids)

    def survivors(self) -> list[int]:
        return survivors(self.seen_pids)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def kill(self) -> None:
        """Last-resort clean-up: the process's session, then every process it ever had."""
        kill_host(self.proc, self.survivors(), self._threads)


def _is_response(value: Any) -> bool:
    """A response object CouchDB accepts (this host always answers with ``json``)."""
    return (
        isinstance(value, dict)
        and set(value) == {"code", "headers", "json"}
        and type(value["code"]) is int
        and isinstance(value["headers"], dict)
        and all(isinstance(v, str) for v in value["headers"].values())
    )


def request_obj(
    db: str,
    *below: str,
    method: str = "GET",
    query: dict[str, Any] | None = None,
    body: str = "undefined",
    headers: dict[str, str] | None = None,
    user: str | None = None,
    roles: list[str] | None = None,
) -> dict[str, Any]:
    """A request object as CouchDB 1.2 - 2.2 send it (an admin party unless ``user``)."""
    path = [db, "_events", *below]
    query = query or {}
    raw_query = "&".join(f"{k}={v}" for k, v in query.items())
    return {
        "info": {"db_name": db, "doc_count": 0},
        "id": None,
        "uuid": "3f1c0f5bb5bd4f5a9ad8f4d1e2c3b4a5",
        "method": method,
        "requested_path": path,
        "path": path,
        "raw_path": "/" + "/".join(path) + (f"?{raw_query}" if raw_query else ""),
        "query": query,
        "headers": {"Host": "127.0.0.1:5986", "Accept": "*/*", **(headers or {})},
        "body": body,
        "peer": "127.0.0.1",
        "form": {},
        "cookie": {},
        "userCtx": {
            "db": db,
            "name": user,
            "roles": roles if roles is not None else ([] if user else ["_admin"]),
        },
        "secObj": {},
    }


Start = Callable[..., ExternalHost]


@pytest.fixture
def start_external(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> Iterator[Start]:
    hosts: list[ExternalHost] = []

    def start(via_env: bool = False, **settings: str) -> ExternalHost:
        section = {
            "couchdb_url": couch_url,
            "events_db": settings.pop("events_db", None) or fresh_db("events"),
            "workers_db": settings.pop("workers_db", None) or fresh_db("workers"),
            "port": str(free_port()),
            "work_dir": str(tmp_path / f"work{len(hosts)}"),
            "startup_wait": "5",
            "log_level": "debug",
            **settings,
        }
        ini = tmp_path / f"events{len(hosts)}.ini"
        ini.write_text("[couchdb_events]\n" + "".join(f"{k} = {v}\n" for k, v in section.items()))
        if via_env:
            host = ExternalHost([], env={"COUCHDB_EVENTS_CONFIG": str(ini)})
        else:
            host = ExternalHost(["--config", str(ini)])
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.note_tree()
        host.close_stdin()
        try:
            host.proc.wait(10)
        finally:
            host.kill()
        assert not host.invalid, f"non-protocol lines on stdout: {host.invalid}"


def stop_and_check(host: ExternalHost, limit: float = 5.0) -> None:
    """Close stdin as CouchDB does: the process exits in time and leaves nothing behind."""
    host.note_tree()
    started = time.monotonic()
    host.close_stdin()
    code = host.proc.wait(limit + 2)
    took = time.monotonic() - started
    assert took < limit, f"took {took:.1f} s to exit"
    assert code == 0, host.log_text()
    deadline = time.monotonic() + 1
    while host.survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.survivors() == [], "processes of the external's tree survived it"
    for thread in host._threads:
        thread.join(timeout=5)
    assert host.invalid == []
    assert len(host.lines) == host.sent, "one answer line per request line, nothing else"


def test_external_answers_couchdbs_requests_one_by_one(
    start_external: Start, couch_url: str, fresh_db: Callable[[str], str]
) -> None:
    events, workers = fresh_db("events"), fresh_db("workers")
    put_worker(couch_url, workers, "echo", {"w.py": REPLY_PY}, type="python", delegate="w.py",
               mode="reply")  # fmt: skip
    put_doc(couch_url, events, {"_id": "ping", "workers": {"echo": {"n": ":n"}}})
    put_doc(couch_url, events, {"_id": "nap", "workers": {"echo": {"sleep": 30}}})
    host = start_external(events_db=events, workers_db=workers)

    # The first request arrives while the process is starting, as with CouchDB (lazy start).
    answer = host.request(request_obj("mydb", "ping", method="POST", query={"n": "1"}))
    assert answer["code"] == 202, host.log_text()
    assert answer["headers"]["Content-Type"] == "application/json"
    assert answer["json"]["ok"] is True and answer["json"]["events"] == ["ping"]
    assert [run["worker"] for run in answer["json"]["runs"]] == ["echo"]

    # CouchDB 0.10: "verb", and none of the later fields.
    old = {
        "info": {"db_name": "mydb"},
        "verb": "GET",
        "path": ["mydb", "_events", "ping"],
        "query": {"n": "2"},
        "headers": {"Host": "127.0.0.1:5984"},
        "body": "undefined",
        "form": {},
        "cookie": {},
    }
    answer = host.request(old)
    assert answer["code"] == 202 and answer["json"]["events"] == ["ping"]

    answer = host.request(request_obj("mydb", "_status"))
    assert answer["code"] == 200, answer
    assert answer["json"]["couchdb_events"]["host"] == "external"
    assert answer["json"]["couchdb_events"]["pid"] == host.proc.pid
    assert set(answer["json"]["events"]) == {"ping", "nap"}

    # A line that is not JSON: a 400 answer, and the process carries on.
    answer = host.send(b"{this is not json")
    assert answer["code"] == 400 and answer["json"]["error"] == "bad_request"
    assert host.proc.poll() is None
    answer = host.request({"path": ["mydb", "_events", "ping"]})  # no method
    assert answer["code"] == 400 and "method" in answer["json"]["reason"]

    # ?wait= for a reply worker: its answer, and the caller CouchDB authenticated.
    answer = host.request(
        request_obj(
            "mydb", "ping",
            method="POST",
            query={"wait": "10", "n": "3"},
            body='{"to": "ann@example.com"}',
            headers={"Content-Type": "application/json", "Content-Length": "25"},
            user="ann",
            roles=["mailers"],
        )
    )  # fmt: skip
    assert answer["code"] == 200, answer
    [run] = answer["json"]["runs"]
    assert run["state"] == "succeeded"
    assert run["answer"] == {
        "user": {"name": "ann", "roles": ["mailers"]},
        "path": "/ping",
        "method": "POST",
        "body": {"to": "ann@example.com"},
        "arguments": {"n": "3"},
    }

    # ?wait= longer than CouchDB would wait: cut short, answered in time, 202.
    started = time.monotonic()
    answer = host.request(request_obj("mydb", "nap", query={"wait": "60"}))
    assert answer["code"] == 202 and answer["json"]["events"] == ["nap"]
    assert time.monotonic() - started < COUCHDB_TIMEOUT

    answer = host.request(request_obj("mydb", "nothing_here"))
    assert answer["code"] == 404 and answer["json"]["error"] == "not_found"

    # Workers are running (one of them asleep in a message): EOF ends them all.
    assert host.proc.poll() is None
    stop_and_check(host)
    assert "not a request from CouchDB" in host.log_text()


def test_config_file_from_the_environment(start_external: Start) -> None:
    # No --config: CouchDB's environment names the file.
    host = start_external(via_env=True)
    answer = host.request(request_obj("mydb", "_status"))
    assert answer["code"] == 200, host.log_text()
    info = answer["json"]["couchdb_events"]
    assert info["events_db"].startswith("t_events_")  # from the file, not the default
    assert info["workers_db"].startswith("t_workers_")
    stop_and_check(host)


def test_start_up_failure_exits_1_and_answers_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[couchdb_events]\nport = eighty\n")
    done = subprocess.run(
        [sys.executable, "-m", "couchdb_events", "external", "--config", str(bad)],
        input=b"", capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"port = 'eighty'" in done.stderr and b"Traceback" not in done.stderr

    # CouchDB is not there: start-up gives up after startup_wait, with nothing on stdout,
    # even though a request is waiting (CouchDB answers its caller 500 when the process dies).
    gone = tmp_path / "gone.ini"
    gone.write_text(
        "[couchdb_events]\n"
        f"couchdb_url = http://127.0.0.1:{free_port()}/\n"
        "startup_wait = 1\n"
        f"work_dir = {tmp_path / 'work'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    line = json.dumps(request_obj("mydb", "ping")).encode() + b"\n"
    proc = subprocess.Popen(
        [sys.executable, "-m", "couchdb_events", "external", "--config", str(gone)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()
        out, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert proc.returncode == 1
    assert out == b""
    assert b"unreachable" in err and b"cannot start" in err
