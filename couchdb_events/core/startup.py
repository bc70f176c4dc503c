"""Start-up checks: CouchDB reached (waiting up to ``startup_wait`` seconds for it) and each of
the service's databases there (made when missing). Each failure raises ``StartupError`` with a
message that says what to fix."""

from __future__ import annotations

import asyncio
import time

from .. import logs
from ..config import Config
from ..couch.store import Store
from ..errors import EventsError, StoreError, Unauthorized, Unreachable

log = logs.get("service")


class StartupError(EventsError):
    """The service cannot start; the message says why and what to change."""


async def reach_couchdb(store: Store, config: Config) -> str:
    """CouchDB's version, once it answers: waits while it is unreachable, up to
    ``startup_wait`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + config.startup_wait
    delay = 0.25
    while True:
        try:
            return await loop.run_in_executor(None, store.version)
        except Unreachable as exc:
            if time.monotonic() + delay > deadline:
                raise StartupError(
                    f"CouchDB at {config.display_url} is unreachable ({exc}); "
                    f"gave up after {config.startup_wait:g} s "
                    "(check [couchdb_events] couchdb_url)"
                ) from None
            log.info("waiting for CouchDB at %s: %s", config.display_url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        except StoreError as exc:
            raise StartupError(f"CouchDB at {config.display_url}: {exc}") from None


def ensure_db(store: Store, db: str) -> None:
    """Database ``db`` exists, made now if it was missing (blocking)."""
    try:
        if store.exists(db):
            return
        if store.create(db):
            log.info("created database %s", db)
    except Unauthorized as exc:
        raise StartupError(
            f"database {db!r} is missing or not readable and cannot be created with the "
            f"credentials in couchdb_url ({exc}); run install.sh or give admin credentials"
        ) from None
    except StoreError as exc:
        raise StartupError(f"database {db!r}: {exc}") from None
