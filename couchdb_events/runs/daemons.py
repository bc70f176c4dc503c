"""Which daemon is which, and which are alive, for several daemons on one CouchDB.

A daemon is a process: ``Owner`` (host, pid, the process's start time). Each daemon with
``durable`` on keeps ``_local/couchdb-events-daemon-<host>:<pid>`` in the events database
(``_local``: not replicated) saying it is alive until ``alive_until``, renewed every ``BEAT``
seconds and ended at a clean stop. An activation record names the daemon running it, so that
another daemon takes over (resumes) only the open records of daemons that are gone: a process
of this host that no longer runs, or a daemon whose heartbeat ran out or was ended.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from .. import logs
from ..couch.store import Store
from ..errors import Conflict, NotFound, StoreError

log = logs.get("daemons")

PREFIX = "_local/couchdb-events-daemon-"
ALIVE = 30.0  # seconds a heartbeat lasts
BEAT = 10.0  # seconds between heartbeats


@dataclass(frozen=True)
class Owner:
    """A daemon process."""

    host: str
    pid: int
    started: float  # the process's start time: a pid used again is another process

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}"

    def fields(self) -> dict[str, Any]:
        """How documents name it."""
        return {"id": self.id, "host": self.host, "pid": self.pid, "started": self.started}

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())


def process_gone(host: Any, pid: Any, started: Any, this_host: str) -> bool | None:
    """For a process of this host: whether it no longer runs; None for another host's (or when
    it cannot be told)."""
    if host != this_host or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    try:
        return bool(psutil.Process(pid).create_time() != started)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return None


class Heartbeat:
    """This daemon's ``_local`` document; ``beat`` and ``end`` block (run them in a thread)."""

    def __init__(
        self, store: Store, db: str, owner: Owner, clock: Callable[[], float] = time.time
    ) -> None:
        self.store, self.db, self.owner, self.clock = store, db, owner, clock
        self._rev: str | None = None

    @property
    def doc_id(self) -> str:
        return PREFIX + self.owner.id

    def _write(self, alive_until: float) -> None:
        doc: dict[str, Any] = {"_id": self.doc_id, **self.owner.fields()}
        doc["alive_until"] = alive_until
        for _attempt in range(3):
            if self._rev is not None:
                doc["_rev"] = self._rev
            try:
                self._rev = self.store.put(self.db, doc)
                return
            except Conflict:  # only this daemon writes it: an answer lost on the way
                try:
                    self._rev = str(self.store.get(self.db, self.doc_id)["_rev"])
                except NotFound:
                    self._rev = None
        raise StoreError(f"PUT /{self.db}/{self.doc_id}: conflict, again and again")

    def beat(self) -> None:
        self._write(self.clock() + ALIVE)

    def end(self) -> None:
        self._write(0.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.beat)
            except StoreError as exc:
                log.warning("cannot tell CouchDB this daemon is alive: %s", exc)
            await asyncio.sleep(BEAT)


class Liveness:
    """Which daemons named by records are gone, as of ``now`` (blocking; one pass)."""

    def __init__(self, store: Store, db: str, me: Owner, now: float) -> None:
        self.store, self.db, self.me, self.now = store, db, me, now
        self._seen: dict[str, bool] = {}

    def gone(self, daemon: Any) -> bool:
        """Whether the daemon a record names (its ``daemon`` field) is gone; a record that
        names none (written before records named their daemon) counts as gone."""
        if not isinstance(daemon, Mapping) or not isinstance(daemon.get("id"), str):
            return True
        daemon_id = daemon["id"]
        if daemon_id == self.me.id:
            return False
        if daemon_id not in self._seen:
            here = process_gone(
                daemon.get("host"), daemon.get("pid"), daemon.get("started"), self.me.host
            )
            self._seen[daemon_id] = here if here is not None else self._heartbeat_gone(daemon_id)
        return self._seen[daemon_id]

    def _heartbeat_gone(self, daemon_id: str) -> bool:
        try:
            doc = self.store.get(self.db, PREFIX + daemon_id)
        except NotFound:
            return True
        until = doc.get("alive_until")
        return not isinstance(until, (int, float)) or until < self.now
