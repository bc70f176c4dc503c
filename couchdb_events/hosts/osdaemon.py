"""CouchDB's os_daemon channel (CouchDB 1.1 - 2.2).

The daemon writes one JSON array per line on its stdout; CouchDB answers on the daemon's stdin,
and only in reply to ``get``, in request order:

    ["get", "section"]            -> {"key": "value", ...}   (unknown section: {})
    ["get", "section", "key"]     -> "value" or null
    ["register", "section"(, "key")]  no answer; CouchDB restarts the daemon when it changes
    ["log", "message"(, {"level": "debug"|"info"|"error"})]  no answer; message is a string

EOF on stdin means "stop". The channel takes its streams as parameters so it is tested with
in-memory streams; every write is one line, flushed, under a lock (logging may come from threads).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import IO, Any

LEVELS = ("debug", "info", "error")


class ChannelClosed(EOFError):
    """CouchDB closed the daemon's stdin."""


def encode(command: list[Any]) -> bytes:
    """One protocol line: compact JSON, ASCII only, newline-terminated."""
    return json.dumps(command, separators=(",", ":")).encode("ascii") + b"\n"


def log_command(message: str, level: str = "info") -> list[Any]:
    """A ``log`` command; CouchDB knows only debug, info and error."""
    if level not in LEVELS:
        level = "error" if level in ("warning", "critical") else "info"
    return ["log", str(message), {"level": level}]


class DaemonChannel:
    """The daemon's side of the os_daemon protocol over two binary streams."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._lock = threading.Lock()

    def _write(self, command: list[Any]) -> None:
        line = encode(command)
        with self._lock:
            self._stdout.write(line)
            self._stdout.flush()

    def _read_answer(self) -> Any:
        line = self._stdin.readline()
        if not line:
            raise ChannelClosed("CouchDB closed the daemon's stdin")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ChannelClosed(f"CouchDB sent a line that is not JSON: {line[:200]!r}") from exc

    def get(self, section: str, key: str | None = None) -> Any:
        """Ask CouchDB for a config section (a dict of strings) or one value (a string or None)."""
        self._write(["get", section] if key is None else ["get", section, key])
        answer = self._read_answer()
        if key is None and not isinstance(answer, dict):
            raise ChannelClosed(f"CouchDB answered get {section!r} with {answer!r}")
        return answer

    def register(self, section: str, key: str | None = None) -> None:
        """Ask CouchDB to restart the daemon when this section (or key) changes."""
        self._write(["register", section] if key is None else ["register", section, key])

    def log(self, message: str, level: str = "info") -> None:
        """Write a message to CouchDB's log."""
        try:
            self._write(log_command(message, level))
        except (OSError, ValueError):
            pass  # CouchDB has gone; nowhere left to log to

    def wait_for_eof(self) -> None:
        """Block until CouchDB closes stdin; stray lines are ignored."""
        while True:
            try:
                line = self._stdin.readline()
            except (OSError, ValueError):
                return
            if not line:
                return


class ChannelHandler(logging.Handler):
    """Sends log records to CouchDB as ``["log", message, {"level": ...}]``."""

    def __init__(self, channel: DaemonChannel) -> None:
        super().__init__()
        self.channel = channel
        self.setFormatter(logging.Formatter("couchdb-events: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            level = record.levelname.lower()
            self.channel.log(message, level)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
