"""Triggers that are not HTTP paths: schedules and database changes, read into checked specs.

A schedule (see ``triggers.schedule``)::

    "trigger": {"schedule": {"cron": "*/5 * * * *", "timezone": "Europe/Berlin"}}
    "trigger": {"schedule": {"every": 60, "catch_up": "once"}}

A changes trigger (see ``triggers.changes``) fires the event for every change of a database that
passes its filter: a Mango ``selector`` or a design document's ``filter`` (with
``query_params``), or none::

    "trigger": {"changes": {"db": "orders", "selector": {"status": "paid"},
                            "include_docs": true, "since": "now"}}

``since`` says where a trigger with no checkpoint yet starts: ``"now"`` (the default: changes
made from then on) or ``0`` (every change the database has, from its first).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from croniter import croniter

from .fields import int_field

CATCH_UP = ("skip", "once", "all")


@dataclass(frozen=True)
class Schedule:
    """When an event fires by itself: every ``every`` seconds, or by a ``cron`` expression read in
    ``timezone``; ``catch_up`` says what happens to fires missed while no daemon ran."""

    cron: str | None = None
    every: int | None = None
    timezone: str = "UTC"
    catch_up: str = "skip"
    max_catch_up: int = 10


@dataclass(frozen=True)
class ChangesTrigger:
    """Which changes of which database fire an event."""

    db: str
    selector: Mapping[str, Any] | None = None  # Mango selector (filter=_selector)
    filter: str | None = None  # "ddoc/name": a design document's filter function
    query_params: Mapping[str, str] = field(default_factory=dict)  # for the filter function
    include_docs: bool = False
    since: str | int = "now"  # where to start without a checkpoint: "now" or 0


def parse_schedule(value: Any) -> Schedule:
    """A trigger's ``schedule`` object; raises ``ValueError`` saying what is wrong."""
    if not isinstance(value, dict):
        raise ValueError('schedule must be an object like {"cron": "*/5 * * * *"} or {"every": 60}')
    unknown = set(value) - {"cron", "every", "timezone", "catch_up", "max_catch_up"}
    if unknown:
        raise ValueError(
            f"schedule: unknown fields {sorted(unknown)} "
            "(known: cron, every, timezone, catch_up, max_catch_up)"
        )
    cron, every = value.get("cron"), value.get("every")
    if (cron is None) == (every is None):
        raise ValueError('schedule needs exactly one of "cron" and "every"')
    if cron is not None and (not isinstance(cron, str) or not croniter.is_valid(cron)):
        raise ValueError(f"schedule: invalid cron expression {cron!r}")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(
            f"schedule: every must be a whole number of seconds of at least 1, not {every!r}"
        )
    timezone = value.get("timezone", "UTC")
    try:
        if not isinstance(timezone, str) or not timezone:
            raise ValueError
        zoneinfo.ZoneInfo(timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        raise ValueError(f"schedule: unknown timezone {timezone!r}") from None
    catch_up = value.get("catch_up", "skip")
    if catch_up not in CATCH_UP:
        raise ValueError(f"schedule: catch_up must be one of skip, once, all, not {catch_up!r}")
    try:
        max_catch_up = int_field(value, "max_catch_up", 10)
    except ValueError as exc:
        raise ValueError(f"schedule: {exc}") from None
    return Schedule(cron, every, timezone, catch_up, max_catch_up)


# CouchDB's rule for database names (what PUT /{db} accepts).
DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+/-]*$")
_FILTER_NAME = re.compile(r"^[^/]+/[^/]+$")
CHANGES_FIELDS = ("db", "selector", "filter", "query_params", "include_docs", "since")


def parse_changes(value: Any) -> ChangesTrigger:
    """A trigger's ``changes`` object; raises ``ValueError`` saying what is wrong."""
    if not isinstance(value, dict):
        raise ValueError('changes must be an object like {"db": "orders", "selector": {...}}')
    unknown = set(value) - set(CHANGES_FIELDS)
    if unknown:
        raise ValueError(
            f"changes: unknown fields {sorted(unknown)} (known: {', '.join(CHANGES_FIELDS)})"
        )
    db = value.get("db")
    if not isinstance(db, str) or not DB_NAME.match(db):
        raise ValueError(
            f'changes: "db" must be a database name (lower case letters, digits and _$()+-/, '
            f"starting with a letter), not {db!r}"
        )
    selector, filter_name = value.get("selector"), value.get("filter")
    if selector is not None and filter_name is not None:
        raise ValueError('changes: give a "selector" or a "filter", not both')
    if selector is not None and not isinstance(selector, dict):
        raise ValueError('changes: "selector" must be a Mango selector, like {"type": "order"}')
    if filter_name is not None and (
        not isinstance(filter_name, str) or not _FILTER_NAME.match(filter_name)
    ):
        raise ValueError(
            f'changes: "filter" must name a design document\'s filter as "ddoc/name", '
            f"not {filter_name!r}"
        )
    query_params = value.get("query_params") or {}
    if not isinstance(query_params, dict) or not all(
        isinstance(v, str) for v in query_params.values()
    ):
        raise ValueError('changes: "query_params" must be an object of strings')
    if query_params and filter_name is None:
        raise ValueError('changes: "query_params" are for a "filter" function')
    include_docs = value.get("include_docs", False)
    if not isinstance(include_docs, bool):
        raise ValueError(f'changes: "include_docs" must be true or false, not {include_docs!r}')
    since = value.get("since", "now")
    if since not in ("now", 0) or isinstance(since, bool):
        raise ValueError(f'changes: "since" must be "now" or 0, not {since!r}')
    return ChangesTrigger(db, selector, filter_name, dict(query_params), include_docs, since)
