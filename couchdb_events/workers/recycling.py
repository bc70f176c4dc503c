"""When a worker process is recycled: stopped after its current message and replaced by a fresh
one. After about ``max_messages`` messages (with jitter, so that processes started together are
not all recycled together), or once its process tree's RSS was over ``memory_limit`` in
``MEMORY_STRIKES`` samples in a row. ``WorkerProcess.recycle`` holds why.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from .. import logs
from ..model.workers import WorkerSpec
from .process import WorkerProcess

log = logs.get("pool")  # told as the pool's, whose process it is

MEMORY_STRIKES = 3  # samples over memory_limit in a row before a process is recycled


def recycle_after(spec: WorkerSpec) -> int | None:
    """How many messages a new process of ``spec`` handles before it is recycled, if any."""
    if spec.max_messages is None:
        return None
    jitter = random.randint(0, spec.max_messages // 10)  # noqa: S311 - not crypto
    return spec.max_messages + jitter


def note_handled(proc: WorkerProcess) -> None:
    """After a message: mark ``proc`` for recycling once it handled its ``max_messages``."""
    if proc.recycle_after is not None and proc.handled >= proc.recycle_after:
        proc.recycle = proc.recycle or f"handled {proc.handled} messages (max_messages)"


def sample_memory(
    processes: Iterable[WorkerProcess], wake: Callable[[WorkerProcess], None]
) -> None:
    """Check each process's memory; mark one over ``memory_limit`` several times in a row for
    recycling, and ``wake`` it (if it waits for work, it stops now)."""
    for proc in processes:
        if proc.spec.memory_limit is None or not proc.alive or proc.recycle:
            continue
        limit = proc.spec.memory_limit
        rss, _cpu = proc.sample()
        proc.memory_strikes = proc.memory_strikes + 1 if rss and rss > limit else 0
        if proc.memory_strikes >= MEMORY_STRIKES:
            proc.recycle = f"RSS {rss} bytes over memory_limit {limit} ({MEMORY_STRIKES} samples)"
            log.warning("%s: %s; recycling it after its current message", proc, proc.recycle)
            wake(proc)
