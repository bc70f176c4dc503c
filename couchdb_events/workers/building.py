"""Running the tools that build a worker's environment (``python -m venv``, ``pip``, ``npm``).

A tool runs in a session of its own (its own process group), with the worker's clean base
environment plus a cache directory, its stdout and stderr together kept to the last
``TAIL_LINES`` lines. One that runs past the build timeout is killed with its whole process
group. ``BuildError`` says which tool failed, how, and what it printed last. And the disk side:
a fresh directory for a build, and the size of a built one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..model.workers import Limits
from .launch import describe_exit, launch_argv

TAIL_LINES = 20


class BuildError(Exception):
    """A tool that builds an environment failed: its exit status or timeout, its last lines."""


def build_environment(base: Mapping[str, str], cache_dir: Path, kind: str) -> dict[str, str]:
    """The environment of a build tool: the workers' base (never the daemon's own, which may
    hold CouchDB's credentials) and the tool's cache."""
    env = dict(base)
    if kind == "python":
        env["PIP_CACHE_DIR"] = str(cache_dir / "pip")
        env["PIP_NO_INPUT"] = "1"
        env.pop("PYTHONPATH", None)  # the workers' helpers are no business of pip's
    else:
        env["npm_config_cache"] = str(cache_dir / "npm")
        env["npm_config_update_notifier"] = "false"
        env["npm_config_fund"] = "false"
        env["npm_config_audit"] = "false"
        env.pop("NODE_PATH", None)
    return env


async def run_tool(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    name: str,
    deadline: float | None = None,
) -> list[str]:
    """Run one build step; ``BuildError`` when it fails or runs past ``deadline`` (a
    ``loop.time()``; by default ``timeout`` seconds from now). ``timeout`` is the whole build's,
    as the error says it; ``name`` is how the error names the step (``pip install``). Its last
    lines of output."""
    loop = asyncio.get_running_loop()
    if deadline is None:
        deadline = loop.time() + timeout
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch_argv(tuple(argv), Limits()),  # dies with the daemon, as a worker does
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(cwd),
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise BuildError(f"{name}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    async def read() -> None:
        assert proc.stdout is not None
        while True:
            line = await proc.stdout.readline()
            if not line:
                break
            tail.append(line.decode("utf-8", "replace").rstrip())
        await proc.wait()

    try:
        await asyncio.wait_for(read(), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        how = f"killed after build_timeout {timeout:g} s"
        raise BuildError(_message(name, how, tail)) from None
    except BaseException:  # cancelled (the daemon stops): no build outlives it
        _kill_group(proc.pid)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(proc.wait())  # reaped, its pipes closed
        raise
    finally:
        _kill_group(proc.pid)  # whatever the tool left running in its group
    if proc.returncode != 0:
        raise BuildError(_message(name, describe_exit(proc.returncode), tail))
    return list(tail)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _message(name: str, how: str, tail: Sequence[str]) -> str:
    lines = "\n".join(tail) or "(no output)"
    return f"{name} failed ({how}); its last lines:\n{lines}"


def fresh_directory(path: Path, files: Mapping[str, bytes]) -> None:
    """An empty ``path`` (a half-built one removed) holding ``files``."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)


def directory_size(path: Path) -> int:
    """The bytes of the files under ``path`` (links not followed)."""
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
