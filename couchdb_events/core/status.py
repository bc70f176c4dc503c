"""The status document, ``GET /_events/_status``: the daemon, its feeds, events, workers,
activation records, schedules and changes triggers, the last minutes' runs and latencies
(``recent``, from ``runs.telemetry``), and the last warning or error logged (``LastError``).
Read from the running service's parts (``Parts``: ``service.Service``)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Protocol

from .. import __version__
from ..config import Config
from ..couch.feed import Feed
from ..model.registry import Registry
from ..model.workers import WorkerSpec
from ..runs.activations import Activations
from ..runs.runner import Runner
from ..triggers.followers import ChangesTriggers
from ..triggers.schedule import Scheduler
from ..workers.supervisor import Supervisor


class LastError(logging.Handler):
    """Remembers the last warning or error logged, for ``/_events/_status``."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.last: dict[str, Any] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }


class Parts(Protocol):
    """What the status document is read from: ``service.Service``."""

    config: Config
    host: str
    started: float
    registry: Registry
    supervisor: Supervisor
    feeds: list[Feed]
    activations: Activations | None
    runs: Runner
    scheduler: Scheduler
    changes: ChangesTriggers
    last_error: LastError

    @property
    def port(self) -> int: ...


def status_document(service: Parts) -> dict[str, Any]:
    workers: dict[str, Any] = {}
    pools = service.supervisor.snapshot()
    for name, spec in sorted(service.registry.workers.items()):
        workers[name] = pools.pop(name, None) or _unused_worker(spec)
    workers.update(pools)  # deleted workers whose processes are still stopping
    events = {
        event_id: {
            "rev": spec.rev,
            "triggers": [
                {"path": t.path, "methods": sorted(t.methods) if t.methods else None}
                for t in spec.triggers
            ],
            "schedule": dataclasses.asdict(spec.schedule) if spec.schedule else None,
            "changes": spec.changes.db if spec.changes else None,
            "workers": [name for name, _args in spec.workers],
            "disabled": spec.disabled,
            "error": spec.error,
        }
        for event_id, spec in sorted(service.registry.events.items())
    }
    config = service.config
    return {
        "couchdb_events": {
            "version": __version__,
            "host": service.host,
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(service.started)),
            "uptime": round(time.time() - service.started, 3),
            "couchdb": config.display_url,
            "couchdb_connected": all(f.connected for f in service.feeds),
            "events_db": config.events_db,
            "workers_db": config.workers_db,
            "listening": f"{config.bind_address}:{service.port}",
        },
        "feeds": {f.db: f.status() for f in service.feeds},
        "events": events,
        "workers": workers,
        "activations": _activations_status(service),
        "schedules": service.scheduler.status(),
        "changes": service.changes.status(),
        "recent": service.runs.telemetry.recent(),
        "last_error": service.last_error.last,
    }


def _activations_status(service: Parts) -> dict[str, Any]:
    activations = service.activations
    if activations is None:
        return {"durable": False}
    return {
        "durable": True,
        "db": activations.prefix + "_YYYY_MM",
        "backlog": activations.backlog,
        "writes": activations.writes,
        "written": activations.written,
        "resumed": service.runs.resumed,
        "retried": service.runs.retried,
        "last_error": activations.last_error,
    }


def _unused_worker(spec: WorkerSpec) -> dict[str, Any]:
    return {
        "rev": spec.rev,
        "state": "invalid" if spec.error else "ok",
        "mode": spec.mode.value,
        "processes": [],
        "queued": 0,
        "fired": 0,
        "delivered": 0,
        "succeeded": 0,
        "failed": 0,
        "restarts": 0,
        "last_error": spec.error,
    }
