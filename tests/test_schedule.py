"""Schedules: reading them, next and missed fires with a fake clock, catch-up policies, and the
claim on the state document (against a fake store and against the tests' server)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from couchdb_events.couch.store import Store
from couchdb_events.errors import AlreadyFired, Conflict, NotFound
from couchdb_events.model.events import parse_event
from couchdb_events.model.sources import Schedule
from couchdb_events.triggers.schedule import (
    Scheduler,
    due_fires,
    iso,
    missed_fires,
    next_fire,
    previous_fire,
    start_since,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def event(trigger: Any) -> Any:
    return parse_event({"_id": "e", "_rev": "1-a", "trigger": trigger, "workers": {"w": {}}})


def test_schedule_in_both_forms() -> None:
    cron = {"cron": "*/1 * * * *", "timezone": "Europe/Berlin"}
    spec = event({"schedule": cron, "/path": {"method": "GET"}})
    assert spec.error is None
    assert spec.schedule == Schedule(cron="*/1 * * * *", timezone="Europe/Berlin")
    assert [t.path for t in spec.triggers] == ["/path"]
    spec = event([{"schedule": {"every": 60, "catch_up": "all", "max_catch_up": 3}}])
    assert spec.schedule == Schedule(every=60, catch_up="all", max_catch_up=3)
    assert spec.triggers == ()


@pytest.mark.parametrize(
    "schedule, error",
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "invalid cron expression '* * *'"),
        ({"every": 5, "timezone": "Mars/Olympus"}, "unknown timezone 'Mars/Olympus'"),
        ({"every": 0}, "every must be a whole number of seconds of at least 1"),
        ({"every": 5, "cron": "* * * * *"}, 'exactly one of "cron" and "every"'),
        ({}, 'exactly one of "cron" and "every"'),
        ({"every": 5, "catch_up": "some"}, "catch_up must be one of skip, once, all"),
        ({"every": 5, "max_catch_up": 0}, "max_catch_up must be a whole number"),
        ({"every": 5, "when": 1}, "unknown fields ['when']"),
        ("daily", "schedule must be an object"),
    ],
)
def test_bad_schedule_is_the_events_error(schedule: Any, error: str) -> None:
    spec = event({"schedule": schedule})
    assert spec.error is not None and error in spec.error
    assert event([{"schedule": schedule}]).error == spec.error


def test_two_schedules_are_an_error() -> None:
    spec = event([{"schedule": {"every": 1}}, {"schedule": {"every": 2}}])
    assert spec.error == "event 'e': an event has at most one schedule"


def test_every_falls_on_multiples() -> None:
    every = Schedule(every=60)
    assert iso(next_fire(every, at("2026-01-01T12:00:30"))) == "2026-01-01T12:01:00Z"
    assert iso(next_fire(every, at("2026-01-01T12:01:00"))) == "2026-01-01T12:02:00Z"
    assert iso(previous_fire(every, at("2026-01-01T12:01:00"))) == "2026-01-01T12:01:00Z"
    missed = missed_fires(every, at("2026-01-01T12:00:00"), at("2026-01-01T12:03:10"), 10)
    assert [iso(t) for t in missed] == [
        "2026-01-01T12:01:00Z",
        "2026-01-01T12:02:00Z",
        "2026-01-01T12:03:00Z",
    ]
    assert [iso(t) for t in missed_fires(every, 0, at("2026-01-01T12:03:10"), 2)] == [
        "2026-01-01T12:02:00Z",
        "2026-01-01T12:03:00Z",
    ]


def test_cron_in_a_timezone_across_daylight_saving() -> None:
    nine = Schedule(cron="0 9 * * *", timezone="Europe/Berlin")
    # 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer (from 29 March 2026).
    assert iso(next_fire(nine, at("2026-03-28T12:00:00"))) == "2026-03-29T07:00:00Z"
    missed = missed_fires(nine, at("2026-03-27T09:00:00"), at("2026-03-30T07:00:00"), 10)
    assert [iso(t) for t in missed] == [
        "2026-03-28T08:00:00Z",
        "2026-03-29T07:00:00Z",
        "2026-03-30T07:00:00Z",
    ]
    utc = Schedule(cron="*/15 * * * *")
    assert iso(previous_fire(utc, at("2026-01-01T12:29:59"))) == "2026-01-01T12:15:00Z"
    assert iso(previous_fire(utc, at("2026-01-01T12:30:00"))) == "2026-01-01T12:30:00Z"


def test_catch_up_policies() -> None:
    last, now = at("2026-01-01T12:00:00"), at("2026-01-01T12:30:05")
    skip = Schedule(every=60)
    once = Schedule(every=60, catch_up="once")
    every = Schedule(every=60, catch_up="all")
    capped = Schedule(every=60, catch_up="all", max_catch_up=3)
    # skip: the missed fires are forgotten; the next is the first after now.
    since = start_since(skip, last, now)
    assert since == now and due_fires(skip, since, now) == []
    assert iso(next_fire(skip, since)) == "2026-01-01T12:31:00Z"
    # once: one fire (the latest missed) for all of them.
    since = start_since(once, last, now)
    assert [iso(t) for t in due_fires(once, since, now)] == ["2026-01-01T12:30:00Z"]
    # all: each, up to max_catch_up (the latest).
    assert len(due_fires(every, start_since(every, last, now), now)) == 10
    assert [iso(t) for t in due_fires(capped, start_since(capped, last, now), now)] == [
        "2026-01-01T12:28:00Z",
        "2026-01-01T12:29:00Z",
        "2026-01-01T12:30:00Z",
    ]
    # Never fired: nothing to catch up with, whatever the policy.
    assert due_fires(every, start_since(every, None, now), now) == []


class FakeStore:
    """A database of one kind of document, with revisions and conflicts like CouchDB's."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            raise NotFound(doc_id)
        return dict(self.docs[doc_id])

    def put(self, db: str, doc: dict[str, Any], exclusive: bool = False) -> str:
        current = self.docs.get(doc["_id"])
        if (current and current["_rev"]) != doc.get("_rev"):
            raise Conflict(doc["_id"])
        rev = f"0-{int((current or {'_rev': '0-0'})['_rev'][2:]) + 1}"
        self.docs[doc["_id"]] = {**doc, "_rev": rev}
        return rev


class Fired:
    runs: tuple[Any, ...] = ()


class FakeDispatcher:
    def __init__(self) -> None:
        self.requests: list[Any] = []

    def prepare(self, request: Any, events: Any) -> Fired:
        self.requests.append(request)
        return Fired()


class FakeRunner:
    async def run(self, runs: Any) -> None:
        pass


class FakeRegistry:
    def __init__(self, events: dict[str, Any]) -> None:
        self.events = events


def scheduler(
    store: FakeStore,
    events: dict[str, Any],
    clock: Callable[[], float],
    durable: bool = False,
    runner: Any = None,
) -> tuple[Scheduler, FakeDispatcher]:
    dispatcher = FakeDispatcher()
    made = Scheduler(
        FakeRegistry(events),  # type: ignore[arg-type]
        dispatcher,  # type: ignore[arg-type]
        FakeRunner(),  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        "events_state",
        "events",
        clock=clock,
        durable=durable,
    )
    made.runner = runner or FakeRunner()  # type: ignore[assignment]
    return made, dispatcher


def test_two_schedulers_fire_each_time_once_and_catch_up() -> None:
    now = [at("2026-01-01T12:00:00.5")]
    store = FakeStore()
    events = {"e": event({"schedule": {"every": 1, "catch_up": "all", "max_catch_up": 5}})}
    one, fired_one = scheduler(store, events, lambda: now[0])
    two, fired_two = scheduler(store, events, lambda: now[0])

    async def ticks(count: int) -> None:
        await one.tick()  # both start following it at 12:00:00.5
        await two.tick()
        for _ in range(count):
            now[0] += 1
            await one.tick()
            await two.tick()
            await one.tick()

    asyncio.run(ticks(4))
    both = fired_one.requests + fired_two.requests
    times = sorted(r.body["scheduled"] for r in both)
    assert times == [f"2026-01-01T12:00:0{n}Z" for n in range(1, 5)]
    assert {(r.method, r.path, r.peer) for r in both} == {("POST", "/e", "schedule")}
    state = store.docs["schedule:e"]
    assert state["last_fire"] == "2026-01-01T12:00:04Z"
    assert one.status()["e"]["last_fire"] == "2026-01-01T12:00:04Z"

    # Downtime: a new scheduler catches up with the latest five fires missed.
    now[0] += 30
    three, fired_three = scheduler(store, events, lambda: now[0])
    asyncio.run(three.tick())
    assert [r.body["scheduled"] for r in fired_three.requests] == [
        f"2026-01-01T12:00:{n}Z" for n in range(30, 35)
    ]


class Records:
    """Activation records, as CouchDB keeps them: the first run of each id wins."""

    def __init__(self) -> None:
        self.ids: set[str] = set()


class OriginDispatcher(FakeDispatcher):
    def __init__(self, records: Records) -> None:
        super().__init__()
        self.records = records
        self.won: list[str] = []

    def prepare(self, request: Any, events: Any) -> Fired:
        assert request.origin is not None
        if request.origin in self.records.ids:
            raise AlreadyFired(f"{request.origin} was fired already")
        self.records.ids.add(request.origin)
        self.won.append(request.body["scheduled"])
        return Fired()


def test_durable_schedulers_fire_first_and_each_time_once() -> None:
    """With records, every daemon fires each time, and the record's id settles who did: the
    winner notes the fire in the state document afterwards."""
    now = [at("2026-01-01T12:00:00.5")]
    store, records = FakeStore(), Records()
    events = {"e": event({"schedule": {"every": 1}})}
    trio = [scheduler(store, events, lambda: now[0], durable=True) for _ in range(3)]
    for made, _dispatcher in trio:
        made.dispatcher = OriginDispatcher(records)  # type: ignore[assignment]

    async def ticks(count: int) -> None:
        for made, _d in trio:
            await made.tick()
        for _ in range(count):
            now[0] += 1
            for made, _d in trio:
                await made.tick()

    asyncio.run(ticks(5))
    won = sorted(t for made, _d in trio for t in made.dispatcher.won)  # type: ignore[attr-defined]
    assert won == [f"2026-01-01T12:00:0{n}Z" for n in range(1, 6)]
    assert store.docs["schedule:e"]["last_fire"] == "2026-01-01T12:00:05Z"
    assert sum(made.status()["e"]["fired"] for made, _d in trio) == 5
    assert all(made.status()["e"]["last_error"] is None for made, _d in trio)


def test_the_last_fire_of_an_earlier_version_is_read_from_its_local_document() -> None:
    now = [at("2026-01-01T12:00:10.5")]
    store = FakeStore()
    store.docs["_local/couchdb-events-schedule-e"] = {
        "_id": "_local/couchdb-events-schedule-e",
        "_rev": "0-7",
        "last_fire": "2026-01-01T12:00:05Z",
        "last_fire_time": at("2026-01-01T12:00:05"),
    }
    events = {"e": event({"schedule": {"every": 1, "catch_up": "all"}})}
    made, dispatcher = scheduler(store, events, lambda: now[0])
    asyncio.run(made.tick())
    assert [r.body["scheduled"] for r in dispatcher.requests] == [
        f"2026-01-01T12:00:{n:02d}Z" for n in range(6, 11)
    ]
    assert store.docs["schedule:e"]["last_fire"] == "2026-01-01T12:00:10Z"


def test_state_documents_conflict_on_a_stale_revision(couch_url: str, fresh_db: Any) -> None:
    """What claims and leases rest on: CouchDB checks an ordinary document's revision (unlike
    a ``_local`` one's, see POUCHDB_DIFFERENCES.md)."""
    db = fresh_db("state")
    store = Store(couch_url, 10)
    doc_id = "schedule:e"
    first = store.put(db, {"_id": doc_id, "last_fire": "a"})
    second = store.put(db, {"_id": doc_id, "_rev": first, "last_fire": "b"})
    with pytest.raises(Conflict):
        store.put(db, {"_id": doc_id, "_rev": first, "last_fire": "c"})
    with pytest.raises(Conflict):
        store.put(db, {"_id": doc_id, "last_fire": "c"})
    assert store.get(db, doc_id)["last_fire"] == "b"
    assert store.get(db, doc_id)["_rev"] == second
