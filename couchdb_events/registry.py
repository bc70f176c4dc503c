"""The current event and worker documents, kept in memory from the databases' change feeds,
so that firing an event never waits on CouchDB."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import logs
from .config import Config
from .documents import EventSpec, WorkerSpec, parse_event, parse_worker

log = logs.get("registry")

WorkerChanged = Callable[[str, WorkerSpec | None], None]


def _changed_doc(change: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    doc_id = str(change.get("id", ""))
    doc = change.get("doc")
    if change.get("deleted") or not isinstance(doc, dict) or doc.get("_deleted"):
        return doc_id, None
    return doc_id, doc


class Registry:
    def __init__(self, config: Config, worker_changed: WorkerChanged) -> None:
        self._config = config
        self._worker_changed = worker_changed
        self.events: dict[str, EventSpec] = {}
        self.workers: dict[str, WorkerSpec] = {}

    def apply_events(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            doc_id, doc = _changed_doc(change)
            if doc_id.startswith("_design/"):
                continue
            if doc is None:
                if self.events.pop(doc_id, None) is not None:
                    log.info("event %s deleted", doc_id)
                continue
            spec = parse_event(doc)
            previous = self.events.get(doc_id)
            self.events[doc_id] = spec
            if previous is None or previous.rev != spec.rev:
                if spec.error:
                    log.error("%s", spec.error)
                else:
                    log.info("event %s loaded (rev %s)", doc_id, spec.rev)

    def apply_workers(self, changes: list[dict[str, Any]]) -> None:
        for change in changes:
            doc_id, doc = _changed_doc(change)
            if doc_id.startswith("_design/"):
                continue
            if doc is None:
                if self.workers.pop(doc_id, None) is not None:
                    log.info("worker %s deleted", doc_id)
                    self._worker_changed(doc_id, None)
                continue
            spec = parse_worker(doc, self._config)
            previous = self.workers.get(doc_id)
            self.workers[doc_id] = spec
            if previous is None or previous.rev != spec.rev:
                if spec.error:
                    log.error("%s", spec.error)
                else:
                    log.info("worker %s loaded (rev %s)", doc_id, spec.rev)
                self._worker_changed(doc_id, spec)
