"""Worker process states and the crash-loop policy. Pure: no I/O, time comes in as ``now``.

::

    STARTING --spawned--> IDLE <--answer/written-- BUSY
        |                   |  \\--message-->--------/
        |                   v
        +--------------> STOPPING --reaped--> EXITED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProcessState(str, enum.Enum):
    STARTING = "starting"  # deploying code, spawning
    IDLE = "idle"  # running, waiting for a message
    BUSY = "busy"  # working on a message (reply and once workers)
    STOPPING = "stopping"  # stdin closed, being signalled
    EXITED = "exited"  # reaped


class PoolState(str, enum.Enum):
    OK = "ok"
    BACKOFF = "backoff"  # the last process died young; waiting before the next start
    FAILED = "failed"  # died young too often; refuses messages until the document changes


# A process that exits on its own sooner than this after starting died young.
START_SECONDS = 1.0
# After this many young deaths in a row the worker is marked failed.
MAX_YOUNG_DEATHS = 5
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0


@dataclass
class CrashPolicy:
    """Counts young deaths in a row and says how long to wait before the next start."""

    young_deaths: int = 0
    retry_at: float = 0.0

    def exited(self, now: float, started: float, expected: bool) -> PoolState:
        """Record one exit. ``expected``: we asked it to stop, or it was a one-shot run."""
        if expected or now - started >= START_SECONDS:
            self.young_deaths = 0
            self.retry_at = now
            return PoolState.OK
        self.young_deaths += 1
        if self.young_deaths >= MAX_YOUNG_DEATHS:
            return PoolState.FAILED
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (self.young_deaths - 1))
        self.retry_at = now + delay
        return PoolState.BACKOFF

    def healthy(self) -> None:
        """A process proved itself (answered, or lived past START_SECONDS)."""
        self.young_deaths = 0

    def may_start(self, now: float) -> bool:
        return now >= self.retry_at
