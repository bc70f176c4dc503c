"""Cancelling one run of a worker: taken out of its queue, or its process group killed."""

from __future__ import annotations

import signal
from collections.abc import Iterable

from .intake import Intake
from .process import WorkerProcess

CANCELLED_RUNNING = "cancelled while running: its process group was killed"


def cancel_run(queue: Intake, processes: Iterable[WorkerProcess], message_id: str) -> str | None:
    """``queued`` when the run was waiting (it never starts), ``running`` when the process
    running it was killed with its whole group (its outcome follows, as the runner marked the
    message cancelled), None when this worker has no such run."""
    if queue.remove(message_id) is not None:
        return "queued"
    for proc in processes:
        if proc.current == message_id and proc.alive:
            proc.stopping_requested = True  # an exit asked for, not a crash: no restart delay
            proc.kill_group(signal.SIGKILL)
            return "running"
    return None
