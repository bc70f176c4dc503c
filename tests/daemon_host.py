"""Plays CouchDB's side of the os_daemon protocol for end-to-end tests.

It starts ``couchdb-events daemon`` exactly as CouchDB does: a plain child with pipes, no
arguments beyond the command, answering its ``get`` lines from a dict of ini sections, recording
its ``register`` and ``log`` lines, and stopping it by closing its stdin. Every stdout line must be
a protocol line; anything else is recorded in ``invalid`` (CouchDB would log it as an error).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import psutil

from tests.couch import split_credentials


class DaemonHost:
    def __init__(self, sections: Mapping[str, Mapping[str, str]]) -> None:
        self.sections = {name: dict(values) for name, values in sections.items()}
        self.logs: list[tuple[str, str]] = []
        self.registered: list[list[str]] = []
        self.gets: list[list[str]] = []
        self.invalid: list[str] = []
        self.stderr: list[str] = []
        self.seen_pids: set[int] = set()
        self._lock = threading.Lock()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "daemon"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # so the test can clean up whatever happens
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- CouchDB's side -------------------------------------------------------------------
    def _answer(self, command: list[Any]) -> Any:
        section = self.sections.get(command[1], {})
        if len(command) == 2:
            return section
        return section.get(command[2])

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                command = json.loads(line)
            except ValueError:
                self.invalid.append(line)
                continue
            if not isinstance(command, list) or not command:
                self.invalid.append(line)
                continue
            kind = command[0]
            if kind == "get" and len(command) in (2, 3):
                self.gets.append(command)
                assert self.proc.stdin is not None
                with contextlib.suppress(OSError, ValueError):
                    self.proc.stdin.write(json.dumps(self._answer(command)).encode() + b"\n")
                    self.proc.stdin.flush()
            elif kind == "register" and len(command) in (2, 3):
                self.registered.append(command)
            elif kind == "log" and len(command) in (2, 3) and isinstance(command[1], str):
                level = command[2].get("level", "info") if len(command) == 3 else "info"
                with self._lock:
                    self.logs.append((level, command[1]))
            else:
                self.invalid.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip("\n"))

    # -- helpers for tests ----------------------------------------------------------------
    def log_text(self, level: str | None = None) -> str:
        with self._lock:
            return "\n".join(m for lv, m in self.logs if level is None or lv == level)

    def wait_for_log(self, needle: str, timeout: float = 10.0, level: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text(level)
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"no log line with {needle!r}; logs:\n{self.log_text()}")

    def note_tree(self) -> None:
        """Remember every process of the daemon's tree seen so far."""
        note_tree(self.proc.pid, self.seen_pids)

    def survivors(self) -> list[int]:
        return survivors(self.seen_pids)

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Last-resort clean-up: the daemon's session, then every process it ever had."""
        kill_host(self.proc, self.survivors(), self._threads)


def kill_host(
    proc: subprocess.Popen[bytes], leftovers: list[int], threads: list[threading.Thread]
) -> None:
    """Kill a host process's session and the sessions of ``leftovers`` (processes it had),
    wait for it, join its reader threads and close its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for thread in threads:
        thread.join(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def note_tree(pid: int, seen: set[int]) -> None:
    """Add ``pid`` and all its descendants alive now to ``seen``."""
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        seen.add(parent.pid)
        for child in parent.children(recursive=True):
            seen.add(child.pid)


def survivors(seen: set[int]) -> list[int]:
    """The pids of ``seen`` that still run (zombies do not count)."""
    alive = []
    for pid in seen:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
    return alive


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 15.0,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; (status, headers, decoded JSON body or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    url, authorization = split_credentials(url)  # urllib does not take them from the URL
    all_headers.update(authorization)
    all_headers.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, answer_headers, payload = answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        status, answer_headers, payload = exc.code, dict(exc.headers), exc.read()
    text = payload.decode("utf-8", "replace")
    try:
        return status, answer_headers, json.loads(text)
    except ValueError:
        return status, answer_headers, text


def wait_until_serving(
    host: DaemonHost, url: str, timeout: float = 20.0, headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The daemon's first status answer; ``headers`` may hold the Authorization it needs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.proc.poll() is not None:
            raise AssertionError(
                f"daemon exited with {host.proc.returncode}; logs:\n{host.log_text()}\n"
                + "\n".join(host.stderr)
            )
        with contextlib.suppress(OSError):
            status, _h, body = http("GET", url + "_status", headers=headers, timeout=2)
            if status == 200:
                assert isinstance(body, dict)
                return body
        time.sleep(0.05)
    raise AssertionError(f"daemon did not serve {url} in {timeout} s; logs:\n{host.log_text()}")
