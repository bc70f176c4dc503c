"""Following one database's ``_changes`` feed in a background thread.

The feed first reads every current document (``since=0`` in batches), then waits for news
with ``feed=longpoll``. Each batch is handed to the event loop with ``call_soon_threadsafe``;
the loop alone applies it. When CouchDB goes away the feed backs off (0.5 s doubling to 5 s),
reconnects and resumes from the last sequence it saw; its status says what is going on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from .. import logs
from ..errors import NotFound, StoreError
from .store import Store

log = logs.get("feed")

BATCH = 500
LONGPOLL_MS = 25_000
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 5.0

Apply = Callable[[list[dict[str, Any]]], None]


class Feed:
    """One database's changes, applied on the loop. Runs in a daemon thread."""

    def __init__(
        self, store: Store, db: str, apply: Apply, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.db = db
        self.since: Any = 0
        self.connected = False
        self.last_error: str | None = None
        self.caught_up = asyncio.Event()
        self._store = store
        self._apply = apply
        self._loop = loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{db}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "connected": self.connected,
            "seq": self.since,
            "caught_up": self.caught_up.is_set(),
            "last_error": self.last_error,
        }

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: we are shutting down
            self._stop.set()

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        caught_up = False
        while not self._stop.is_set():
            try:
                # After an error, ask without waiting first, so that "connected again" shows
                # at once instead of after a whole longpoll.
                wait = LONGPOLL_MS if caught_up and self.connected else 0
                batch = self._store.changes(self.db, self.since, longpoll_ms=wait, limit=BATCH)
            except Exception as exc:  # never let the thread die: back off and retry
                if not isinstance(exc, StoreError):
                    log.exception("feed %s: unexpected error", self.db)
                self._failed(exc, backoff)
                self._stop.wait(backoff)
                backoff = min(BACKOFF_CAP, backoff * 2)
                continue
            if self._stop.is_set():
                return
            if not self.connected:
                if self.last_error:
                    log.warning("feed %s: connected again, resuming at %s", self.db, self.since)
                self.connected = True
                self.last_error = None
            backoff = BACKOFF_FIRST
            if batch.results:
                self._post(self._apply, batch.results)
            self.since = batch.last_seq
            if not caught_up and len(batch.results) < BATCH:
                caught_up = True
                self._post(self.caught_up.set)

    def _failed(self, exc: Exception, backoff: float) -> None:
        if isinstance(exc, NotFound):
            message = f"database {self.db!r} does not exist (create it, or run install.sh)"
        else:
            message = str(exc)
        if self.connected or self.last_error != message:
            log.warning("feed %s: %s; retrying in %.1f s", self.db, message, backoff)
        self.connected = False
        self.last_error = message
