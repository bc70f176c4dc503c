"""Firing: a request becomes one message per worker run of every event it matches.

All or nothing: every worker is checked (exists, valid, has room) before any message is queued,
so a 4xx/5xx answer means nothing was accepted and a 202 means everything was. The runner
(``runner.py``) then records and queues the messages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from . import logs
from .documents import EventSpec, WorkerSpec
from .errors import HTTPError
from .matching import build_arguments, find_events, match_event, request_parameters
from .message import Message, new_id, worker_request
from .registry import Registry
from .request import Request
from .supervisor import Supervisor

log = logs.get("dispatch")


@dataclass(frozen=True)
class Fired:
    events: list[str]
    runs: list[tuple[WorkerSpec, Message]]

    @property
    def messages(self) -> list[Message]:
        return [message for _spec, message in self.runs]


class Dispatcher:
    def __init__(self, registry: Registry, supervisor: Supervisor) -> None:
        self._registry = registry
        self._supervisor = supervisor

    def match(self, request: Request) -> list[EventSpec]:
        """The events the request fires; raises 404/405 (or 500 for a broken event)."""
        return find_events(self._registry.events, request.method, request.path)

    def prepare(self, request: Request, events: list[EventSpec] | None = None) -> Fired:
        """One message per worker run of ``events`` (matched now when not given), after
        checking that every worker can take it; nothing is queued yet (see ``runner``)."""
        loop = asyncio.get_running_loop()
        if events is None:
            events = self.match(request)
        runs: list[tuple[WorkerSpec, Message]] = []
        for event in events:
            found = match_event(event, request.method, request.path)
            parameters = request_parameters(request.query, request.body, found.bindings)
            for name, event_arguments in event.workers:
                spec = self._registry.workers.get(name)
                if spec is None:
                    raise HTTPError(
                        404,
                        "worker_not_found",
                        f"event {event.id!r} names worker {name!r}, "
                        "which is not in the workers database",
                    )
                if spec.error:
                    raise HTTPError(500, "worker_invalid", spec.error)
                arguments = build_arguments(
                    spec.arguments,
                    event_arguments,
                    parameters,
                    f"event {event.id!r} (worker {name!r})",
                    found.parameters,
                )
                wire = worker_request(
                    request.method,
                    request.path,
                    request.query,
                    request.headers,
                    request.body,
                    request.peer,
                    request.user,
                )
                message = Message(
                    new_id(),
                    event.id,
                    name,
                    arguments,
                    wire,
                    outcome=loop.create_future(),
                    worker_rev=spec.rev,
                )
                runs.append((spec, message))
        for spec, _message in runs:
            self._supervisor.check(spec)
        return Fired([e.id for e in events], runs)
