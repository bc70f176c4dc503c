"""PouchDB Server for the tests: a CouchDB-compatible server, in memory, on a free loopback port.

The server is the npm package ``pouchdb-server``, pinned in ``package.json`` and installed into
``node_modules/`` by ``npm ci`` (``./run-tests`` does that). It runs with ``--in-memory`` in a
temporary working directory of its own, so it writes nothing into the repository (it keeps a
``config.json`` and a ``log.txt`` in its working directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = Path("node_modules", "pouchdb-server", "bin", "pouchdb-server")
LOOPBACK = "127.0.0.1"

# The type of the `fresh_db` fixture: fresh_db(prefix="db") -> database name.
FreshDb = Callable[..., str]


def find_pouchdb_server(root: Path = REPO_ROOT) -> Path | None:
    """The pouchdb-server script under ``root/node_modules`` (the repository root), or None."""
    script = root / SERVER_SCRIPT
    return script if script.is_file() else None


def find_node() -> str | None:
    """The ``node`` executable on PATH, or None."""
    return shutil.which("node")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(method: str, url: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request with an optional JSON body: (status, decoded JSON body or None).

    Error statuses (4xx, 5xx) are returned, not raised; connection errors are raised.
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            raw: bytes = response.read()
    except urllib.error.HTTPError as error:
        with error:
            status = error.code
            raw = error.read()
    return status, json.loads(raw) if raw.strip() else None


class PouchServerError(RuntimeError):
    """PouchDB Server did not start, or stopped on its own."""


class PouchServer:
    """A PouchDB Server process, in memory, on a free loopback port.

    ``PouchServer().start()`` returns once ``GET /`` answers; ``stop()`` ends the server's
    whole process group and removes its working directory. Also a context manager.
    """

    def __init__(
        self,
        *,
        node: str | None = None,
        script: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        found_node = node or find_node()
        found_script = script or find_pouchdb_server()
        if found_node is None:
            raise PouchServerError("node is not on PATH")
        if found_script is None:
            raise PouchServerError(f"{SERVER_SCRIPT} is missing: run `npm ci` first")
        self.node = found_node
        self.script = found_script
        self.startup_timeout = startup_timeout
        self.host = LOOPBACK
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise PouchServerError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, with a trailing slash: ``http://127.0.0.1:PORT/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, attempts: int = 3) -> PouchServer:
        """Start the server and wait until it answers; retry on another port if one was taken."""
        if self._process is not None:
            raise PouchServerError("the server is already running")
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except PouchServerError:
                self.stop()
                if attempt == attempts:
                    raise
            else:
                return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="pouchdb-server-"))
        self._port = free_port(self.host)
        # A uuid of our own in its config tells our server from anything else on the port.
        server_uuid = uuid.uuid4().hex
        config = self._workdir / "config.json"
        config.write_text(
            json.dumps(
                {
                    "couchdb": {"uuid": server_uuid},
                    "log": {"file": str(self._workdir / "log.txt")},
                }
            )
        )
        output = self._workdir / "output.txt"
        with output.open("wb") as out:
            self._process = subprocess.Popen(
                [
                    self.node,
                    str(self.script),
                    "--in-memory",
                    "--host",
                    self.host,
                    "--port",
                    str(self._port),
                    "--config",
                    str(config),
                    "--no-stdout-logs",
                    "--no-color",
                ],
                cwd=self._workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise PouchServerError(
                    f"pouchdb-server exited with {self._process.returncode}: "
                    + output.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(OSError, ValueError):
                status, welcome = http_json("GET", self.url, timeout=2.0)
                if status == 200 and isinstance(welcome, dict):
                    if welcome.get("uuid") == server_uuid:
                        return
                    raise PouchServerError(f"another server answers on port {self._port}")
            if time.monotonic() > deadline:
                raise PouchServerError(
                    f"pouchdb-server did not answer within {self.startup_timeout} s: "
                    + output.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """End the server's process group (TERM, then KILL), reap it, remove its directory."""
        process, self._process = self._process, None
        if process is not None:
            _end_process_group(process, timeout)
        self._port = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> PouchServer:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<PouchServer {where}>"


def _end_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """TERM the group led by ``process``, KILL what is left of it, then reap the leader.

    The leader is reaped last: until then its group id cannot be reused, so the KILL can only
    reach processes of this group.
    """
    if process.returncode is not None:
        return  # already reaped: its group id is no longer ours to signal
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # WNOWAIT: see whether the leader has exited without reaping it.
        try:
            exited = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: nothing left that is surely ours
            return
        if exited is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
