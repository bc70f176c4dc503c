"""Firing: a request becomes one message per worker run of every event it matches.

All or nothing: every worker is checked (exists, valid, has room) before any message is queued,
so a 4xx/5xx answer means nothing was accepted and a 202 means everything was. The runner
(``runner.py``) then records and queues the messages.

Chains: a request carrying ``X-Couchdb-Events-Chain: <n>`` comes from a worker run of chain
depth n (a worker passes on the header of its own message), so its runs have depth n + 1; a
request without it has depth 0. Past ``max_chain_depth`` nothing is fired (508). Events a
worker's answer emits (``runner.py``) come through here too, as requests from that worker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .. import logs
from ..errors import HTTPError
from ..model.events import EventSpec
from ..model.matching import build_arguments, find_events, match_event, request_parameters
from ..model.message import CHAIN_HEADER, Message, derived_id, new_id, worker_request
from ..model.registry import Registry
from ..model.request import Request
from ..model.workers import WorkerSpec
from ..workers.supervisor import Supervisor

log = logs.get("dispatch")


@dataclass(frozen=True)
class Fired:
    events: list[str]
    runs: list[tuple[WorkerSpec, Message]]

    @property
    def messages(self) -> list[Message]:
        return [message for _spec, message in self.runs]


def chain_depth(headers: dict[str, str]) -> int:
    """The chain depth of a request's runs: 0, or one more than the ``X-Couchdb-Events-Chain``
    header says (the depth of the run that sent it); a bad header is the caller's error."""
    for name, value in headers.items():
        if name.lower() == CHAIN_HEADER.lower():
            text = value.strip()
            if not text.isdigit():
                raise HTTPError(
                    400,
                    "bad_request",
                    f"{CHAIN_HEADER} must be a whole number (a chain depth), not {value!r}",
                )
            return int(text) + 1
    return 0


def chain_error(max_depth: int, events: list[str]) -> str:
    return f"chain depth {max_depth} exceeded: event {', '.join(events)} not fired"


class Dispatcher:
    def __init__(
        self, registry: Registry, supervisor: Supervisor, max_chain_depth: int = 8
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self.max_chain_depth = max_chain_depth

    def match(self, request: Request) -> list[EventSpec]:
        """The events the request fires; raises 404/405 (or 500 for a broken event)."""
        return find_events(self._registry.events, request.method, request.path)

    def prepare(
        self, request: Request, events: list[EventSpec] | None = None, parent: str | None = None
    ) -> Fired:
        """One message per worker run of ``events`` (matched now when not given), after
        checking that every worker can take it; nothing is queued yet (see ``runner``).
        ``parent``: the run whose answer emitted this request."""
        loop = asyncio.get_running_loop()
        if events is None:
            events = self.match(request)
        depth = chain_depth(request.headers)
        if depth > self.max_chain_depth:
            reason = chain_error(self.max_chain_depth, [e.id for e in events])
            raise HTTPError(508, "chain_too_deep", reason)
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
                    depth,
                )
                number = len(runs)
                run_id = new_id() if request.origin is None else derived_id(request.origin, number)
                message = Message(
                    run_id,
                    event.id,
                    name,
                    arguments,
                    wire,
                    outcome=loop.create_future(),
                    worker_rev=spec.rev,
                    chain={"depth": depth, "parent": parent},
                )
                runs.append((spec, message))
        for spec, _message in runs:
            self._supervisor.check(spec)
        return Fired([e.id for e in events], runs)
