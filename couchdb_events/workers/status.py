"""What ``/_events/_status`` shows of one worker: its pool's counters, and a snapshot of the
worker, its processes and those counters."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..model.message import Outcome
from ..model.workers import WorkerSpec
from .process import WorkerProcess
from .states import PoolState


@dataclass
class Counters:
    fired: int = 0
    delivered: int = 0
    succeeded: int = 0
    failed: int = 0
    restarts: int = 0
    timeouts: int = 0
    recycled: int = 0

    def count(self, outcome: Outcome) -> None:
        """Count a run's outcome (``delivered`` is counted when a message is written)."""
        if outcome.state == "failed":
            self.failed += 1
        elif outcome.state == "timeout":
            self.timeouts += 1
        elif outcome.state == "succeeded":
            self.succeeded += 1


SAMPLE_AGE = 1.0  # seconds a process's memory and CPU sample serves status requests


def process_status(proc: WorkerProcess) -> dict[str, Any]:
    """One process as the status shows it, its memory and CPU sampled within ``SAMPLE_AGE``
    (a dashboard or a monitor polling status often costs the service no more)."""
    rss, cpu = proc.sample(max_age=SAMPLE_AGE)
    return {
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


def pool_status(
    spec: WorkerSpec,
    state: PoolState,
    counters: Counters,
    processes: Sequence[dict[str, Any]],
    queued: int,
    last_error: str | None,
    environment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A worker as the status shows it; ``processes`` as ``process_status`` gives them;
    ``environment`` as ``Environments.describe`` gives it."""
    return {
        "rev": spec.rev,
        "state": "invalid" if spec.error else state.value,
        "mode": spec.mode.value,
        "processes": list(processes),
        "queued": queued,
        "fired": counters.fired,
        "delivered": counters.delivered,
        "succeeded": counters.succeeded,
        "failed": counters.failed,
        "restarts": counters.restarts,
        "timeouts": counters.timeouts,
        "recycled": counters.recycled,
        "last_error": last_error,
        "environment": environment,
    }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
