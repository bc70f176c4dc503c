"""A worker's command line as the OS runs it, and what the OS says when it cannot start or
when it ended.

Where the OS allows, the interpreter is wrapped: ``setpriv --pdeathsig KILL`` (the worker dies
with the daemon) and ``prlimit`` (its resource limits, ``Limits``). ``StartError`` is a process
that could not be spawned; ``describe_exit`` says how one ended.
"""

from __future__ import annotations

import shutil
import signal
import sys

from ..model.workers import Limits

SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
PRLIMIT = shutil.which("prlimit") if sys.platform.startswith("linux") else None


class StartError(Exception):
    """The process could not be spawned (interpreter missing, not executable, ...)."""


def launch_argv(argv: tuple[str, ...], limits: Limits) -> tuple[str, ...]:
    """The command line that starts a worker: the interpreter, wrapped where the OS allows.

    ``setpriv --pdeathsig KILL`` makes the kernel kill the worker if the daemon dies, even by
    SIGKILL; ``prlimit`` applies the worker's resource limits. Both come with util-linux and
    ``exec`` the next program, so the worker keeps its pid and nothing runs in between (no
    ``preexec_fn``, which is unsafe in a threaded process).
    """
    prefix: list[str] = []
    if SETPRIV:
        prefix += [SETPRIV, "--pdeathsig", "KILL", "--"]
    if limits.any():
        if not PRLIMIT:
            raise StartError("resource limits need the prlimit command (util-linux)")
        prefix.append(PRLIMIT)
        if limits.cpu is not None:
            prefix.append(f"--cpu={limits.cpu}")
        if limits.files is not None:
            prefix.append(f"--nofile={limits.files}")
        if limits.address_space is not None:
            prefix.append(f"--as={limits.address_space}")
        prefix.append("--")
    return (*prefix, *argv)


def describe_exit(returncode: int | None) -> str:
    """``exit status 3`` or ``killed by SIGKILL (perhaps out of memory?)``."""
    if returncode is None:
        return "still running"
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (perhaps out of memory?)" if -returncode == signal.SIGKILL else ""
    return f"killed by {name}{hint}"
