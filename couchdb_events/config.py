"""Configuration: built once, in one place, into one typed object that is passed down.

Precedence (lowest first): built-in defaults < the ``[couchdb_events]`` section (from CouchDB in
daemon mode, from an ini file in ``serve`` mode) < command-line flags. Interpreters for worker
``type`` values come from the ``[couchdb_events_interpreters]`` section over built-in defaults.

Every converter names the key and the bad value in its error, so a start-up failure can say
exactly which setting to fix.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

# CouchDB gives an external no configuration channel: its config file is named on its command
# line, or else by this environment variable.
CONFIG_ENV = "COUCHDB_EVENTS_CONFIG"

SECTION = "couchdb_events"
INTERPRETERS_SECTION = "couchdb_events_interpreters"

DEFAULT_INTERPRETERS: dict[str, tuple[str, ...]] = {
    "node": ("node",),
    "nodejs": ("node",),
    "javascript": ("node",),
    "python": ("python3", "-u"),
    "python3": ("python3", "-u"),
    "sh": ("sh",),
    "bash": ("bash",),
    "ruby": ("ruby",),
    "perl": ("perl",),
}

T = TypeVar("T")

# Who may read /_events/_status: admins only, any authenticated user, or anyone.
STATUS_ACCESS = ("admin", "user", "public")
# Who may read /_events/_metrics: as status (``status``), or one of STATUS_ACCESS.
METRICS_ACCESS = ("status", *STATUS_ACCESS)


def default_work_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "couchdb-events"


def _positive_int(key: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: not a whole number") from None
    if number < 1:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: must be at least 1")
    return number


def _port(key: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: not a port number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: a port is between 0 and 65535")
    return number


def _seconds(key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: not a number of seconds") from None
    if not (math.isfinite(number) and number > 0):
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: must be a positive number of seconds")
    return number


def _db_name(key: str, value: str) -> str:
    name = value.strip()
    # CouchDB's rule for database names.
    if not re.fullmatch(r"[a-z][a-z0-9_$()+/-]*", name):
        raise ConfigError(
            f"[{SECTION}] {key} = {value!r}: not a CouchDB database name "
            "(lower-case letter first, then a-z 0-9 _$()+-/)"
        )
    return name


def _url(key: str, value: str) -> str:
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"[{SECTION}] {key} = {redact_url(url)!r}: not an http(s) URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"[{SECTION}] {key} = {redact_url(url)!r}: bad port") from None
    return url if url.endswith("/") else url + "/"


def _log_level(key: str, value: str) -> str:
    level = value.strip().lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: one of debug, info, warning, error")
    return level


def _boolean(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ConfigError(f"[{SECTION}] {key} = {value!r}: true or false")


def _status_access(key: str, value: str) -> str:
    word = value.strip().lower()
    allowed = METRICS_ACCESS if key == "metrics_access" else STATUS_ACCESS
    if word not in allowed:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: one of {', '.join(allowed)}")
    return word


def _arguments(key: str, value: str) -> tuple[str, ...]:
    """Extra arguments of a tool, split like a shell does; empty for none."""
    try:
        return tuple(shlex.split(value))
    except ValueError as exc:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: {exc}") from None


def _text(key: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(f"[{SECTION}] {key} is empty")
    return value.strip()


def _paths(key: str, value: str) -> tuple[Path, ...]:
    if _text(key, value).lower() == "none":
        return ()
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: {exc}") from None
    paths = tuple(Path(word).expanduser() for word in words)
    relative = [str(path) for path in paths if not path.is_absolute()]
    if relative:
        raise ConfigError(f"[{SECTION}] {key} = {value!r}: not absolute paths: {relative}")
    return paths


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``*****``, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    # The host part exactly as written: ``parts.port`` would raise on a bad port.
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:*****@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class Config:
    """Every setting of a running couchdb-events, typed and checked."""

    couchdb_url: str = "http://127.0.0.1:5984/"
    bind_address: str = "127.0.0.1"
    port: int = 5985
    events_db: str = "events"
    workers_db: str = "workers"
    work_dir: Path = field(default_factory=default_work_dir)
    couchdb_timeout: float = 10.0
    startup_wait: float = 15.0
    log_level: str = "info"
    stop_timeout: float = 1.5
    processes: int = 1
    idle_timeout: float = 60.0
    max_queue: int = 1000
    max_body: int = 1024 * 1024
    max_queued: int = 10_000
    max_chain_depth: int = 8
    durable: bool = True
    activations_db: str = ""  # empty: <events_db>_activations
    state_db: str = ""  # empty: <events_db>_state
    activations_retention_days: int = 30
    require_valid_user: bool = False
    status_access: str = "admin"
    metrics_access: str = "status"  # status: whatever status_access says
    session_cache_ttl: float = 10.0
    session_cache_size: int = 1000
    sandbox: bool = False  # fence workers in by default (a document's "sandbox" decides)
    worker_user: str = "nobody"  # who sandboxed workers run as when the daemon runs as root
    bwrap: str = "bwrap"
    sandbox_hide: tuple[Path, ...] = ()  # hidden from sandboxed workers besides work_dir
    config_files: tuple[Path, ...] = ()  # where the settings came from (not a setting)
    build_timeout: float = 300.0  # seconds a worker's environment build may take
    pip_args: tuple[str, ...] = ()  # added to pip install (an index, a mirror)
    npm_args: tuple[str, ...] = ()  # added to npm ci / npm install (a registry)
    build_cache_dir: Path | None = None  # None: <work_dir>/cache (set after init)
    interpreters: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: dict(DEFAULT_INTERPRETERS)
    )

    def __post_init__(self) -> None:
        if not self.activations_db:
            object.__setattr__(self, "activations_db", f"{self.events_db}_activations")
        if not self.state_db:
            object.__setattr__(self, "state_db", f"{self.events_db}_state")
        if self.build_cache_dir is None:
            object.__setattr__(self, "build_cache_dir", self.work_dir / "cache")

    @property
    def display_url(self) -> str:
        return redact_url(self.couchdb_url)

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any],
        interpreters: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Config:
        """Build from the string values of an ini section, then apply ``overrides``.

        Unknown keys are an error (a typo should not be silently ignored).
        """
        merged: dict[str, Any] = {}
        for source in (settings, overrides or {}):
            for key, value in source.items():
                if value is None:
                    continue
                if key not in _CONVERTERS:
                    known = ", ".join(sorted(_CONVERTERS))
                    raise ConfigError(f"[{SECTION}] {key}: unknown setting (known: {known})")
                merged[key] = _CONVERTERS[key](key, str(value))
        table = dict(DEFAULT_INTERPRETERS)
        for name, command in (interpreters or {}).items():
            if not isinstance(command, str):
                raise ConfigError(f"[{INTERPRETERS_SECTION}] {name}: must be a command line")
            try:
                argv = tuple(shlex.split(command))
            except ValueError as exc:
                raise ConfigError(f"[{INTERPRETERS_SECTION}] {name} = {command!r}: {exc}") from None
            if not argv:
                raise ConfigError(f"[{INTERPRETERS_SECTION}] {name} is empty")
            table[name] = argv
        return cls(interpreters=table, **merged)


_CONVERTERS: dict[str, Callable[[str, str], Any]] = {
    "couchdb_url": _url,
    "bind_address": _text,
    "port": _port,
    "events_db": _db_name,
    "workers_db": _db_name,
    "work_dir": lambda key, value: Path(_text(key, value)).expanduser(),
    "couchdb_timeout": _seconds,
    "startup_wait": _seconds,
    "log_level": _log_level,
    "stop_timeout": _seconds,
    "processes": _positive_int,
    "idle_timeout": _seconds,
    "max_queue": _positive_int,
    "max_body": _positive_int,
    "max_queued": _positive_int,
    "max_chain_depth": _positive_int,
    "durable": _boolean,
    "activations_db": _db_name,
    "state_db": _db_name,
    "activations_retention_days": _positive_int,
    "require_valid_user": _boolean,
    "status_access": _status_access,
    "metrics_access": _status_access,
    "session_cache_ttl": _seconds,
    "session_cache_size": _positive_int,
    "sandbox": _boolean,
    "worker_user": _text,
    "bwrap": _text,
    "sandbox_hide": _paths,
    "build_timeout": _seconds,
    "pip_args": _arguments,
    "npm_args": _arguments,
    "build_cache_dir": lambda key, value: Path(_text(key, value)).expanduser(),
}

SETTINGS = tuple(_CONVERTERS)
