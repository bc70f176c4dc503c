"""The processes, queue and counters of one worker. Only the supervisor's loop touches a pool.

Each process has a feeder task that pulls the next message when the process can take one, the
way supervisor's EventListenerPool does: an idle process waits on the pool; a message that
arrives is handed to the first waiting process or queued; a process whose pipe is broken gives
its message back to the head of the queue (``intake``). Feeding by mode:

* ``stream`` (the seed's style): messages are written one line after another; a written message
  counts as delivered, and that is its outcome.
* ``reply``: one message at a time; the first JSON line on stdout is the answer, and the process
  is idle again. With ``processes`` > 1 messages go to idle processes.
* ``once``: one message per process, then stdin is closed; exit status 0 means success.

Processes are started on demand (up to ``processes``), stopped after ``idle_timeout`` without
work, replaced when they die, with a growing delay after young deaths and ``failed`` after too
many (``states.CrashPolicy``). A new revision retires the old processes (no further message).
Status: ``status``; cancelling a run: ``cancel``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from .. import logs
from ..errors import HTTPError
from ..model.message import Message, Outcome
from ..model.workers import Mode, WorkerSpec
from .cancel import CANCELLED_RUNNING, cancel_run
from .deploy import Deployer
from .exchange import INTERRUPTED, exchange, with_stderr
from .intake import Intake
from .launch import describe_exit
from .process import WorkerProcess
from .recycling import note_handled, sample_memory
from .starting import new_process, start_process
from .states import CrashPolicy, PoolState
from .status import Counters, pool_status, process_status

log = logs.get("pool")

FETCH_RETRY = 2.0  # seconds between attempts to fetch a worker's code while CouchDB is away


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
        self.queue = Intake()  # its messages and its idle processes
        self.processes: list[WorkerProcess] = []
        self._deployer = deployer
        self._env = dict(env)
        self._stop_timeout = stop_timeout
        self._crash = CrashPolicy()
        self._starting = 0
        self._retry: asyncio.TimerHandle | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- taking messages ------------------------------------------------------------------
    def check(self, force: bool = False) -> None:
        """Raise the error a new message would get now; ``force``: accepted already (a retry)."""
        if self.spec.error:
            raise HTTPError(500, "worker_invalid", self.spec.error)
        if self.state is PoolState.FAILED:
            raise HTTPError(503, "worker_failed", self._failure())
        if self._closing:
            raise HTTPError(
                503, "shutting_down", "couchdb-events is stopping", {"Retry-After": "5"}
            )
        if not force:
            self.queue.check_room(self.name, self.spec.max_queue)

    def submit(self, message: Message, force: bool = False) -> None:
        self.check(force)
        self.counters.fired += 1
        if not self.queue.put(message, self.spec.rev):
            self._maybe_start()

    def cancel(self, message_id: str) -> str | None:
        """Cancel a run: ``queued``, ``running`` (killed) or None (see ``cancel.cancel_run``)."""
        return cancel_run(self.queue, self.processes, message_id)

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
        demand = len(self.queue) - self.queue.idle(self.spec.rev) - self._starting
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
        proc = new_process(self.spec)
        self.processes.append(proc)
        self._starting += 1
        task = asyncio.create_task(self._launch(proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self, proc: WorkerProcess) -> None:
        failure = await start_process(proc, self._deployer, self._env)
        self._starting -= 1
        if failure is not None:
            self.processes.remove(proc)
            if not failure.retry:
                self._fail(failure.error)
                return
            # CouchDB is away: not the worker's fault. Keep the queue and try again shortly.
            self.last_error = failure.error
            log.warning("%s", failure.error)
            self.state = PoolState.BACKOFF
            self._crash.retry_at = time.monotonic() + FETCH_RETRY
            self._maybe_start()
            return
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
            note_handled(proc)
            if proc.recycle:
                log.info("recycling %s: %s", proc, proc.recycle)
                self.counters.recycled += 1
                return

    async def _next(self, proc: WorkerProcess) -> Message | None:
        """The next message for ``proc``, or None when it should stop (idle, retired, dead)."""
        if proc.spec.rev != self.spec.rev or self._closing or not proc.alive or proc.recycle:
            return None
        timeout = proc.spec.idle_timeout if proc.spec.mode is not Mode.ONCE else None
        woken, message = await self.queue.take(proc, timeout)
        if message is not None and proc.spec.rev != self.spec.rev:  # handed over, then retired
            if not self.queue.put(message, self.spec.rev):  # to the new revision's processes
                self._maybe_start()
            return None
        if not woken and proc.alive:
            log.info("%s idle for %.0f s; stopping it", proc, proc.spec.idle_timeout)
        return message

    async def _deliver(self, proc: WorkerProcess, message: Message) -> bool:
        """Run one message; whether the process may take another."""
        outcome = await exchange(proc, message, self._stop_timeout, lambda: self._closing)
        if outcome is None:
            self.queue.put_back(message)  # nothing was written: it goes to the next process
            return False
        self.counters.delivered += 1
        if message.cancelled:
            outcome = Outcome("cancelled", None, CANCELLED_RUNNING, outcome.stdout, outcome.stderr)
        keep = proc.alive and outcome.state != "timeout" and proc.spec.mode is not Mode.ONCE
        if keep and proc.spec.mode is Mode.REPLY:
            self._crash.healthy()  # it answered
        self._finish(message, outcome)
        return keep

    def _finish(self, message: Message, outcome: Outcome, note: bool = True) -> None:
        """Count and hand over an outcome; ``note``: its error becomes ``last_error``."""
        self.counters.count(outcome)
        if outcome.state == "timeout" or (note and outcome.state == "failed"):
            self.last_error = outcome.error or outcome.state
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
            self.last_error = error
            log.warning("%s", error)
        if verdict is PoolState.FAILED:
            self._fail(f"{self.last_error} (died young {self._crash.young_deaths} times in a row)")
        elif verdict is PoolState.BACKOFF:
            self.state = PoolState.BACKOFF
        self._maybe_start()

    def sample(self) -> None:
        """Check each process's memory; recycle one over ``memory_limit`` several times in a row."""
        sample_memory(self.processes, self.queue.release)

    # -- errors ---------------------------------------------------------------------------
    def _failure(self) -> str:
        """Why a failed worker refuses work: ``last_error`` (the cause), said once."""
        return f"worker {self.name!r} failed: {self.last_error}"

    def _fail(self, error: str) -> None:
        """Mark the worker failed and fail what waits for it: nothing piles up."""
        self.state = PoolState.FAILED
        self.last_error = error
        reason = self._failure()
        log.error("%s", reason)
        # The runs get the whole reason; ``last_error`` keeps the cause, not the reason again.
        self._fail_queue(reason, note=False)

    def _fail_queue(self, error: str, note: bool = True) -> None:
        for message in self.queue.drain():
            self._finish(message, Outcome("failed", None, error), note)

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
        self.queue.release_other_revisions(spec.rev)
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
        error = "couchdb-events stopped before this message was delivered"
        for message in self.queue.drain():
            self._finish(message, Outcome(INTERRUPTED, None, error))
        self.queue.release_all()
        await asyncio.gather(
            *(p.stop(self._stop_timeout) for p in list(self.processes) if p.alive),
            return_exceptions=True,
        )
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._stop_timeout * 2 + 1)

    # -- status ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        processes = [process_status(proc) for proc in self.processes]
        state = self.state
        if state is PoolState.BACKOFF and self._crash.may_start(time.monotonic()):
            # The delay is over. Only a start waiting for it clears the state, and with nothing
            # queued none was waiting: the worker is not backing off any more.
            state = PoolState.OK
        queued = len(self.queue)
        return pool_status(self.spec, state, self.counters, processes, queued, self.last_error)
