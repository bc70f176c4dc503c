"""Scheduled events: an event whose trigger has a ``schedule`` fires by itself.

A fire at time T runs every worker of the event, like ``POST /_events/<event id>`` with the body
``{"scheduled": "<T, ISO>"}`` from the peer ``schedule``, through the dispatcher and runner.

The last fire is kept in the state database's ``schedule:<event id>`` document
(``couch.state``). Several daemons on one CouchDB fire each time once:

* with ``durable`` on, the runs of fire T have ids derived from the event and T
  (``message.derived_id``): every daemon fires T, and CouchDB keeps the activation record of
  the first to store it and refuses the others' (``AlreadyFired``). The record is stored before
  anything runs, so a daemon killed right after is resumed by another one: each fire runs
  exactly once. The winner then moves the document to ``{"last_fire": T}``.
* without it, before firing T a daemon moves that document from the revision it last saw to
  ``{"last_fire": T}``; a conflict means another daemon changed it first, so it reads it again
  and fires T only if the document's last fire is still before T (at most once: a daemon
  killed between its claim and its fire loses that fire).

After downtime, ``catch_up`` says what happens to the fires missed since the last one: ``skip``
(the default: the next fire after now), ``once`` (one fire for all of them) or ``all`` (each,
the latest ``max_catch_up`` of them).

The pure functions take the time as a parameter (seconds since the epoch); ``Scheduler`` is the
loop, one asyncio task, which re-reads the registry's events on each tick.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from croniter import croniter

from .. import logs
from ..couch import state
from ..couch.store import Store
from ..errors import AlreadyFired, Conflict, EventsError, HTTPError, StoreError
from ..model.events import EventSpec
from ..model.registry import Registry
from ..model.request import Request
from ..model.sources import Schedule

if TYPE_CHECKING:
    from ..runs.dispatch import Dispatcher
    from ..runs.runner import Runner

log = logs.get("schedule")

KIND = "schedule"
TICK = 0.5  # seconds between looks at the registry


def iso(t: float) -> str:
    """A time as UTC ISO 8601, with milliseconds only when it has a fraction of a second."""
    moment = datetime.fromtimestamp(t, timezone.utc)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _cron(schedule: Schedule, t: float) -> Any:
    assert schedule.cron is not None
    start = datetime.fromtimestamp(t, zoneinfo.ZoneInfo(schedule.timezone))
    return croniter(schedule.cron, start)


def next_fire(schedule: Schedule, after: float) -> float:
    """The first fire strictly after ``after``. ``every`` fires fall on whole multiples of
    ``every`` seconds since the epoch, so that every daemon computes the same times."""
    if schedule.every is not None:
        return float((int(after // schedule.every) + 1) * schedule.every)
    return float(_cron(schedule, after).get_next(datetime).timestamp())


def fire_before(schedule: Schedule, before: float) -> float:
    """The last fire strictly before ``before``."""
    if schedule.every is not None:
        return float((math.ceil(before / schedule.every) - 1) * schedule.every)
    return float(_cron(schedule, before).get_prev(datetime).timestamp())


def previous_fire(schedule: Schedule, before: float) -> float:
    """The last fire at or before ``before``."""
    earlier = fire_before(schedule, before)
    after = next_fire(schedule, earlier)
    return after if after <= before else earlier


def missed_fires(schedule: Schedule, since: float, now: float, limit: int) -> list[float]:
    """The fires in ``(since, now]``, oldest first, at most the latest ``limit`` of them."""
    out: list[float] = []
    t = previous_fire(schedule, now)
    while t > since and len(out) < limit:
        out.append(t)
        t = fire_before(schedule, t)
    return out[::-1]


def start_since(schedule: Schedule, last_fire: float | None, now: float) -> float:
    """From when fires count as missed, for a daemon starting to follow a schedule at ``now``
    whose last fire (by any daemon) was ``last_fire``: with ``skip``, or never fired, now."""
    if last_fire is None or schedule.catch_up == "skip":
        return now
    return min(last_fire, now)


def due_fires(schedule: Schedule, since: float, now: float) -> list[float]:
    """The fires to make at ``now`` when the last one counted was ``since``: with ``all`` each
    (the latest ``max_catch_up``), otherwise only the latest."""
    limit = schedule.max_catch_up if schedule.catch_up == "all" else 1
    return missed_fires(schedule, since, now, limit)


@dataclass
class _Followed:
    schedule: Schedule
    since: float
    next: float
    rev: str | None  # the state document's revision last seen; None: there is none
    last_fire: float | None
    last_error: str | None = None
    fired: int = 0


@dataclass
class Scheduler:
    """Fires scheduled events; ``run`` is the loop."""

    registry: Registry
    dispatcher: Dispatcher
    runner: Runner
    store: Store
    db: str  # the state database
    events_db: str  # where earlier versions kept the last fire (``state.read``)
    durable: bool = False
    clock: Callable[[], float] = time.time
    followed: dict[str, _Followed] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad tick stop every schedule
                log.exception("schedule tick failed")
            now = self.clock()
            soonest = min((f.next for f in self.followed.values()), default=now + TICK)
            await asyncio.sleep(max(0.0, min(TICK, soonest - now)))

    def _scheduled(self) -> dict[str, EventSpec]:
        return {
            event_id: spec
            for event_id, spec in self.registry.events.items()
            if spec.schedule is not None and not spec.disabled and not spec.error
        }

    async def tick(self) -> None:
        events = self._scheduled()
        for event_id in list(self.followed):
            spec = events.get(event_id)
            if spec is None or spec.schedule != self.followed[event_id].schedule:
                del self.followed[event_id]
        for event_id in list(self.errors):
            if event_id not in events:
                del self.errors[event_id]
        for event_id, spec in events.items():
            try:
                await self._tick_one(event_id, spec)
            except StoreError as exc:
                self.errors[event_id] = str(exc)
                log.warning("schedule of event %s: %s", event_id, exc)

    async def _read_state(self, event_id: str) -> tuple[str | None, float | None]:
        loop = asyncio.get_running_loop()
        doc = await loop.run_in_executor(
            None, state.read, self.store, self.db, self.events_db, KIND, event_id
        )
        if doc is None:
            return None, None
        rev = str(doc["_rev"]) if "_rev" in doc else None
        last = doc.get("last_fire_time")
        if isinstance(last, (int, float)) and not isinstance(last, bool):
            return rev, float(last)
        return rev, None

    async def _tick_one(self, event_id: str, spec: EventSpec) -> None:
        assert spec.schedule is not None
        followed = self.followed.get(event_id)
        if followed is None:
            rev, last_fire = await self._read_state(event_id)
            now = self.clock()
            since = start_since(spec.schedule, last_fire, now)
            followed = _Followed(
                spec.schedule, since, next_fire(spec.schedule, since), rev, last_fire
            )
            self.followed[event_id] = followed
        now = self.clock()
        if followed.next > now:
            return
        for t in due_fires(followed.schedule, followed.since, now):
            if followed.last_fire is not None and followed.last_fire >= t:
                pass  # another daemon fired it (or a later one)
            elif self.durable:
                if await self._fire(event_id, spec, followed, t):
                    await self._note(event_id, followed, t)
            elif await self._claim(event_id, followed, t):
                await self._fire(event_id, spec, followed, t)
            followed.since = t
        followed.since = max(followed.since, now)
        followed.next = next_fire(followed.schedule, followed.since)

    async def _claim(self, event_id: str, followed: _Followed, t: float) -> bool:
        """Whether this daemon won fire ``t``: it moved the state document to it."""
        loop = asyncio.get_running_loop()
        while True:
            if followed.last_fire is not None and followed.last_fire >= t:
                return False  # another daemon fired it (or a later one)
            doc: dict[str, Any] = {
                "_id": state.doc_id(KIND, event_id),
                "event": event_id,
                "last_fire": iso(t),
                "last_fire_time": t,
            }
            if followed.rev is not None:
                doc["_rev"] = followed.rev
            try:
                followed.rev = await loop.run_in_executor(
                    None, functools.partial(self.store.put, self.db, doc, exclusive=True)
                )
            except Conflict:
                followed.rev, followed.last_fire = await self._read_state(event_id)
                continue
            followed.last_fire = t
            return True

    async def _note(self, event_id: str, followed: _Followed, t: float) -> None:
        """With ``durable``: after firing ``t``, say so in the state document (for status and
        for catch-up after a restart); the record is what settled the fire."""
        try:
            await self._claim(event_id, followed, t)
        except StoreError as exc:
            log.warning("schedule of event %s: fired at %s, but cannot note it: %s",
                        event_id, iso(t), exc)  # fmt: skip

    async def _fire(self, event_id: str, spec: EventSpec, followed: _Followed, t: float) -> bool:
        """Fire ``t``; whether this daemon did (False: it failed, or another daemon had)."""
        request = Request(
            "POST",
            f"/{event_id}",
            body={"scheduled": iso(t)},
            peer="schedule",
            origin=f"schedule\0{event_id}\0{t!r}",
        )
        try:
            fired = self.dispatcher.prepare(request, [spec])
            await self.runner.run(fired.runs)
        except AlreadyFired:
            followed.last_fire = max(t, followed.last_fire or t)
            log.debug("schedule of event %s: fire at %s was another daemon's", event_id, iso(t))
            return False
        except (HTTPError, EventsError) as exc:
            reason = exc.reason if isinstance(exc, HTTPError) else str(exc)
            self.errors[event_id] = f"fire at {iso(t)}: {reason}"
            log.warning("schedule of event %s: fire at %s: %s", event_id, iso(t), reason)
            return False
        followed.fired += 1
        self.errors.pop(event_id, None)
        log.info("event %s fired by its schedule at %s", event_id, iso(t))
        return True

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for event_id in sorted(self._scheduled()):
            followed = self.followed.get(event_id)
            out[event_id] = {
                "next_fire": iso(followed.next) if followed else None,
                "last_fire": iso(followed.last_fire) if followed and followed.last_fire else None,
                "fired": followed.fired if followed else 0,
                "last_error": self.errors.get(event_id),
            }
        return out
