"""Fencing a sandboxed worker in, at its start: bwrap found, the account resolved, bwrap seen
to make its namespaces on this machine, the data directory made the account's. Anything
missing is a ``StartError`` naming it (the worker is marked failed with it): a worker that
asked for a sandbox never runs without one. The command line itself is ``sandbox.bwrap_argv``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..model.sandbox import Sandbox
from ..model.workers import WorkerSpec
from .launch import SETPRIV, StartError
from .sandbox import Account, bwrap_argv, keep_paths

PROBE_TIMEOUT = 10.0
_working: set[tuple[str, bool]] = set()  # (bwrap, as root) seen making its namespaces


async def fenced_argv(spec: WorkerSpec, cwd: Path, env: Mapping[str, str]) -> tuple[str, ...]:
    """``spec``'s command line inside its sandbox, or ``StartError`` saying why it cannot be."""
    box = spec.sandbox
    assert box is not None
    name = spec.name
    bwrap = shutil.which(box.bwrap)
    if bwrap is None:
        raise StartError(
            f"worker {name!r} asks for a sandbox, but bwrap ({box.bwrap!r}) was not found: "
            "install bubblewrap (Debian: apt-get install bubblewrap) or set bwrap = PATH; "
            "the worker is not run unfenced"
        )
    account = account_for(name, box)
    if account is not None and SETPRIV is None:
        raise StartError(
            f"worker {name!r}: switching to user {account.name!r} in its sandbox needs the "
            "setpriv command (util-linux)"
        )
    data_dir = Path(env["COUCHDB_EVENTS_DATA_DIR"])
    if account is not None and "data" in box.writable:
        stat = data_dir.stat()
        if (stat.st_uid, stat.st_gid) != (account.uid, account.gid):
            os.chown(data_dir, account.uid, account.gid)
    await _probe(name, bwrap, account is not None)
    if account is None:  # it runs as the daemon's user: whose home (CouchDB's, say) is hidden
        box = replace(box, hide=(*box.hide, *own_home()))
    found = shutil.which(spec.argv[0], path=env.get("PATH"))
    interpreter = Path(found).absolute() if found else None
    search = [env.get("PYTHONPATH", ""), env.get("NODE_PATH", "")]
    modules = cwd / "node_modules"  # its environment's packages (``environments``)
    if modules.is_symlink():
        search.append(str(modules.resolve()))
    keep = keep_paths(interpreter, search)
    argv = bwrap_argv(bwrap, box, cwd, data_dir, keep, account, SETPRIV or "setpriv")
    return (*argv, *spec.argv)


def account_for(name: str, box: Sandbox) -> Account | None:
    """The account a sandboxed worker runs as: when the daemon is root, the document's user or
    ``worker_user``; otherwise None (it runs as the daemon's user, which a document naming
    another user cannot have)."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        if box.user is not None and box.user != me:
            raise StartError(
                f"worker {name!r}: sandbox user {box.user!r} needs the daemon to run as root "
                f"(it runs as {me!r})"
            )
        return None
    user = box.user or box.default_user
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        where = "sandbox.user in its document" if box.user else "the worker_user setting"
        raise StartError(
            f"worker {name!r}: sandbox user {user!r} does not exist on this machine ({where})"
        ) from None
    if entry.pw_uid == 0:
        raise StartError(f"worker {name!r}: sandbox user {user!r} is root, not unprivileged")
    return Account(user, entry.pw_uid, entry.pw_gid)


def own_home() -> tuple[Path, ...]:
    """The daemon's user's home folder, unless it is a top-level one (like /root)."""
    try:
        home = Path(pwd.getpwuid(os.geteuid()).pw_dir)
    except KeyError:
        return ()
    return (home,) if len(home.parts) > 2 and home.is_dir() else ()


async def _probe(name: str, bwrap: str, as_root: bool) -> None:
    """bwrap makes the namespaces a worker gets (once per bwrap, remembered when it did)."""
    if (bwrap, as_root) in _working:
        return
    true = shutil.which("true") or "/bin/true"
    argv = [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--unshare-net", "--unshare-pid"]
    argv += ["--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108 - bwrap 0.5+: said here
    argv += ["--unshare-ipc", "--unshare-uts", "--die-with-parent", "--cap-drop", "ALL", true]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise StartError(f"worker {name!r}: cannot run {bwrap}: {exc.strerror or exc}") from None
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise StartError(
            f"worker {name!r}: {bwrap} did not answer within {PROBE_TIMEOUT} s"
        ) from None
    if proc.returncode != 0:
        said = err.decode("utf-8", "replace").strip().splitlines()
        raise StartError(
            f"worker {name!r}: the sandbox cannot be made on this machine: {bwrap} says "
            f"{said[-1] if said else 'nothing'!r} (exit status {proc.returncode}); "
            "the worker is not run unfenced"
        )
    _working.add((bwrap, as_root))
