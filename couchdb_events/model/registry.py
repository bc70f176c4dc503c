"""The current event and worker documents, kept in memory from the databases' change feeds,
so that firing an event never waits on CouchDB."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .. import logs
from ..config import Config
from .events import EventSpec, parse_event
from .workers import WorkerSpec, parse_worker

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
        _apply(changes, self.events, "event", parse_event, None)

    def apply_workers(self, changes: list[dict[str, Any]]) -> None:
        def parse(doc: dict[str, Any]) -> WorkerSpec:
            return parse_worker(doc, self._config)

        _apply(changes, self.workers, "worker", parse, self._worker_changed)


S = TypeVar("S", EventSpec, WorkerSpec)


def _apply(
    changes: list[dict[str, Any]],
    table: dict[str, S],
    kind: str,
    parse: Callable[[dict[str, Any]], S],
    changed: Callable[[str, S | None], None] | None,
) -> None:
    """Bring ``table`` up to date with a batch of changes; log (and report) what changed."""
    for change in changes:
        doc_id, doc = _changed_doc(change)
        if doc_id.startswith("_design/"):
            continue
        if doc is None:
            if table.pop(doc_id, None) is not None:
                log.info("%s %s deleted", kind, doc_id)
                if changed is not None:
                    changed(doc_id, None)
            continue
        spec = parse(doc)
        previous = table.get(doc_id)
        table[doc_id] = spec
        if previous is None or previous.rev != spec.rev:
            if spec.error:
                log.error("%s", spec.error)
            else:
                log.info("%s %s loaded (rev %s)", kind, doc_id, spec.rev)
            if changed is not None:
                changed(doc_id, spec)
