"""A worker's ``sandbox`` field, read into a checked, immutable ``Sandbox``.

``"sandbox": true`` fences the worker in with the defaults; an object chooses::

    {"network": false, "writable": ["data"], "user": "nobody"}

``network``: whether the worker keeps the host's network (default false: no network at all);
``writable``: which of the worker's own folders it may write (``data``, its data directory;
default ``["data"]``; ``[]`` makes it read-only too); ``user``: the account it runs as when
the daemon runs as root (default: the ``worker_user`` setting). Without the field, the
``sandbox`` setting decides. How the fence is built is in ``workers.sandbox``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITABLE = ("data",)  # the folders a worker may ask to write
KEYS = ("network", "writable", "user")


@dataclass(frozen=True)
class Sandbox:
    """How one worker is fenced in, with what the daemon's settings add to it."""

    network: bool = False
    writable: tuple[str, ...] = ("data",)
    user: str | None = None  # the document's choice; None: the worker_user setting
    default_user: str = "nobody"  # the worker_user setting
    bwrap: str = "bwrap"  # the bwrap setting: a command on PATH or a path
    work_dir: Path = Path("/nonexistent")  # hidden but for the worker's own folders
    config_files: tuple[Path, ...] = ()  # the daemon's: hidden, and the folders holding them
    hide: tuple[Path, ...] = ()  # the sandbox_hide setting: files and folders hidden too


def parse_sandbox(value: Any, default: bool) -> Sandbox | None:
    """The document's ``sandbox`` field (``value``, None when absent); raises ``ValueError``
    naming the mistake. ``default``: the ``sandbox`` setting, for a document without one."""
    if value is None:
        return Sandbox() if default else None
    if isinstance(value, bool):
        return Sandbox() if value else None
    if not isinstance(value, Mapping):
        raise ValueError(
            'sandbox must be true, false or an object like {"network": false, '
            f'"writable": ["data"], "user": "nobody"}}, not {value!r}'
        )
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise ValueError(f"sandbox: unknown keys {unknown} (known: {', '.join(KEYS)})")
    network = value.get("network", False)
    if not isinstance(network, bool):
        raise ValueError(f"sandbox.network must be true or false, not {network!r}")
    writable = value.get("writable", list(WRITABLE))
    if not isinstance(writable, list) or not all(isinstance(w, str) for w in writable):
        raise ValueError(f'sandbox.writable must be a list like ["data"], not {writable!r}')
    bad = sorted(set(writable) - set(WRITABLE))
    if bad:
        raise ValueError(
            f"sandbox.writable: {bad} cannot be made writable (only: {', '.join(WRITABLE)}; "
            "/tmp is always a private, writable folder)"  # noqa: S108 - the sandbox's own
        )
    user = value.get("user")
    if user is not None and (not isinstance(user, str) or not user.strip()):
        raise ValueError(f"sandbox.user must be the name of a user account, not {user!r}")
    return Sandbox(network=network, writable=tuple(sorted(set(writable))), user=user)
