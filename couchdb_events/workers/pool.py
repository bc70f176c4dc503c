"""The processes, queue and counters of one worker. Only the supervisor's loop touches a pool.

Each process has a feeder task that pulls the next message when the process can take one, the
way supervisor's EventListenerPool does: an idle process waits on the pool; a message that
arrives is handed to the first waiting process or queued; a process whose pipe is broken gives
its message back to the head of the queue. Feeding by mode:

* ``stream`` (the seed's style): messages are written one line after another; a written message
  counts as delivered, and that is its outcome.
* ``reply``: one message at a time; the first JSON line on stdout is the answer, and the process
  is idle again. With ``processes`` > 1 messages go to idle processes.
* ``once``: one message per process, then stdin is closed; exit status 0 means success.

Processes are started on demand (up to ``processes``), stopped after ``idle_timeout`` without
work, and replaced when they die, with a growing delay after young deaths and ``failed`` after
too many (``states.CrashPolicy``). A new document revision retires the old processes: they get
no further message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import logs
from ..errors import DocumentError, HTTPError, StoreError
from ..model.message import Message, Outcome
from ..model.workers import Mode, WorkerSpec
from .deploy import Deployer
from .exchange import INTERRUPTED, exchange, with_stderr
from .launch import StartError, describe_exit
from .process import WorkerProcess
from .states import CrashPolicy, PoolState

log = logs.get("pool")


MEMORY_STRIKES = 3  # samples over memory_limit in a row before a process is recycled
FETCH_RETRY = 2.0  # seconds between attempts to fetch a worker's code while CouchDB is away


@dataclass
class Counters:
    fired: int = 0
    delivered: int = 0
    succeeded: int = 0
    failed: int = 0
    restarts: int = 0
    timeouts: int = 0
    recycled: int = 0


class Pool:
    """One worker's processes and queue."""

    def __init__(
        self, spec: WorkerSpec, deployer: Deployer, env: Mapping[str, str], stop_timeout: float
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.state = PoolState.OK
        self.counters = Counters()
        self.last_error: str | None = spec.error
        self.queue: deque[Message] = deque()
        self.processes: list[WorkerProcess] = []
        self._deployer = deployer
        self._env = dict(env)
        self._stop_timeout = stop_timeout
        self._crash = CrashPolicy()
        self._waiters: deque[tuple[WorkerProcess, asyncio.Future[Message | None]]] = deque()
        self._starting = 0
        self._retry: asyncio.TimerHandle | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- taking messages ------------------------------------------------------------------
    def check(self, force: bool = False) -> None:
        """Raise the error a new message would get now, if any. ``force``: an already accepted
        message (a retry, a resumed run) is not refused for a full queue."""
        if self.spec.error:
            raise HTTPError(500, "worker_invalid", self.spec.error)
        if self.state is PoolState.FAILED:
            raise HTTPError(503, "worker_failed", self._failure())
        if self._closing:
            raise HTTPError(
                503, "shutting_down", "couchdb-events is stopping", {"Retry-After": "5"}
            )
        if len(self.queue) >= self.spec.max_queue and not force:
            raise HTTPError(
                503,
                "queue_full",
                f"worker {self.name!r} has {len(self.queue)} messages waiting (max_queue)",
                {"Retry-After": "1"},
            )

    def submit(self, message: Message, force: bool = False) -> None:
        self.check(force)
        self.counters.fired += 1
        while self._waiters:
            proc, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if proc.spec.rev == self.spec.rev:
                waiter.set_result(message)
                return
            waiter.set_result(None)  # an old revision's process: retire it
        self.queue.append(message)
        self._maybe_start()

    # -- processes ------------------------------------------------------------------------
    def _live(self) -> list[WorkerProcess]:
        return [
            p for p in self.processes if p.spec.rev == self.spec.rev and not p.stopping_requested
        ]

    def _maybe_start(self) -> None:
        if self._closing or self.spec.error or self.state is PoolState.FAILED or not self.queue:
            return
        now = time.monotonic()
        if not self._crash.may_start(now):
            if self._retry is None:
                delay = self._crash.retry_at - now
                self._retry = asyncio.get_running_loop().call_later(delay, self._retry_start)
            return
        idle = sum(
            1 for proc, w in self._waiters if not w.done() and proc.spec.rev == self.spec.rev
        )
        demand = len(self.queue) - idle - self._starting
        live = len(self._live())
        while demand > 0 and live < self.spec.processes:
            self._start()
            demand -= 1
            live += 1

    def _retry_start(self) -> None:
        self._retry = None
        if self.state is PoolState.BACKOFF:
            self.state = PoolState.OK
        self._maybe_start()

    def _start(self) -> None:
        proc = WorkerProcess(self.spec, self._stdout_line, self._stderr_line)
        if self.spec.max_messages is not None:
            # Jitter, so that processes started together are not all recycled together.
            jitter = random.randint(0, self.spec.max_messages // 10)  # noqa: S311 - not crypto
            proc.recycle_after = self.spec.max_messages + jitter
        self.processes.append(proc)
        self._starting += 1
        task = asyncio.create_task(self._launch(proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self, proc: WorkerProcess) -> None:
        try:
            cwd = await self._deployer.ensure(proc.spec)
            data_dir = self._deployer.data_directory(proc.spec.name)
            env = {
                **self._env,
                **proc.spec.env,
                "COUCHDB_EVENTS_WORKER": proc.spec.name,
                "COUCHDB_EVENTS_DATA_DIR": str(data_dir),
            }
            await proc.spawn(cwd, env)
        except (StartError, DocumentError) as exc:
            self._starting -= 1
            self.processes.remove(proc)
            self._fail(str(exc))
            return
        except StoreError as exc:
            # CouchDB is away: not the worker's fault. Keep the queue and try again shortly.
            self._starting -= 1
            self.processes.remove(proc)
            error = f"cannot fetch the code of worker {self.name!r}, retrying: {exc}"
            self._note_error(error)
            log.warning("%s", error)
            self.state = PoolState.BACKOFF
            self._crash.retry_at = time.monotonic() + FETCH_RETRY
            self._maybe_start()
            return
        except Exception as exc:  # pragma: no cover - unexpected, but never kill the loop
            self._starting -= 1
            self.processes.remove(proc)
            log.exception("starting %s failed", proc)
            self._fail(f"cannot start worker {self.name!r}: {exc}")
            return
        self._starting -= 1
        log.info("started %s (%s, rev %s)", proc, " ".join(proc.spec.argv), proc.spec.rev)
        try:
            await self._feed(proc)
        finally:
            await self._retire(proc)

    async def _feed(self, proc: WorkerProcess) -> None:
        while True:
            message = await self._next(proc)
            if message is None:
                if proc.recycle:  # woken while idle, over memory_limit
                    log.info("recycling %s: %s", proc, proc.recycle)
                    self.counters.recycled += 1
                return
            if not await self._deliver(proc, message):
                return
            if proc.spec.mode is Mode.ONCE:
                return
            if proc.recycle_after is not None and proc.handled >= proc.recycle_after:
                proc.recycle = proc.recycle or f"handled {proc.handled} messages (max_messages)"
            if proc.recycle:
                log.info("recycling %s: %s", proc, proc.recycle)
                self.counters.recycled += 1
                return

    async def _next(self, proc: WorkerProcess) -> Message | None:
        """The next message for ``proc``, or None when it should stop (idle, retired, dead)."""
        if proc.spec.rev != self.spec.rev or self._closing or not proc.alive or proc.recycle:
            return None
        if self.queue:
            return self.queue.popleft()
        waiter: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((proc, waiter))
        timeout = proc.spec.idle_timeout if proc.spec.mode is not Mode.ONCE else None
        pending: set[asyncio.Future[Any]] = {waiter, proc.exited}
        await asyncio.wait(pending, timeout=timeout, return_when="FIRST_COMPLETED")
        if waiter.done():
            return waiter.result()
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove((proc, waiter))
        if proc.alive:
            log.info("%s idle for %.0f s; stopping it", proc, proc.spec.idle_timeout)
        return None

    async def _deliver(self, proc: WorkerProcess, message: Message) -> bool:
        """Run one message; whether the process may take another."""
        outcome = await exchange(proc, message, self._stop_timeout, lambda: self._closing)
        if outcome is None:
            self.queue.appendleft(message)  # nothing was written: it goes to the next process
            return False
        self.counters.delivered += 1
        keep = proc.alive and outcome.state != "timeout" and proc.spec.mode is not Mode.ONCE
        if keep and proc.spec.mode is Mode.REPLY:
            self._crash.healthy()  # it answered
        self._finish(message, outcome)
        return keep

    def _finish(self, message: Message, outcome: Outcome, note: bool = True) -> None:
        """Count and hand over an outcome; ``note``: its error becomes ``last_error``."""
        if outcome.state == "failed":
            self.counters.failed += 1
            if note:
                self._note_error(outcome.error or "failed")
        elif outcome.state == "timeout":
            self.counters.timeouts += 1
            self._note_error(outcome.error or "timeout")
        elif outcome.state == "succeeded":
            self.counters.succeeded += 1
        message.finish(outcome)

    async def _retire(self, proc: WorkerProcess) -> None:
        if proc.alive:
            await proc.stop(self._stop_timeout)
        returncode = await proc.exited
        with contextlib.suppress(ValueError):
            self.processes.remove(proc)
        expected = proc.stopping_requested or proc.spec.mode is Mode.ONCE
        if proc.spec.rev != self.spec.rev:
            self._prune()
            return
        verdict = self._crash.exited(time.monotonic(), proc.started_monotonic, expected)
        if not expected:
            self.counters.restarts += 1
            error = with_stderr(f"{proc} ended with {describe_exit(returncode)}", proc)
            self._note_error(error)
            log.warning("%s", error)
        if verdict is PoolState.FAILED:
            self._fail(f"{self.last_error} (died young {self._crash.young_deaths} times in a row)")
        elif verdict is PoolState.BACKOFF:
            self.state = PoolState.BACKOFF
        self._maybe_start()

    def _stdout_line(self, proc: WorkerProcess, line: bytes) -> None:
        log.info("%s: %s", proc, line.decode("utf-8", "replace").rstrip())

    def _stderr_line(self, proc: WorkerProcess, line: bytes) -> None:
        log.info("%s stderr: %s", proc, line.decode("utf-8", "replace").rstrip())

    def sample(self) -> None:
        """Check each process's memory; recycle one over ``memory_limit`` several times in a row."""
        for proc in self.processes:
            if proc.spec.memory_limit is None or not proc.alive or proc.recycle:
                continue
            limit = proc.spec.memory_limit
            rss, _cpu = proc.sample()
            proc.memory_strikes = proc.memory_strikes + 1 if rss and rss > limit else 0
            if proc.memory_strikes >= MEMORY_STRIKES:
                proc.recycle = (
                    f"RSS {rss} bytes over memory_limit {limit} ({MEMORY_STRIKES} samples)"
                )
                log.warning("%s: %s; recycling it after its current message", proc, proc.recycle)
                self._wake(proc)

    def _wake(self, proc: WorkerProcess) -> None:
        """Tell an idle process waiting for work to stop now."""
        for waiting, waiter in self._waiters:
            if waiting is proc and not waiter.done():
                waiter.set_result(None)

    # -- errors ---------------------------------------------------------------------------
    def _note_error(self, error: str) -> None:
        self.last_error = error

    def _failure(self) -> str:
        """Why a failed worker refuses work: ``last_error`` (the cause), said once."""
        return f"worker {self.name!r} failed: {self.last_error}"

    def _fail(self, error: str) -> None:
        """Mark the worker failed and fail what waits for it: nothing piles up."""
        self.state = PoolState.FAILED
        self._note_error(error)
        reason = self._failure()
        log.error("%s", reason)
        # The runs get the whole reason; ``last_error`` keeps the cause, not the reason again.
        self._fail_queue(reason, note=False)

    def _fail_queue(self, error: str, note: bool = True) -> None:
        while self.queue:
            self._finish(self.queue.popleft(), Outcome("failed", None, error), note)

    # -- changes from outside -------------------------------------------------------------
    def update(self, spec: WorkerSpec) -> None:
        """A new revision of the document: new messages go to new processes only."""
        if spec.rev == self.spec.rev:
            return
        self.spec = spec
        self.state = PoolState.OK
        self._crash = CrashPolicy()
        self.last_error = spec.error
        if spec.error:
            self._fail_queue(spec.error)
        for proc, waiter in list(self._waiters):
            if proc.spec.rev != spec.rev and not waiter.done():
                waiter.set_result(None)
        self._maybe_start()

    def remove(self) -> None:
        """The worker document was deleted."""
        self._fail_queue(f"worker {self.name!r} was deleted")
        self.update(WorkerSpec(self.name, rev="deleted", error=f"worker {self.name!r} was deleted"))

    def _prune(self) -> None:
        keep = {p.spec.rev for p in self.processes} | {self.spec.rev}
        self._deployer.prune(self.name, keep)

    @property
    def idle(self) -> bool:
        return not self.processes and not self.queue

    async def close(self) -> None:
        """Stop taking messages, fail what is queued, stop every process."""
        self._closing = True
        if self._retry is not None:
            self._retry.cancel()
        while self.queue:
            error = "couchdb-events stopped before this message was delivered"
            self._finish(self.queue.popleft(), Outcome(INTERRUPTED, None, error))
        for _proc, waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)
        await asyncio.gather(
            *(p.stop(self._stop_timeout) for p in list(self.processes) if p.alive),
            return_exceptions=True,
        )
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._stop_timeout * 2 + 1)

    # -- status ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        processes = []
        for proc in self.processes:
            rss, cpu = proc.sample()
            processes.append(
                {
                    "pid": proc.pid,
                    "state": proc.state.value,
                    "rev": proc.spec.rev,
                    "rss": rss,
                    "cpu": cpu,
                    "started": _iso(proc.started),
                    "handled": proc.handled,
                    "current": proc.current,
                    "recycle": proc.recycle,
                }
            )
        counters = self.counters
        state = self.state
        if state is PoolState.BACKOFF and self._crash.may_start(time.monotonic()):
            # The delay is over. Only a start waiting for it clears the state, and with nothing
            # queued none was waiting: the worker is not backing off any more.
            state = PoolState.OK
        return {
            "rev": self.spec.rev,
            "state": "invalid" if self.spec.error else state.value,
            "mode": self.spec.mode.value,
            "processes": processes,
            "queued": len(self.queue),
            "fired": counters.fired,
            "delivered": counters.delivered,
            "succeeded": counters.succeeded,
            "failed": counters.failed,
            "restarts": counters.restarts,
            "timeouts": counters.timeouts,
            "recycled": counters.recycled,
            "last_error": self.last_error,
        }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
