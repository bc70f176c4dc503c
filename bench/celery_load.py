"""The load generator of the Celery side of ``versus_celery.py``: ``--clients`` threads of one
Celery app submitting ``--tasks`` no-op tasks, one at a time each.

It runs with the Celery virtualenv's Python, started by ``celery_side.run_celery``, and imports
nothing but the standard library, Celery and the tasks module beside it (``celery_tasks``). It
talks to its parent in JSON lines:

1. it waits until the worker answers a ping task, warms up (``--warm-up`` tasks from the client
   threads, each waited for: the pool's processes run, every thread has its connections), and
   prints ``{"ready": true, ...}``;
2. on a line ``go`` on its standard input it fires: each thread calls ``apply_async`` (which
   returns once Redis has the message: the equivalent of couchdb-events' 202) and then the next,
   until ``--tasks`` have been submitted; the latency of one submission is the time
   ``apply_async`` takes. Then it polls the result keys of the submitted tasks in Redis (an
   ``MGET`` of the oldest 256 not seen finished, every 20 ms) until every task has a result,
   and prints ``{"result": {...}}``;
3. it waits for the end of its standard input, so that its parent can read its CPU time, and
   exits.

Any failure before the run is printed as ``{"error": "..."}`` (exit status 1).
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import celery_tasks  # type: ignore[import-not-found]

POLL = 0.02  # seconds between polls of the result keys
WINDOW = 256  # result keys per MGET
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def error_kind(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:160]


# -- the client threads -----------------------------------------------------------------------
@dataclass
class Part:
    """What one client thread did in the run."""

    latencies: list[float] = field(default_factory=list)  # seconds, of the submissions
    # (returned at, argument, task id) of each submission
    submitted: list[tuple[float, int, str]] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    finished: float = 0.0  # perf_counter when its last submission returned


class ClientThread(threading.Thread):
    """A client thread: runs the jobs it is given, one after the other. The thread lives as long
    as the load generator, so that its thread-local result backend and its connections made in
    the warm-up are the ones of the run."""

    def __init__(self, index: int) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.inbox: queue.Queue[Callable[[], Any] | None] = queue.Queue()
        self.outbox: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()

    def run(self) -> None:
        while (job := self.inbox.get()) is not None:
            try:
                self.outbox.put((job(), None))
            except BaseException as exc:  # handed to the main thread
                self.outbox.put((None, exc))


def in_threads(threads: list[ClientThread], job: Callable[[], Any]) -> list[Any]:
    """``job`` run once in each thread; their answers (the first exception is raised)."""
    for thread in threads:
        thread.inbox.put(job)
    answers = [thread.outbox.get() for thread in threads]
    for _answer, exc in answers:
        if exc is not None:
            raise exc
    return [answer for answer, _exc in answers]


class Firing:
    """The run, shared by the client threads: the arguments not submitted yet and the start."""

    def __init__(self, tasks: int) -> None:
        self.remaining: Iterator[int] = iter(range(tasks))
        self.lock = threading.Lock()
        self.go = threading.Event()

    def next_argument(self) -> int | None:
        with self.lock:
            return next(self.remaining, None)

    def client(self) -> Part:
        """One client: submits a task, waits for ``apply_async`` to return, then the next."""
        part = Part()
        self.go.wait()
        while (argument := self.next_argument()) is not None:
            sent = time.perf_counter()
            try:
                result = celery_tasks.echo.apply_async((argument,))
            except Exception as exc:  # counted, as couchdb-events' non-202 answers are
                part.errors[error_kind(exc)] += 1
                continue
            returned = time.perf_counter()
            part.latencies.append(returned - sent)
            # Only the id is kept, as a web handler that answers with it would.
            part.submitted.append((returned, argument, str(result.id)))
        part.finished = time.perf_counter()
        return part


def warm_up(requests: int, timeout: float) -> int:
    """``requests`` tasks, each waited for; how many did not answer with their argument."""
    wrong = 0
    for argument in range(requests):
        if celery_tasks.echo.apply_async((argument,)).get(timeout=timeout) != argument:
            wrong += 1
    return wrong


# -- completion -------------------------------------------------------------------------------
def wait_for_results(
    submitted: list[tuple[int, str]], started: float, timeout: float
) -> tuple[float, int, int, collections.Counter[str], int]:
    """Polls the result keys in Redis until every task has a final state: (seconds from the
    start until then, or NaN after ``timeout``; succeeded; finished otherwise; kinds of wrong
    results; MGETs).

    ``submitted`` is in the order of submission, which is about the order the worker takes the
    tasks in (the queue is a Redis list). Each poll reads the oldest ``WINDOW`` tasks not seen
    finished yet, and moves on at once while it finds them all finished: the cost of a poll
    does not grow with the backlog, so that watching does not slow the worker down."""
    backend = celery_tasks.app.backend
    client = backend.client
    pending: collections.deque[tuple[bytes, int]] = collections.deque(
        (backend.get_key_for_task(task_id), argument) for argument, task_id in submitted
    )
    succeeded = failed = polls = 0
    wrong: collections.Counter[str] = collections.Counter()
    deadline = time.perf_counter() + timeout
    while pending:
        polls += 1
        window = [pending.popleft() for _ in range(min(WINDOW, len(pending)))]
        unfinished: list[tuple[bytes, int]] = []
        values = client.mget([key for key, _argument in window])
        for (key, argument), value in zip(window, values, strict=True):
            meta = json.loads(value) if value is not None else {}
            status = meta.get("status")
            if status not in FINAL_STATES:
                unfinished.append((key, argument))
            elif status == "SUCCESS" and meta.get("result") == argument:
                succeeded += 1
            else:
                failed += 1
                wrong[f"task {status}: {str(meta.get('result'))[:100]}"] += 1
        pending.extendleft(reversed(unfinished))
        if not unfinished:
            continue  # the whole window finished: the next one at once
        if time.perf_counter() > deadline:
            wrong[f"no result within {timeout:g} s after the last submission"] += len(pending)
            return float("nan"), succeeded, failed, wrong, polls
        time.sleep(POLL)
    return time.perf_counter() - started, succeeded, failed, wrong, polls


def redis_info(section: str) -> dict[str, Any]:
    info: dict[str, Any] = celery_tasks.app.backend.client.info(section)
    return info


# -- the whole ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="celery_load.py", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warm-up", type=int, default=16, help="tasks waited for before the run")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--settle-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    threads = [ClientThread(index) for index in range(args.clients)]
    for thread in threads:
        thread.start()
    try:
        ping = celery_tasks.echo.apply_async(("ping",))
        if ping.get(timeout=args.ready_timeout) != "ping":
            raise RuntimeError("the ping task answered something else")
        each = -(-args.warm_up // args.clients)
        wrong = sum(in_threads(threads, lambda: warm_up(each, 30.0)))
        if wrong:
            raise RuntimeError(f"{wrong} warm-up tasks answered something else")
        server = redis_info("server")
    except Exception as exc:
        emit({"error": f"Celery warm-up failed: {error_kind(exc)}"})
        return 1
    emit(
        {
            "ready": True,
            "celery": importlib.metadata.version("celery"),
            "kombu": importlib.metadata.version("kombu"),
            "redis_py": importlib.metadata.version("redis"),
            "redis": server.get("redis_version"),
        }
    )
    if sys.stdin.readline().strip() != "go":
        return 0

    firing = Firing(args.tasks)
    forks0 = redis_info("stats").get("total_forks", 0)
    for thread in threads:
        thread.inbox.put(firing.client)
    cpu0 = time.process_time()
    started = time.perf_counter()
    firing.go.set()
    parts: list[Part] = []
    for thread in threads:
        part, failure = thread.outbox.get()
        if failure is not None:
            emit({"error": f"a client thread failed: {error_kind(failure)}"})
            return 1
        parts.append(part)
    wall = max(part.finished for part in parts) - started
    cpu_firing = time.process_time() - cpu0
    submitted = [
        (argument, task_id)
        for _, argument, task_id in sorted(entry for part in parts for entry in part.submitted)
    ]
    done, succeeded, failed, wrong, polls = wait_for_results(
        submitted, started, args.settle_timeout
    )
    cpu = time.process_time() - cpu0
    errors: collections.Counter[str] = collections.Counter()
    for part in parts:
        errors.update(part.errors)
    errors.update(wrong)
    emit(
        {
            "result": {
                "tasks": args.tasks,
                "clients": args.clients,
                "accepted": len(submitted),
                "succeeded": succeeded,
                "failed": failed,
                "errors": dict(errors),
                "latencies_s": [latency for part in parts for latency in part.latencies],
                "wall_s": wall,
                "done_s": done,
                "polls": polls,
                "redis_forks": redis_info("stats").get("total_forks", 0) - forks0,
                "cpu_s": cpu,
                "cpu_firing_s": cpu_firing,
            }
        }
    )
    for thread in threads:
        thread.inbox.put(None)
    sys.stdin.read()  # until the parent has read this process's CPU time and closes the pipe
    return 0


if __name__ == "__main__":
    sys.exit(main())
