"""``in_thread``: a blocking call run in a daemon thread of its own, awaited from the event loop;
the follower's long-polls of ``_changes`` go through it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread of its own: a long-poll may outlive the daemon's stop (PouchDB
    Server ignores the long-poll timeout), and must neither hold an executor thread nor keep the
    interpreter from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def work() -> None:
        result: tuple[bool, Any]
        try:
            result = (True, fn())
        except BaseException as exc:  # handed to the waiting coroutine
            result = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=work, name="changes-fetch", daemon=True).start()
    return await future
