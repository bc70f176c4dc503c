"""Which events a request fires, and with which arguments. Pure functions over plain data.

A request path fires:

* the event whose ``_id`` is the path (``/_events/email_event``), by GET or POST or any method its
  triggers name;
* every event with a trigger on that path (``"trigger": {"/send_email": {"method": "GET"}}``)
  whose method matches (a trigger without ``method`` takes any).

Nothing matches the path: 404. The path is known but not for this method: 405 with ``Allow``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .documents import EventSpec, normalize_path
from .errors import HTTPError

ID_METHODS = frozenset({"GET", "POST"})
_PARAMETER = re.compile(r":([A-Za-z_][A-Za-z0-9_.-]*)")


def find_events(events: Mapping[str, EventSpec], method: str, path: str) -> list[EventSpec]:
    """The events ``method path`` fires, in a stable order; raises 404, 405 or 500 otherwise."""
    method = method.upper()
    path = normalize_path(path)
    matched: dict[str, EventSpec] = {}
    allowed: set[str] = set()
    known = False

    by_id = events.get(path[1:])
    if by_id is not None and not by_id.disabled:
        if by_id.error:
            raise HTTPError(500, "event_invalid", by_id.error)
        known = True
        methods = id_methods(by_id)
        if method in methods:
            matched[by_id.id] = by_id
        else:
            allowed |= methods

    for event in sorted(events.values(), key=lambda e: e.id):
        if event.disabled or event.error:
            continue
        for trigger in event.triggers:
            if trigger.path != path:
                continue
            known = True
            if trigger.methods is None or method in trigger.methods:
                matched.setdefault(event.id, event)
            else:
                allowed |= trigger.methods

    if matched:
        return list(matched.values())
    if known:
        allow = ", ".join(sorted(allowed))
        raise HTTPError(
            405,
            "method_not_allowed",
            f"{path} does not take {method}; it takes {allow}",
            {"Allow": allow},
        )
    raise HTTPError(404, "not_found", f"no event has the id or trigger path {path}")


def id_methods(event: EventSpec) -> set[str]:
    """The methods that fire an event by its id: GET, POST and those its triggers name."""
    methods = set(ID_METHODS)
    for trigger in event.triggers:
        methods |= trigger.methods or set()
    return methods


def build_arguments(
    worker_arguments: Mapping[str, Any],
    event_arguments: Mapping[str, Any],
    parameters: Mapping[str, Any],
    where: str,
) -> dict[str, Any]:
    """The worker's arguments overlaid with the event's, with ``":name"`` values replaced.

    ``parameters`` are the request's query and body parameters. A ``":name"`` with no such
    parameter is the caller's error (400), named with ``where``.
    """
    merged = {**worker_arguments, **event_arguments}
    return {key: _substitute(value, parameters, where) for key, value in merged.items()}


def _substitute(value: Any, parameters: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str):
        found = _PARAMETER.fullmatch(value)
        if not found:
            return value
        name = found.group(1)
        if name not in parameters:
            raise HTTPError(
                400, "bad_request", f"{where} needs the parameter {name!r} (in the query or body)"
            )
        return parameters[name]
    if isinstance(value, dict):
        return {k: _substitute(v, parameters, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, parameters, where) for v in value]
    return value


def request_parameters(query: Mapping[str, str], body: Any) -> dict[str, Any]:
    """Parameters for ``":name"``: the query's, then an object body's where not in the query."""
    parameters: dict[str, Any] = {}
    if isinstance(body, dict):
        parameters.update(body)
    parameters.update(query)
    return parameters
