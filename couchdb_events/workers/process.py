"""One worker process: spawned in its own session, fed JSON lines, its whole group killed.

The process is started with ``start_new_session=True`` so that it and everything it forks share
one process group; stopping closes stdin (a well-behaved worker exits on EOF), then sends SIGTERM
and, after a grace period, SIGKILL to the whole group. Its stdout and stderr are pipes read line by
line (``lines``) and handed to callbacks: they never reach the daemon's own stdout. How it is
started and how its end is told are in ``launch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from .. import logs
from ..model.workers import WorkerSpec
from .fence import fenced_argv
from .launch import StartError, launch_argv
from .lines import MAX_LINE, OVERLONG_JSON, read_line
from .states import ProcessState

log = logs.get("process")

STDERR_TAIL = 20
RUN_TAIL = 20  # lines
RUN_LINE = 1000  # characters kept of each

LineHandler = Callable[["WorkerProcess", bytes], None]


class WorkerProcess:
    """A running worker. Only its pool calls its methods, all on the event loop."""

    def __init__(self, spec: WorkerSpec, on_stdout: LineHandler, on_stderr: LineHandler) -> None:
        self.spec = spec
        self.state = ProcessState.STARTING
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.handled = 0
        self.current: str | None = None
        self.stopping_requested = False
        self.returncode: int | None = None
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self.recycle: str | None = None  # why it should stop after its current message
        self.recycle_after: int | None = None  # messages, with jitter (max_messages)
        self.memory_strikes = 0  # memory samples over the limit in a row
        # What the process wrote while working on its current message (for its activation).
        self.run_stdout: deque[str] = deque(maxlen=RUN_TAIL)
        self.run_stderr: deque[str] = deque(maxlen=RUN_TAIL)
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._proc: asyncio.subprocess.Process | None = None
        self._ps: psutil.Process | None = None
        self._sampled: tuple[float, int | None, float | None] = (-math.inf, None, None)
        self._readers: list[asyncio.Task[None]] = []
        self._answer: asyncio.Future[Any] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self.returncode is None

    async def spawn(self, cwd: Path, env: Mapping[str, str]) -> None:
        argv = self.spec.argv
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            raise StartError(
                f"interpreter {argv[0]!r} for type {self.spec.type!r} was not found on PATH"
            )
        if self.spec.sandbox is not None:
            argv = await fenced_argv(self.spec, cwd, env)  # StartError when it cannot be
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *launch_argv(argv, self.spec.limits),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(cwd),
                env=dict(env),
                start_new_session=True,
                limit=MAX_LINE,
            )
        except FileNotFoundError:
            raise StartError(
                f"interpreter {argv[0]!r} for type {self.spec.type!r} was not found on PATH"
            ) from None
        except OSError as exc:
            raise StartError(f"cannot start {' '.join(argv)}: {exc.strerror or exc}") from None
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.state = ProcessState.IDLE
        with contextlib.suppress(psutil.Error):
            self._ps = psutil.Process(self._proc.pid)
            self._ps.cpu_percent()  # baseline for later samples
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(self._proc.stdout, self._stdout_line)),
            asyncio.create_task(self._read(self._proc.stderr, self._stderr_line)),
        ]
        self._reaper = asyncio.create_task(self._reap())

    # -- one run at a time ------------------------------------------------------------------
    def expect_answer(self) -> asyncio.Future[Any]:
        """The first JSON line on stdout from now on is the answer."""
        self._answer = asyncio.get_running_loop().create_future()
        return self._answer

    def begin(self, current: str | None) -> None:
        """A run starts (``current``: its id, or None for a stream worker)."""
        self.current = current
        if current is not None:
            self.state = ProcessState.BUSY
        self.run_stdout.clear()
        self.run_stderr.clear()

    def end(self) -> None:
        self.current = None
        if self._answer is not None and not self._answer.done():
            self._answer.cancel()
        self._answer = None

    def _stdout_line(self, proc: WorkerProcess, line: bytes) -> None:
        answer = self._answer
        if answer is not None and not answer.done():
            if line is OVERLONG_JSON:  # the answer, too long to read
                reason = f"the answer was longer than {MAX_LINE} bytes and was dropped"
                answer.set_result({"error": "answer_too_long", "reason": reason})
                return
            try:
                answer.set_result(json.loads(line))
                return
            except ValueError:
                pass
        if self.current is not None:
            self.run_stdout.append(line.decode("utf-8", "replace").rstrip()[:RUN_LINE])
        self._on_stdout(proc, line)

    def _stderr_line(self, proc: WorkerProcess, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\n")
        self.stderr_tail.append(text)
        if self.current is not None:
            self.run_stderr.append(text[:RUN_LINE])
        self._on_stderr(proc, line)

    async def _read(self, stream: asyncio.StreamReader, handler: LineHandler) -> None:
        while True:
            try:
                line = await read_line(stream)
            except (OSError, asyncio.CancelledError):
                return
            if not line:
                return
            try:
                handler(self, line)
            except Exception:  # pragma: no cover - a handler bug must not kill the reader
                log.exception("handling a line from %s failed", self)

    async def _reap(self) -> None:
        assert self._proc is not None
        returncode = await self._proc.wait()
        if self.spec.sandbox is not None and 128 < returncode < 128 + 65:
            returncode = 128 - returncode  # bwrap tells a signal as 128 + its number
        # Let the readers drain what the process wrote before it went.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._readers), timeout=1.0)
        self.returncode = returncode
        self.state = ProcessState.EXITED
        self.kill_group(signal.SIGKILL)  # children it left behind in its group
        if not self.exited.done():
            self.exited.set_result(returncode)

    async def send(self, line: bytes) -> bool:
        """Write one line; False (and nothing written) when the pipe is closed or broken."""
        if not self.alive or self._proc is None or self._proc.stdin is None:
            return False
        stdin = self._proc.stdin
        if stdin.is_closing():
            return False
        try:
            stdin.write(line)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return False
        return True

    def close_stdin(self) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()

    def kill_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def kill(self, grace: float) -> int:
        """For a process that hangs: SIGTERM its group, wait ``grace``, SIGKILL; reap."""
        self.stopping_requested = True
        if self.state is not ProcessState.EXITED:
            self.state = ProcessState.STOPPING
        self.kill_group(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout=grace)
        except asyncio.TimeoutError:
            log.info("%s ignored SIGTERM for %.1f s; sending SIGKILL to its group", self, grace)
            self.kill_group(signal.SIGKILL)
        return await self.exited

    async def stop(self, grace: float) -> int:
        """Close stdin, wait ``grace``, SIGTERM the group, wait ``grace``, SIGKILL; reap."""
        self.stopping_requested = True
        if self.state is not ProcessState.EXITED:
            self.state = ProcessState.STOPPING
        self.close_stdin()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                return await asyncio.wait_for(asyncio.shield(self.exited), timeout=grace)
            except asyncio.TimeoutError:
                log.info(
                    "%s did not stop within %.1f s; sending %s to its group", self, grace, sig.name
                )
                self.kill_group(sig)
        return await self.exited

    def sample(self, max_age: float = 0.0) -> tuple[int | None, float | None]:
        """Resident memory (bytes) of the process tree and the leader's CPU percent; a sample
        taken less than ``max_age`` seconds ago is given again (finding the tree's children
        reads every process's entry in /proc)."""
        taken, rss, cpu = self._sampled
        now = time.monotonic()
        if now - taken < max_age:
            return rss, cpu
        rss, cpu = self._sample()
        self._sampled = (now, rss, cpu)
        return rss, cpu

    def _sample(self) -> tuple[int | None, float | None]:
        if self._ps is None or not self.alive:
            return None, None
        try:
            rss = self._ps.memory_info().rss
            for child in self._ps.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    rss += child.memory_info().rss
            return rss, self._ps.cpu_percent()
        except psutil.Error:
            return None, None

    def __str__(self) -> str:
        return f"worker {self.spec.name}[{self.pid}]"
