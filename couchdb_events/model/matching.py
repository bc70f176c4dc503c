"""Which events a request fires, and with which arguments. Pure functions over plain data.

A request path fires:

* the event whose ``_id`` is the path (``/_events/email_event``), by GET or POST or any method its
  triggers name;
* every event with a trigger whose path pattern matches the path
  (``"trigger": {"/send_email": {"method": "GET"}}``) and whose method matches (a trigger
  without ``method`` takes any).

Nothing matches the path: 404. The path is known but not for this method: 405 with ``Allow``.
Every matching event fires, in id order: a more specific pattern never hides another one.

Path patterns (LivelyCouch's), compared segment by segment on the decoded request path:

* a literal segment matches itself only (case-sensitive);
* ``:name`` matches exactly one non-empty segment and binds it to the parameter ``name``; it
  never matches across ``/`` (the host passes decoded paths, so ``%2F`` is a ``/`` here too);
* ``*``, only as the last segment, matches the rest of the path, zero or more segments, and binds
  it, without a leading slash, to the parameter ``*`` (``/files/*`` binds ``a/b.txt`` for
  ``/files/a/b.txt`` and ``""`` for ``/files`` and ``/files/``).

Only leading slashes are normalised: a trailing slash is an empty last segment, so ``/hook/``
and ``/hook`` are different paths, and ``/timer/:id`` does not match ``/timer/5/``.

When an event has several triggers that match, the first (in document order) gives the
bindings and its ``parameters``; fired by its id alone, an event has neither.

Parameters for ``":name"`` argument values: a path binding wins over a query parameter of the
same name, and a query parameter over a field of an object body. Arguments, lowest first: the
worker document's ``arguments``, the matched trigger's ``parameters``, the event's arguments
for that worker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HTTPError
from .events import (
    PARAMETER_NAME,
    REST,
    EventSpec,
    Trigger,
    binding_name,
    normalize_path,
    pattern_segments,
)

ID_METHODS = frozenset({"GET", "POST"})
_PARAMETER = re.compile(r":(\*|" + PARAMETER_NAME + ")")  # ":*" is the rest of a "*" path


@dataclass(frozen=True)
class Match:
    """How an event matched a request: the bindings of its path pattern and the matched
    trigger's ``parameters`` (both empty when it matched by its id only)."""

    event: EventSpec
    bindings: Mapping[str, str] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)


def match_path(trigger: Trigger, segments: tuple[str, ...]) -> dict[str, str] | None:
    """The bindings if ``trigger``'s pattern matches a path's ``segments``, else None."""
    pattern = trigger.segments
    rest = bool(pattern) and pattern[-1] == REST
    fixed = pattern[:-1] if rest else pattern
    if len(segments) < len(fixed) or (not rest and len(segments) != len(fixed)):
        return None
    bindings: dict[str, str] = {}
    for want, got in zip(fixed, segments, strict=False):
        name = binding_name(want)
        if name is None:
            if want != got:
                return None
        elif not got:
            return None  # ":name" binds a non-empty segment
        else:
            bindings[name] = got
    if rest:
        bindings[REST] = "/".join(segments[len(fixed) :])
    return bindings


def find_events(events: Mapping[str, EventSpec], method: str, path: str) -> list[EventSpec]:
    """The events ``method path`` fires, in a stable order; raises 404, 405 or 500 otherwise."""
    return [found.event for found in find_matches(events, method, path)]


def find_matches(events: Mapping[str, EventSpec], method: str, path: str) -> list[Match]:
    """The events ``method path`` fires with their bindings, the event fired by its id first,
    then the others in id order; raises 404, 405 or 500 otherwise."""
    method = method.upper()
    path = normalize_path(path)
    segments = pattern_segments(path)
    matched: dict[str, Match] = {}
    by_trigger: set[str] = set()
    allowed: set[str] = set()
    known = False

    by_id = events.get(path[1:])
    if by_id is not None and not by_id.disabled:
        if by_id.error:
            raise HTTPError(500, "event_invalid", by_id.error)
        known = True
        methods = id_methods(by_id)
        if method in methods:
            matched[by_id.id] = Match(by_id)
        else:
            allowed |= methods

    for event in sorted(events.values(), key=lambda e: e.id):
        if event.disabled or event.error:
            continue
        for trigger in event.triggers:
            bindings = match_path(trigger, segments)
            if bindings is None:
                continue
            known = True
            if trigger.methods is not None and method not in trigger.methods:
                allowed |= trigger.methods
                continue
            if event.id not in by_trigger:
                # The first matching trigger gives bindings and parameters, even when the
                # event matched by its id as well (it keeps its place first).
                by_trigger.add(event.id)
                matched[event.id] = Match(event, bindings, trigger.parameters)

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


def match_event(event: EventSpec, method: str, path: str) -> Match:
    """How ``event`` matches ``method path``: the first of its triggers that takes it gives the
    bindings and parameters; none (fired by its id) gives neither."""
    method = method.upper()
    segments = pattern_segments(normalize_path(path))
    for trigger in event.triggers:
        if trigger.methods is not None and method not in trigger.methods:
            continue
        bindings = match_path(trigger, segments)
        if bindings is not None:
            return Match(event, bindings, trigger.parameters)
    return Match(event)


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
    trigger_arguments: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The worker's arguments overlaid with the matched trigger's ``parameters`` and then the
    event's arguments for the worker, with ``":name"`` values replaced.

    ``parameters`` are the request's parameters (``request_parameters``). A ``":name"`` with no
    such parameter is the caller's error (400), named with ``where``.
    """
    merged = {**worker_arguments, **(trigger_arguments or {}), **event_arguments}
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


def request_parameters(
    query: Mapping[str, str], body: Any, bindings: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Parameters for ``":name"``: the path's bindings, then the query's where not bound, then
    an object body's fields where in neither."""
    parameters: dict[str, Any] = {}
    if isinstance(body, dict):
        parameters.update(body)
    parameters.update(query)
    parameters.update(bindings or {})
    return parameters
