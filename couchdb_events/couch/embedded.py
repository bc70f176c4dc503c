"""An embedded CouchDB-compatible server for trying couchdb-events without a CouchDB.

It runs PouchDB Server, pinned in the project's ``package.json`` and installed with ``npm ci``
into ``node_modules/``. It is for the demo and for development, not for production: use Apache
CouchDB there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import EventsError

PROJECT = Path(__file__).resolve().parents[2]


class EmbeddedError(EventsError):
    """The embedded server could not be started."""


def pouchdb_server_script(root: Path = PROJECT) -> Path | None:
    script = root / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
    return script if script.is_file() else None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedCouch:
    """PouchDB Server on a loopback port, data in ``data_dir`` (or in memory), its own session."""

    def __init__(
        self, data_dir: Path | None = None, port: int | None = None, log_path: Path | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedCouch:
        script = pouchdb_server_script()
        node = shutil.which("node")
        if script is None or node is None:
            raise EmbeddedError(
                "PouchDB Server is not installed: run `npm ci` in the project folder "
                "(needs node and npm), or configure a CouchDB with couchdb_url"
            )
        # PouchDB Server writes config.json and log.txt into its working directory.
        if self.data_dir is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="couchdb-events-pouchdb-"))
        workdir = self.data_dir or self._scratch
        assert workdir is not None
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            node,
            str(script),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--no-stdout-logs",
        ]
        argv.append("--dir" if self.data_dir else "--in-memory")
        if self.data_dir:
            argv.append(str(self.data_dir))
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedError(
                    f"PouchDB Server exited at start (status {self._proc.returncode})"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(self.url, timeout=1) as answer,  # noqa: S310
            ):
                if answer.status == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise EmbeddedError(f"PouchDB Server did not answer on {self.url} within {timeout:g} s")

    def stop(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedCouch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
