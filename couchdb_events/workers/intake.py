"""Where one worker's messages wait: its queue, bounded by ``max_queue``, and its idle processes
waiting for a message, the way supervisor's EventListenerPool hands out events.

A message that arrives goes to the first process waiting for one, of the worker's current
revision, or else to the back of the queue; a message a process could not take goes back to its
head. A waiting process of an older revision is released instead, with no message, and retires.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import HTTPError
from ..model.message import Message
from .process import WorkerProcess


class Intake:
    """One pool's waiting messages (``len``), and its processes waiting for a message, in the
    order they began to wait."""

    def __init__(self) -> None:
        self._queue: deque[Message] = deque()
        self._waiters: deque[tuple[WorkerProcess, asyncio.Future[Message | None]]] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def check_room(self, name: str, max_queue: int) -> None:
        """Refuse a new message for worker ``name`` while ``max_queue`` messages wait."""
        if len(self._queue) >= max_queue:
            raise HTTPError(
                503,
                "queue_full",
                f"worker {name!r} has {len(self._queue)} messages waiting (max_queue)",
                {"Retry-After": "1"},
            )

    def put(self, message: Message, rev: str) -> bool:
        """Hand ``message`` to the first process of ``rev`` waiting for one (True), or queue it
        (False). Waiting processes of other revisions met on the way are released."""
        while self._waiters:
            proc, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            if proc.spec.rev == rev:
                waiter.set_result(message)
                return True
            waiter.set_result(None)  # an old revision's process: retire it
        self._queue.append(message)
        return False

    def put_back(self, message: Message) -> None:
        """A message a process could not take: the next process gets it first."""
        self._queue.appendleft(message)

    def remove(self, message_id: str) -> Message | None:
        """Take the waiting message ``message_id`` out of the queue (cancelled), if it waits."""
        for message in self._queue:
            if message.id == message_id:
                self._queue.remove(message)
                return message
        return None

    def drain(self) -> Iterator[Message]:
        """Take the waiting messages one by one, until none is left."""
        while self._queue:
            yield self._queue.popleft()

    def idle(self, rev: str) -> int:
        """How many processes of ``rev`` wait for a message."""
        return sum(1 for proc, w in self._waiters if not w.done() and proc.spec.rev == rev)

    async def take(self, proc: WorkerProcess, timeout: float | None) -> tuple[bool, Message | None]:
        """The next message for ``proc``: (True, it) when one waits or is handed to it, (True,
        None) when ``proc`` is released, (False, None) when it exits or ``timeout`` passes."""
        if self._queue:
            return True, self._queue.popleft()
        waiter: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((proc, waiter))
        pending: set[asyncio.Future[Any]] = {waiter, proc.exited}
        await asyncio.wait(pending, timeout=timeout, return_when="FIRST_COMPLETED")
        if waiter.done():
            return True, waiter.result()
        waiter.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove((proc, waiter))
        return False, None

    def release(self, proc: WorkerProcess) -> None:
        """Tell ``proc``, if it waits, to stop now."""
        for waiting, waiter in self._waiters:
            if waiting is proc and not waiter.done():
                waiter.set_result(None)

    def release_other_revisions(self, rev: str) -> None:
        """Tell every waiting process not of ``rev`` to stop now."""
        for proc, waiter in list(self._waiters):
            if proc.spec.rev != rev and not waiter.done():
                waiter.set_result(None)

    def release_all(self) -> None:
        """Tell every waiting process to stop now."""
        for _proc, waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)
