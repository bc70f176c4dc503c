"""Event documents, read into checked, immutable specs (``EventSpec``), and the path patterns
their triggers hold.

A document that cannot be used still becomes a spec, with ``error`` set: the registry keeps it so
that firing it answers with that error and ``/_events/_status`` shows it.

Event document, in the seed's object form::

    {"_id": "email_event",
     "trigger": {"/send_email": {"method": "GET"}},
     "workers": {"send_email": {"recipient": "support@yourcompany.com"}},
     "disabled": false}

or in LivelyCouch's list form (both read into the same ``EventSpec``)::

    {"_id": "timer_event",
     "trigger": [{"path": "/timer/:timerid", "method": "GET", "parameters": {"id": ":timerid"}}],
     "workers": [{"name": "tick", "parameters": {"n": 1}}, {"name": "tick", "parameters": {}}],
     "disabled": false}

A trigger may also be a schedule, ``{"schedule": {"cron": "*/5 * * * *"}}``, or a database's
changes, ``{"changes": {"db": "orders", "selector": {"status": "paid"}}}`` (see ``sources.py``),
as a key of the object form or an entry of its own in the list form; at most one of each.

A trigger path is a pattern (see ``matching.py``): literal segments, ``:name`` segments and an
optional ``*`` as the last segment. A trigger's ``parameters`` are arguments for every worker of
the event when it fires through that trigger, under each worker's own arguments. In the list
form a worker may appear more than once: it then runs once per entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .sources import ChangesTrigger, Schedule, parse_changes, parse_schedule

PARAMETER_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_BINDING = re.compile(":(" + PARAMETER_NAME + ")")
REST = "*"  # the last segment of a pattern: matches the rest of the path


def pattern_segments(path: str) -> tuple[str, ...]:
    """A normalised path's segments after its leading slash: ``"/a/b/"`` → ``("a", "b", "")``."""
    return tuple(path[1:].split("/"))


def binding_name(segment: str) -> str | None:
    """The parameter a pattern segment binds (``":id"`` → ``"id"``, ``"*"`` → ``"*"``), if any."""
    if segment == REST:
        return REST
    found = _BINDING.fullmatch(segment)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Trigger:
    path: str  # normalised: one leading slash; may hold ":name" segments and a "*" tail
    methods: frozenset[str] | None  # None: any method
    # Arguments for every worker of the event when it fires through this trigger.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", pattern_segments(self.path))


@dataclass(frozen=True)
class EventSpec:
    id: str
    rev: str
    triggers: tuple[Trigger, ...] = ()
    workers: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    disabled: bool = False
    error: str | None = None
    roles: tuple[str, ...] = ()  # only callers with one of these (or _admin) may fire it
    public: bool = False  # anyone may fire it, even where a valid user is required
    schedule: Schedule | None = None
    changes: ChangesTrigger | None = None


def normalize_path(path: str) -> str:
    """A trigger or request path with exactly one leading slash."""
    return "/" + path.lstrip("/")


def _methods(where: str, options: Mapping[str, Any]) -> frozenset[str] | None:
    method = options.get("method")
    if method is None:
        return None
    names = [method] if isinstance(method, str) else method
    if not isinstance(names, list) or not names or not all(isinstance(m, str) for m in names):
        raise ValueError(f"{where}: method must be a string or a list of strings")
    return frozenset(m.upper() for m in names)


def parse_event(doc: Mapping[str, Any]) -> EventSpec:
    """Read an event document. Never raises: a bad document gives a spec with ``error``."""
    event_id = str(doc.get("_id", ""))
    rev = str(doc.get("_rev", ""))
    disabled = doc.get("disabled", False)
    if not isinstance(disabled, bool):
        return EventSpec(event_id, rev, error=f"event {event_id!r}: disabled must be true or false")
    try:
        triggers = _parse_triggers(doc.get("trigger"))
        workers = _parse_event_workers(doc.get("workers"))
        roles, public = _parse_access(doc)
    except ValueError as exc:
        # A disabled event stays disabled even while it is broken.
        return EventSpec(event_id, rev, disabled=disabled, error=f"event {event_id!r}: {exc}")
    return EventSpec(
        event_id,
        rev,
        triggers.paths,
        workers,
        disabled,
        roles=roles,
        public=public,
        schedule=triggers.schedule,
        changes=triggers.changes,
    )


def _parse_access(doc: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    roles = doc.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise ValueError('"roles" must be a list of role names, like ["mailers"]')
    public = doc.get("public", False)
    if not isinstance(public, bool):
        raise ValueError('"public" must be true or false')
    if public and roles:
        raise ValueError('an event is either "public" or limited to "roles", not both')
    return tuple(roles), public


@dataclass(frozen=True)
class _Triggers:
    paths: tuple[Trigger, ...] = ()
    schedule: Schedule | None = None
    changes: ChangesTrigger | None = None


# Trigger kinds that are not paths (paths start with "/"): key -> parser.
_SOURCES: dict[str, Callable[[Any], Any]] = {"schedule": parse_schedule, "changes": parse_changes}
_SOURCE_NAMES = {"schedule": "schedule", "changes": "changes trigger"}


def _parse_triggers(trigger: Any) -> _Triggers:
    if trigger is None:
        return _Triggers()
    paths: list[Trigger] = []
    sources: dict[str, list[Any]] = {kind: [] for kind in _SOURCES}
    if isinstance(trigger, dict):  # the seed's form: {"/path": {"method": ...}}
        for path, options in trigger.items():
            if path in _SOURCES:
                sources[path].append(_SOURCES[path](options))
                continue
            if options is not None and not isinstance(options, dict):
                raise ValueError(f'trigger {path!r} must map to an object like {{"method": "GET"}}')
            paths.append(_trigger(path, options or {}, f"trigger {path!r}"))
    elif isinstance(trigger, list):  # LivelyCouch's form: [{"path": ..., "method": ...}]
        for number, entry in enumerate(trigger, 1):
            _list_entry(f"trigger {number}", entry, paths, sources)
    else:
        raise ValueError(
            '"trigger" must be an object of paths, like {"/send_email": {"method": "GET"}}, '
            'or a list, like [{"path": "/send_email", "method": "GET"}]'
        )
    for kind, found in sources.items():
        if len(found) > 1:
            raise ValueError(f"an event has at most one {_SOURCE_NAMES[kind]}")
    schedule, changes = (found[0] if found else None for found in sources.values())
    return _Triggers(tuple(paths), schedule, changes)


def _list_entry(
    where: str, entry: Any, paths: list[Trigger], sources: dict[str, list[Any]]
) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f'{where} must be an object like {{"path": "/send_email"}}')
    kinds = [kind for kind in _SOURCES if kind in entry]
    if kinds and "path" not in entry:
        if len(entry) > 1:
            raise ValueError(f'{where}: a "{kinds[0]}" trigger is an entry of its own')
        sources[kinds[0]].append(_SOURCES[kinds[0]](entry[kinds[0]]))
    elif "path" not in entry:
        raise ValueError(f'{where} has no "path"')
    else:
        paths.append(_trigger(entry["path"], entry, f"{where} ({entry['path']!r})"))


def _trigger(path: Any, options: Mapping[str, Any], where: str) -> Trigger:
    if not path or not isinstance(path, str):
        raise ValueError("a trigger path is empty" if not path else f"{where}: path must be text")
    path = normalize_path(path)
    segments = pattern_segments(path)
    names: set[str] = set()
    for number, segment in enumerate(segments, 1):
        name = binding_name(segment)
        if name == REST and number != len(segments):
            raise ValueError(f"{where}: '*' may only be the last segment of a path")
        if name is not None and name in names:
            raise ValueError(f"{where}: the path binds {name!r} twice")
        if name is not None:
            names.add(name)
    parameters = options.get("parameters")
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise ValueError(f'{where}: parameters must be an object like {{"id": ":timerid"}}')
    return Trigger(path, _methods(where, options), parameters)


def _parse_event_workers(workers: Any) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    if workers is None:
        raise ValueError('no "workers": name the workers to run, like {"send_email": {}}')
    if isinstance(workers, list) and workers:  # LivelyCouch's form: [{"name": ...}]
        out = []
        for number, entry in enumerate(workers, 1):
            if not isinstance(entry, dict):
                raise ValueError(f'worker {number} must be an object like {{"name": "send_email"}}')
            name = entry.get("name")
            if not name or not isinstance(name, str):
                raise ValueError(f'worker {number} has no "name" (the worker document\'s _id)')
            out.append((name, _worker_arguments(name, entry.get("parameters"), "parameters")))
        return tuple(out)
    if not isinstance(workers, dict) or not workers:
        raise ValueError(
            '"workers" must be a non-empty object of worker name -> arguments, '
            'or a non-empty list like [{"name": "send_email", "parameters": {}}]'
        )
    return tuple(
        (name, _worker_arguments(name, given, "arguments")) for name, given in workers.items()
    )


def _worker_arguments(name: str, given: Any, what: str) -> Mapping[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(f"the {what} for worker {name!r} must be an object")
    return given
