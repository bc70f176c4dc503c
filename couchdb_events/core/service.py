"""The running service: one core (registry, supervisor, dispatcher, HTTP API), whatever hosts it.

Start-up checks CouchDB (waiting up to ``startup_wait`` seconds for it), makes sure the events and
workers databases exist (``startup.py``), loads every document, then listens. Each failure raises
``StartupError`` with a message that says what to fix. Its status document is ``status.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from .. import __version__, logs
from ..api.access import Access
from ..api.router import Router
from ..config import Config
from ..couch.feed import Feed
from ..couch.store import Store
from ..errors import StoreError
from ..model.capabilities import Capabilities
from ..model.registry import Registry
from ..model.workers import WorkerSpec
from ..runs.activations import Activations
from ..runs.controls import Controls
from ..runs.daemons import BEAT, Heartbeat, Owner
from ..runs.dispatch import Dispatcher
from ..runs.runner import Runner
from ..triggers.followers import ChangesTriggers
from ..triggers.holding import Context
from ..triggers.schedule import Scheduler
from ..workers.deploy import Deployer
from ..workers.supervisor import Supervisor, kill_leftovers, worker_environment
from .startup import StartupError, ensure_db, reach_couchdb
from .status import LastError, status_document

log = logs.get("service")


class Listener(Protocol):
    """What serves the HTTP API on bind_address:port (``hosts.http``); the external host has
    none: it answers on stdin."""

    @property
    def port(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Service:
    def __init__(
        self, config: Config, host: str, listen: Callable[[Router, Config], Listener] | None = None
    ) -> None:
        """``listen``: makes the listener of the HTTP API, given its routes, when there is one."""
        self.config = config
        self.host = host
        self.listen = listen
        self.started = time.time()
        self.store = Store(config.couchdb_url, config.couchdb_timeout)
        # The feed waits up to LONGPOLL on the server: its socket timeout must be longer.
        self._feed_store = Store(config.couchdb_url, config.couchdb_timeout + 30)
        self.deployer = Deployer(config.work_dir, self._fetch_code)
        service_url = f"http://{_url_host(config.bind_address)}:{config.port}/_events/"
        self.instance = uuid.uuid4().hex
        env = worker_environment(service_url, self.instance, config.work_dir)
        self.supervisor = Supervisor(config, self.deployer, env)
        self.registry = Registry(config, self._worker_changed)
        self.dispatcher = Dispatcher(self.registry, self.supervisor, config.max_chain_depth)
        self.access = Access(config)
        self.owner = Owner.this_process()
        self.capabilities = Capabilities()  # learned at start
        self.heartbeat = Heartbeat(self.store, config.events_db, self.owner)
        self.activations = (
            Activations(self.store, config, self.owner, self.capabilities)
            if config.durable
            else None
        )
        self.runs = Runner(self.registry, self.supervisor, self.activations, self.dispatcher)
        if self.activations is not None:  # each write's size, for the metrics
            self.activations.writer.on_write = self.runs.telemetry.wrote
        self.controls = Controls(self.runs, self.registry, self.supervisor, config.state_db)
        self.router = Router(self.dispatcher, self.runs, self, config, self.access, self.controls)
        self._listener = listen(self.router, config) if listen is not None else None
        self.scheduler = Scheduler(
            self.registry,
            self.dispatcher,
            self.runs,
            self.store,
            config.state_db,
            config.events_db,
            durable=config.durable,
        )
        self.changes = ChangesTriggers(
            Context(
                self.registry,
                self.dispatcher,
                self.runs,
                self.store,
                self._feed_store,
                config.events_db,
                config.state_db,
                self.owner,
                capabilities=self.capabilities,
            )
        )
        self.feeds: list[Feed] = []
        self.last_error = LastError()
        self._sweeper: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None
        self._schedules: asyncio.Task[None] | None = None
        self._changes: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._adopter: asyncio.Task[None] | None = None

    def _fetch_code(self, spec: WorkerSpec) -> dict[str, bytes]:
        return self.store.attachments(self.config.workers_db, spec.name, spec.rev)

    def _worker_changed(self, name: str, spec: WorkerSpec | None) -> None:
        self.supervisor.worker_changed(name, spec)

    # -- start and stop -------------------------------------------------------------------
    async def start(self) -> None:
        logging.getLogger(logs.LOGGER_NAME).addHandler(self.last_error)
        loop = asyncio.get_running_loop()
        version = await reach_couchdb(self.store, self.config)
        log.info("CouchDB %s at %s", version, self.config.display_url)
        self.capabilities.learn(version)
        for db in (self.config.events_db, self.config.workers_db, self.config.state_db):
            await loop.run_in_executor(None, ensure_db, self.store, db)
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        for line in kill_leftovers(self.config.work_dir, self.instance):
            log.warning("%s", line)
        self.feeds = [
            Feed(self._feed_store, self.config.events_db, self.registry.apply_events, loop),
            Feed(self._feed_store, self.config.workers_db, self.registry.apply_workers, loop),
        ]
        for feed in self.feeds:
            feed.start()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(f.caught_up.wait() for f in self.feeds)), self.config.startup_wait
            )
        except asyncio.TimeoutError:
            errors = "; ".join(
                f.last_error or "no answer" for f in self.feeds if not f.caught_up.is_set()
            )
            raise StartupError(f"cannot read the events and workers databases: {errors}") from None
        if self.activations is not None:
            try:
                # Alive first: a daemon starting meanwhile must not take over this one's runs.
                await loop.run_in_executor(None, self.heartbeat.beat)
                await self.activations.start()
                await self.runs.resume()
            except StoreError as exc:
                raise StartupError(f"activation records: {exc}") from None
            # Cancel requests for runs of this daemon's, from other daemons (``runs.controls``).
            apply = self.controls.apply_cancels
            cancels = Feed(self._feed_store, self.config.state_db, apply, loop)
            cancels.start()
            self.feeds.append(cancels)
            self._expirer = asyncio.create_task(self._expire())
            self._heartbeat = asyncio.create_task(self.heartbeat.run())
            self._adopter = asyncio.create_task(self._adopt())
        self._schedules = asyncio.create_task(self.scheduler.run())
        self._changes = asyncio.create_task(self.changes.run())
        if self._listener is not None:
            await self._listener.start()
        self._sweeper = asyncio.create_task(self.supervisor.watch())
        where = (
            f"listening on {self.config.bind_address}:{self.port}" if self._listener else "ready"
        )
        log.info(
            "couchdb-events %s (%s) %s with %d events and %d workers",
            __version__,
            self.host,
            where,
            len(self.registry.events),
            len(self.registry.workers),
        )

    @property
    def port(self) -> int:
        return self._listener.port if self._listener is not None else self.config.port

    async def _expire(self) -> None:
        """Drop activation databases past their retention, now and every six hours."""
        assert self.activations is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                dropped = await loop.run_in_executor(None, self.activations.expire, time.time())
            except StoreError as exc:
                log.warning("cannot expire old activations: %s", exc)
            else:
                for db in dropped:
                    log.info("dropped %s: older than activations_retention_days", db)
            await asyncio.sleep(6 * 3600)

    async def _adopt(self) -> None:
        """Every ``BEAT`` seconds, resume the open runs (accepted at least ``BEAT`` seconds
        ago) of daemons gone since: another daemon on this CouchDB that died or stopped."""
        while True:
            # Jitter: daemons started together would otherwise look, and claim, in step.
            await asyncio.sleep(BEAT * random.uniform(0.75, 1.25))  # noqa: S311 - not a secret
            try:
                await self.runs.resume(before=time.time() - BEAT)
            except StoreError as exc:
                log.warning("cannot look for runs of daemons that are gone: %s", exc)

    async def stop(self) -> None:
        """Stop every worker process (new requests get 503 meanwhile), stop listening, stop
        following CouchDB. Requests waiting for an answer get theirs (failed) first; runs not
        finished keep their open activation records, for the next start."""
        log.info("stopping")
        tasks = (self._schedules, self._changes, self._sweeper, self._expirer, self._adopter)
        for task in (*tasks, self._heartbeat):
            if task is not None:
                task.cancel()
        await self.changes.close()  # each finishes the batch it fires, and checkpoints it
        self.runs.close()
        await self.supervisor.close()
        if self.activations is not None:
            await self.activations.close()
            try:  # its unfinished runs are now for any daemon to resume
                await asyncio.get_running_loop().run_in_executor(None, self.heartbeat.end)
            except StoreError as exc:
                log.warning("cannot tell CouchDB this daemon stopped: %s", exc)
        if self._listener is not None:
            await self._listener.stop()
        await self.access.close()
        for feed in self.feeds:
            feed.stop()
        logging.getLogger(logs.LOGGER_NAME).removeHandler(self.last_error)
        log.info("stopped")

    def status(self) -> dict[str, Any]:
        """The status document (``status.py``), for ``/_events/_status``."""
        return status_document(self)


def _url_host(bind_address: str) -> str:
    if bind_address in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{bind_address}]" if ":" in bind_address else bind_address
