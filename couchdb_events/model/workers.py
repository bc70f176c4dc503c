"""Worker documents, read into checked, immutable specs (``WorkerSpec``): the code to run, how
it takes its messages (``Mode``), its processes, queue, timeouts and limits.

A document that cannot be used still becomes a spec, with ``error`` set: the registry keeps it so
that firing an event that names it answers with that error and ``/_events/_status`` shows it.

Worker document::

    {"_id": "send_email", "delegate": "sendmail.js", "type": "node", "arguments": {},
     "mode": "stream" | "reply" | "once", "processes": 1, "max_queue": 1000, "idle_timeout": 60,
     "sandbox": true,
     "_attachments": {"sendmail.js": {...}}}
"""

from __future__ import annotations

import enum
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import Config
from .fields import (
    count_field,
    flag_field,
    int_field,
    optional_field,
    seconds_field,
    size_field,
)
from .sandbox import Sandbox, parse_sandbox


class Mode(str, enum.Enum):
    """How a worker process takes its messages."""

    STREAM = "stream"  # the seed's style: reads lines forever, never answers; written = done
    REPLY = "reply"  # answers each message with one JSON line; one message at a time
    ONCE = "once"  # reads one message and exits; exit status 0 means success


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to a worker process (``setrlimit``), None for no limit."""

    cpu: int | None = None  # CPU seconds
    files: int | None = None  # open file descriptors
    address_space: int | None = None  # bytes of virtual memory

    def any(self) -> bool:
        return any(v is not None for v in (self.cpu, self.files, self.address_space))


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    rev: str
    delegate: str = ""
    type: str = ""
    argv: tuple[str, ...] = ()
    arguments: Mapping[str, Any] = field(default_factory=dict)
    attachments: tuple[str, ...] = ()
    mode: Mode = Mode.STREAM
    processes: int = 1
    max_queue: int = 1000
    idle_timeout: float = 60.0
    error: str | None = None
    timeout: float | None = None  # seconds per message (reply and once workers)
    memory_limit: int | None = None  # bytes of RSS of the process tree; recycled above it
    max_messages: int | None = None  # recycled after about this many messages
    limits: Limits = field(default_factory=Limits)
    env: Mapping[str, str] = field(default_factory=dict)
    retries: int = 0  # further attempts after a failed or timed-out run
    retry_delay: float = 1.0  # seconds before the first retry, doubling after each
    store_output: bool = True  # keep answers and output tails in activation records
    sandbox: Sandbox | None = None  # fenced in with bubblewrap (``workers.sandbox``)


def unsafe_attachment_name(name: str) -> str | None:
    """Why an attachment name would escape its worker's directory, or None if it is safe."""
    checks = (
        (not name, "is empty"),
        ("\x00" in name, "contains a NUL byte"),
        ("\\" in name, "contains a backslash"),
        (name.startswith("/"), "is an absolute path"),
        (
            any(part in ("", ".", "..") for part in name.split("/")),
            "has an empty, '.' or '..' path segment",
        ),
        (posixpath.normpath(name) != name, "is not a normal relative path"),
    )
    return next((why for failed, why in checks if failed), None)


def parse_worker(doc: Mapping[str, Any], config: Config) -> WorkerSpec:
    """Read a worker document. Never raises: a bad document gives a spec with ``error``."""
    name = str(doc.get("_id", ""))
    rev = str(doc.get("_rev", ""))
    try:
        return _parse_worker(name, rev, doc, config)
    except ValueError as exc:
        return WorkerSpec(name, rev, error=f"worker {name!r}: {exc}")


def _parse_worker(name: str, rev: str, doc: Mapping[str, Any], config: Config) -> WorkerSpec:
    attachments = doc.get("_attachments") or {}
    if not isinstance(attachments, dict):
        raise ValueError("_attachments must be an object")
    for att_name in attachments:
        why = unsafe_attachment_name(att_name)
        if why:
            raise ValueError(
                f"attachment name {att_name!r} {why}; it would escape the worker's directory"
            )
    delegate = doc.get("delegate")
    if not delegate:
        raise ValueError('no "delegate": name the attachment to run, like "delegate": "main.js"')
    if not isinstance(delegate, str) or delegate not in attachments:
        known = ", ".join(sorted(attachments)) or "none"
        raise ValueError(f"delegate {delegate!r} is not one of its attachments (it has: {known})")
    kind = doc.get("type")
    if not kind or not isinstance(kind, str):
        raise ValueError('no "type": say which interpreter runs the delegate, like "type": "node"')
    argv = config.interpreters.get(kind)
    if argv is None:
        known = ", ".join(sorted(config.interpreters))
        raise ValueError(f"unknown type {kind!r} (known types: {known})")
    arguments = doc.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise ValueError("arguments must be an object")
    try:
        mode = Mode(doc.get("mode", Mode.STREAM.value))
    except ValueError:
        raise ValueError(
            f"mode must be one of stream, reply, once, not {doc.get('mode')!r}"
        ) from None
    return WorkerSpec(
        name=name,
        rev=rev,
        delegate=delegate,
        type=kind,
        argv=(*argv, delegate),
        arguments=arguments,
        attachments=tuple(sorted(attachments)),
        mode=mode,
        processes=int_field(doc, "processes", config.processes),
        max_queue=int_field(doc, "max_queue", config.max_queue),
        idle_timeout=seconds_field(doc, "idle_timeout", config.idle_timeout),
        timeout=optional_field(doc, "timeout", seconds_field),
        memory_limit=optional_field(doc, "memory_limit", size_field),
        max_messages=optional_field(doc, "max_messages", int_field),
        limits=_limits(doc.get("limits")),
        env=_env(doc.get("env")),
        retries=count_field(doc, "retries"),
        retry_delay=seconds_field(doc, "retry_delay", 1.0),
        store_output=flag_field(doc, "store_output", True),
        sandbox=_sandbox(doc.get("sandbox"), config),
    )


def _sandbox(value: Any, config: Config) -> Sandbox | None:
    box = parse_sandbox(value, config.sandbox)
    if box is None:
        return None
    return replace(
        box,
        default_user=config.worker_user,
        bwrap=config.bwrap,
        work_dir=config.work_dir,
        config_files=config.config_files,
        hide=config.sandbox_hide,
    )


def _limits(value: Any) -> Limits:
    if value is None:
        return Limits()
    if not isinstance(value, dict):
        raise ValueError('limits must be an object like {"cpu": 60, "files": 256}')
    unknown = set(value) - {"cpu", "files", "address_space"}
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)} (known: cpu, files, address_space)")
    return Limits(
        cpu=optional_field(value, "cpu", int_field),
        files=optional_field(value, "files", int_field),
        address_space=optional_field(value, "address_space", size_field),
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError('env must be an object of names to strings, like {"SMTP_HOST": "mx"}')
    for name, text in value.items():
        if not _ENV_NAME.match(name) or not isinstance(text, str):
            raise ValueError(f"env {name!r}: names are letters, digits, _; values are strings")
        if name.startswith("COUCHDB_EVENTS_"):
            raise ValueError(f"env {name!r}: COUCHDB_EVENTS_* names are set by couchdb-events")
    return dict(value)
