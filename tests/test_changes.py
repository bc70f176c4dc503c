"""Changes triggers with a fake store, dispatcher and runner: the checkpoint moves only past
accepted changes, refusals are retried, a missing database or filter is a clear error, and the
lease decides which daemon follows."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from couchdb_events.couch.store import Changes
from couchdb_events.errors import AlreadyFired, Conflict, HTTPError, NotFound, Unreachable
from couchdb_events.model.events import parse_event
from couchdb_events.model.sources import parse_changes
from couchdb_events.runs.daemons import Owner
from couchdb_events.triggers import changes as changes_module
from couchdb_events.triggers import followers, holding
from couchdb_events.triggers import lease as lease_module
from couchdb_events.triggers.changes import Follower
from couchdb_events.triggers.followers import ChangesTriggers
from couchdb_events.triggers.holding import Context
from couchdb_events.triggers.lease import Lease, LeaseLost
from couchdb_events.triggers.rows import change_body, change_origin, seq_number

EVENTS = "events"
STATE = "events_state"
STATE_DOC = "changes:on_order"  # the trigger's state document, in the state database
ME = Owner("testhost", 1, 0.0)


class FakeStore:
    """Documents of the events database with revisions; a scripted changes feed."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.batches: list[Changes | Exception] = []
        self.asked: list[Any] = []
        self.update = 7
        self.idle = threading.Event()  # set to let a waiting "long-poll" return empty

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            raise NotFound(f"GET /{db}/{doc_id}: not found (not_found: missing)")
        return dict(self.docs[doc_id])

    def put(self, db: str, doc: dict[str, Any], exclusive: bool = False) -> str:
        current = self.docs.get(doc["_id"])
        if (current or {}).get("_rev") != doc.get("_rev"):
            raise Conflict(f"PUT /{db}/{doc['_id']}: conflict")
        number = int(str((current or {}).get("_rev", "0-0")).split("-")[1]) + 1
        self.docs[doc["_id"]] = {**doc, "_rev": f"0-{number}"}
        return f"0-{number}"

    def lease_held(self, **fields: Any) -> None:
        """The state document as another daemon left it."""
        doc_id = STATE_DOC
        self.docs[doc_id] = {"_id": doc_id, "_rev": "0-1", **fields}

    def update_seq(self, db: str) -> Any:
        if self.update is None:
            raise NotFound(f"GET /{db}: not found (not_found: Database does not exist.)")
        return self.update

    def changes(self, db: str, since: Any, **options: Any) -> Changes:
        self.asked.append((since, options))
        if self.batches:
            batch = self.batches.pop(0)
            if isinstance(batch, Exception):
                raise batch
            return batch
        self.idle.wait(5)
        return Changes([], since)


def row(doc_id: str, seq: int) -> dict[str, Any]:
    return {"id": doc_id, "seq": seq, "changes": [{"rev": "1-a"}]}


@dataclass
class FakeFired:
    runs: list[Any]


@dataclass
class FakeDispatch:
    """Records what fires; refuses the ids in ``refuse`` (each once per entry)."""

    refuse: list[str] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    def prepare(self, request: Any, events: list[Any]) -> FakeFired:
        assert request.peer == "changes" and request.path == "/on_order"
        return FakeFired([request.body])

    async def run(self, runs: list[Any]) -> None:
        doc_id = runs[0]["id"]
        if doc_id in self.refuse:
            self.refuse.remove(doc_id)
            raise HTTPError(503, "queue_full", "worker 'record' has 1000 messages waiting")
        self.fired.append(doc_id)


class FakeRegistry:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.events = {doc["_id"]: parse_event({"_rev": "1-a", **doc})}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes_module, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(changes_module, "STANDBY_POLL", 0.02)
    monkeypatch.setattr(followers, "TICK", 0.01)


TRIGGER: dict[str, Any] = {"db": "orders", "selector": {"status": "paid"}}


def context(
    store: FakeStore,
    dispatch: FakeDispatch,
    owner: Owner = ME,
    clock: Callable[[], float] = lambda: 1000.0,
    trigger: dict[str, Any] | None = None,
) -> Context:
    registry = FakeRegistry(
        {"_id": "on_order", "trigger": {"changes": trigger or TRIGGER}, "workers": {"w": {}}}
    )
    return Context(
        registry,  # type: ignore[arg-type]
        dispatch,  # type: ignore[arg-type]
        dispatch,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        EVENTS,
        STATE,
        owner,
        clock,
    )


async def until(check: Callable[[], Any], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def state_doc(store: FakeStore) -> dict[str, Any]:
    return store.docs[STATE_DOC]


def test_the_checkpoint_waits_for_refused_changes_and_none_fires_twice() -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch(refuse=["b"])
        store.batches = [Changes([row("a", 8), row("b", 9), row("c", 10)], 11)]
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch))
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "retrying")
        assert follower.last_error == (
            "change 'b' not fired: worker 'record' has 1000 messages waiting"
        )
        await until(lambda: follower.seq == 11)
        assert dispatch.fired == ["a", "c", "b"]  # b once accepted; a and c not again
        assert state_doc(store)["seq"] == 11 and follower.state == "following"
        assert follower.last_error is None and follower.lag == 0
        # It started at the database's update sequence (no checkpoint yet, since "now").
        assert store.asked[0][0] == 7
        assert store.asked[0][1]["selector"] == {"status": "paid"}
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)
        assert state_doc(store)["lease_until"] == 1000.0  # given back

    asyncio.run(main())


def test_stopped_while_retrying_keeps_the_checkpoint_before_the_refused_change() -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch(refuse=["b"] * 100)
        store.batches = [Changes([row("a", 8), row("b", 9), row("c", 10)], 11)]
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch))
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "retrying")
        await follower.stop()
        await asyncio.wait_for(task, 3)
        assert state_doc(store)["seq"] == 8  # a is accepted; b (and c after it) are not yet

    asyncio.run(main())


def test_a_missing_filter_or_database_is_a_clear_error_retried() -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch()
        missing = NotFound("GET /orders/_changes: not found (not_found: missing json key: paid)")
        store.batches = [missing, missing, Changes([row("a", 8)], 8)]
        trigger = {"db": "orders", "filter": "shop/paid", "query_params": {"min": "1"}}
        ctx = context(store, dispatch, trigger=trigger)
        follower = Follower("on_order", parse_changes(trigger), ctx)
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "waiting")
        assert follower.last_error == (
            "database 'orders' or its filter 'shop/paid' does not exist "
            "(GET /orders/_changes: not found (not_found: missing json key: paid))"
        )
        assert follower.status()["connected"] is False
        await until(lambda: dispatch.fired == ["a"])
        assert follower.last_error is None
        options = store.asked[0][1]
        assert options["filter"] == "shop/paid" and options["query_params"] == {"min": "1"}
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_a_selector_on_a_server_without_mango_is_a_precise_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch()
        ctx = context(store, dispatch)
        ctx.capabilities.learn("1.7.1")
        follower = Follower("on_order", parse_changes(TRIGGER), ctx)
        with caplog.at_level("ERROR", logger="couchdb_events"):
            await asyncio.wait_for(follower.run(), 3)  # ends at once: nothing to follow
        error = (
            "selector needs CouchDB 2.0 or later (this server: CouchDB 1.7.1); "
            "use a design document filter"
        )
        status = follower.status()
        assert (status["state"], status["last_error"], status["filter"]) == (
            "unsupported", error, "_selector",
        )  # fmt: skip
        assert store.asked == [] and store.docs == {}  # no _changes request, no lease taken
        assert [r.getMessage() for r in caplog.records] == [
            f"changes trigger of event on_order: {error}"
        ]
        # A design document filter is what 1.x has: that trigger follows as ever.
        trigger = {"db": "orders", "filter": "shop/paid"}
        ctx = context(store, dispatch, trigger=trigger)
        ctx.capabilities.learn("1.7.1")
        store.batches = [Changes([row("a", 8)], 8)]
        follower = Follower("on_order", parse_changes(trigger), ctx)
        task = asyncio.create_task(follower.run())
        await until(lambda: dispatch.fired == ["a"])
        assert follower.state == "following" and follower.last_error is None
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_a_database_that_appears_later_is_read_from_its_first_change() -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch()
        store.update = None  # type: ignore[assignment]
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch))
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "waiting")
        assert follower.last_error is not None
        assert follower.last_error.startswith("database 'orders' does not exist")
        store.update = 3
        await until(lambda: store.asked)
        assert store.asked[0][0] == 0
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_another_daemons_lease_means_standby_until_it_runs_out() -> None:
    async def main() -> None:
        now = [1000.0]
        store, dispatch = FakeStore(), FakeDispatch()
        store.lease_held(db="orders", seq=5, owner="other", lease_until=1020.0)
        ctx = context(store, dispatch, clock=lambda: now[0])
        follower = Follower("on_order", parse_changes(TRIGGER), ctx)
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "standby")
        assert follower.status()["owner"] == "other" and follower.seq == 5
        assert store.asked == []
        now[0] = 1021.0  # the other daemon stopped renewing
        await until(lambda: follower.state == "following")
        assert state_doc(store)["owner"] == "testhost:1"
        await until(lambda: store.asked)
        assert store.asked[0][0] == 5  # its checkpoint, not "now"
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_a_lease_written_by_another_daemon_is_lost() -> None:
    async def main() -> None:
        store = FakeStore()
        lease = Lease(store, STATE, EVENTS, "on_order", "orders", ME, lambda: 1000.0)  # type: ignore[arg-type]

        async def start() -> int:
            return 7

        assert await lease.acquire(start) == (True, 7)
        await lease.save(9)
        doc = state_doc(store)
        store.put(
            EVENTS, {**doc, "owner": "other", "daemon": {"host": "far"}, "lease_until": 2000.0}
        )
        with pytest.raises(LeaseLost):
            await lease.save(10)
        assert not lease.held
        assert await lease.acquire(start) == (False, 9)
        assert lease.holder == "other"

    asyncio.run(main())


def test_a_checkpoint_of_another_database_does_not_count() -> None:
    async def main() -> None:
        store = FakeStore()
        store.lease_held(db="invoices", seq=99, owner="testhost:1", lease_until=0)
        lease = Lease(store, STATE, EVENTS, "on_order", "orders", ME, lambda: 1000.0)  # type: ignore[arg-type]

        async def start() -> int:
            return 3

        assert await lease.acquire(start) == (True, 3)

    asyncio.run(main())


def test_the_manager_starts_restarts_and_stops_followers() -> None:
    async def main() -> None:
        store, dispatch = FakeStore(), FakeDispatch()
        ctx = context(store, dispatch)
        manager = ChangesTriggers(ctx)
        manager.sync()
        assert list(manager.followers) == ["on_order"]
        await until(lambda: manager.followers["on_order"].state == "following")
        first = manager.followers["on_order"]
        registry: Any = ctx.registry
        registry.events["on_order"] = parse_event(
            {
                "_id": "on_order",
                "_rev": "2-b",
                "trigger": {"changes": {"db": "orders"}},
                "workers": {"w": {}},
            }
        )
        manager.sync()
        assert "on_order" not in manager.followers  # the old one stops first
        store.idle.set()

        def restarted() -> bool:
            manager.sync()
            return "on_order" in manager.followers

        await until(restarted)
        assert manager.followers["on_order"] is not first
        assert manager.status()["on_order"]["filter"] is None
        registry.events.clear()
        manager.sync()
        assert manager.status() == {}
        await manager.close()

    asyncio.run(main())


def test_seq_numbers_and_the_body() -> None:
    assert seq_number(12) == 12
    assert seq_number("34-g1AAAAB") == 34
    assert seq_number("now") is None
    assert seq_number(None) is None
    assert seq_number(True) is None
    change = {"id": "o1", "seq": 3, "changes": [{"rev": "1-a"}], "doc": {"_id": "o1"}}
    assert change_body("orders", change) == {**change, "db": "orders"}


def test_renewing_keeps_the_checkpoint_and_extends_the_lease() -> None:
    async def main() -> None:
        now = [1000.0]
        store = FakeStore()
        lease = Lease(store, STATE, EVENTS, "on_order", "orders", ME, lambda: now[0])  # type: ignore[arg-type]

        async def start() -> int:
            return 7

        await lease.acquire(start)
        await lease.save(12)
        now[0] = 1005.0
        await lease.renew()  # written 5 s ago: not yet
        assert state_doc(store)["lease_until"] == 1030.0
        now[0] = 1011.0
        assert not lease.due()
        await lease.renew()
        assert state_doc(store)["lease_until"] == 1041.0 and state_doc(store)["seq"] == 12
        now[0] = 1032.0
        assert lease.due()  # fire no more before renewing
        store.put(EVENTS, {**state_doc(store), "owner": "other"})
        now[0] = 1022.0
        with pytest.raises(LeaseLost):
            await lease.renew()
        assert not lease.held

    asyncio.run(main())


def test_a_lease_of_a_process_of_this_host_that_is_gone_is_taken_at_once() -> None:
    import os
    import socket
    import subprocess
    import sys

    import psutil

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    here = socket.gethostname()

    async def attempt(pid: int, started: float) -> tuple[bool, Any]:
        store = FakeStore()
        store.lease_held(
            db="orders",
            seq=4,
            owner=f"{here}:{pid}",
            daemon={"id": f"{here}:{pid}", "host": here, "pid": pid, "started": started},
            lease_until=2000.0,
        )
        me = Owner(here, 1, 0.0)
        lease = Lease(store, STATE, EVENTS, "on_order", "orders", me, lambda: 1000.0)  # type: ignore[arg-type]

        async def start() -> int:
            return 0

        return await lease.acquire(start)

    alive = psutil.Process().create_time()
    assert asyncio.run(attempt(int(ended.stdout), 1.0)) == (True, 4)  # gone
    assert asyncio.run(attempt(os.getpid(), alive)) == (False, 4)  # still running
    assert asyncio.run(attempt(os.getpid(), alive - 50)) == (True, 4)  # a pid used again


def test_a_follower_that_fails_is_shown_and_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(followers, "RESTART_DELAY", 0.1)

    class Broken(FakeDispatch):
        async def run(self, runs: list[Any]) -> None:
            raise RuntimeError("a bug")

    async def main() -> None:
        store, dispatch = FakeStore(), Broken()
        store.batches = [Changes([row("a", 8)], 8)]
        manager = ChangesTriggers(context(store, dispatch))
        manager.sync()
        first = manager.followers["on_order"]
        await until(lambda: manager.status()["on_order"]["state"] == "failed")
        assert manager.status()["on_order"]["last_error"] == "RuntimeError: a bug"
        assert state_doc(store)["lease_until"] == 1000.0  # given back on the way out

        def restarted() -> bool:
            manager.sync()
            return manager.followers.get("on_order") not in (None, first)

        await until(restarted)
        store.idle.set()
        await manager.close()

    asyncio.run(main())


def test_a_holder_paused_past_its_lease_stops_before_its_next_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A daemon stalled (SIGSTOP, a VM pause) while another took its expired lease: when it
    runs again its next batch is not fired; it says it lost the lease, in its log and status."""

    async def main() -> None:
        now = [1000.0]
        store, dispatch = FakeStore(), FakeDispatch()
        store.batches = [Changes([row("a", 8)], 8)]
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch,
                            clock=lambda: now[0]))  # fmt: skip
        task = asyncio.create_task(follower.run())
        await until(lambda: dispatch.fired == ["a"] and follower.seq == 8)
        # Paused for 35 s; meanwhile another daemon took the lease, which had run out.
        now[0] = 1035.0
        other = {"id": "farhost:9", "host": "farhost", "pid": 9, "started": 1.0}
        store.put(EVENTS, {**state_doc(store), "owner": "farhost:9", "daemon": other,
                           "lease_until": 1065.0})  # fmt: skip
        store.batches = [Changes([row("b", 9)], 9)]
        store.idle.set()  # the long-poll it was in comes back with change b
        await until(lambda: follower.state == "standby")
        await asyncio.sleep(0.05)
        assert dispatch.fired == ["a"]  # b is the new holder's to fire
        status = follower.status()
        assert status["owner"] == "farhost:9"
        assert (
            status["last_error"] == "lost its lease to daemon farhost:9: stopped following orders"
        )
        assert state_doc(store)["owner"] == "farhost:9" and state_doc(store)["seq"] == 8
        await follower.stop()
        await asyncio.wait_for(task, 3)
        assert state_doc(store)["owner"] == "farhost:9"  # not given back: it was not ours

    with caplog.at_level("WARNING", logger="couchdb_events"):
        asyncio.run(main())
    assert any("lost its lease to daemon farhost:9" in r.getMessage() for r in caplog.records)


def test_a_change_another_daemon_fired_counts_as_accepted() -> None:
    class Fired(FakeDispatch):
        async def run(self, runs: list[Any]) -> None:
            if runs[0]["id"] == "b":
                raise AlreadyFired("run of event 'on_order' was fired already")
            await super().run(runs)

    async def main() -> None:
        store, dispatch = FakeStore(), Fired()
        store.batches = [Changes([row("a", 8), row("b", 9)], 9)]
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch))
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.seq == 9)
        assert dispatch.fired == ["a"] and follower.last_error is None
        await follower.stop()
        store.idle.set()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_a_change_origin_names_the_event_database_document_and_revision() -> None:
    change = {"id": "o1", "seq": "5-g1", "changes": [{"rev": "2-b"}]}
    assert change_origin("e", "orders", change) == "changes\0e\0orders\0o1\0" + "2-b"
    assert change_origin("e", "orders", {"id": "o1", "seq": 5}) is None


def test_a_lease_that_runs_out_while_couchdb_is_away_stops_the_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Renewals failing until the lease has run out: the follower stops (another daemon may
    hold the lease by now), says why, and takes the lease again once CouchDB answers."""
    monkeypatch.setattr(holding, "RENEW", 0.04)
    monkeypatch.setattr(lease_module, "RENEW", 0.0)

    class Away(FakeStore):
        away = False

        def put(self, db: str, doc: dict[str, Any], exclusive: bool = False) -> str:
            if self.away:
                raise Unreachable(f"PUT /{db}/{doc['_id']}: ConnectionRefusedError")
            return super().put(db, doc, exclusive)

    async def main() -> None:
        now = [1000.0]
        store, dispatch = Away(), FakeDispatch()
        follower = Follower("on_order", parse_changes(TRIGGER), context(store, dispatch,
                            clock=lambda: now[0]))  # fmt: skip
        task = asyncio.create_task(follower.run())
        await until(lambda: follower.state == "following")
        store.away = True
        now[0] = 1031.0  # past the lease's 30 s
        await until(lambda: follower.state == "standby")
        assert follower.last_error is not None
        assert "its lease ran out while CouchDB could not be reached" in follower.last_error
        assert not follower.lease.held
        store.away = False
        store.idle.set()
        await until(lambda: follower.state == "following")
        assert follower.last_error is None
        await follower.stop()
        await asyncio.wait_for(task, 3)

    asyncio.run(main())


def test_a_lease_write_whose_answer_was_lost_is_taken_as_written() -> None:
    """The write landed, its answer did not, and the request sent again met it as a conflict:
    the lease is still this daemon's."""

    class LostAnswer(FakeStore):
        lose = False

        def put(self, db: str, doc: dict[str, Any], exclusive: bool = False) -> str:
            rev = super().put(db, doc, exclusive)
            if self.lose:
                self.lose = False
                raise Conflict(f"PUT /{db}/{doc['_id']}: conflict")
            return rev

    async def main() -> None:
        store = LostAnswer()
        lease = Lease(store, STATE, EVENTS, "on_order", "orders", ME, lambda: 1000.0)  # type: ignore[arg-type]

        async def start() -> int:
            return 7

        assert await lease.acquire(start) == (True, 7)
        store.lose = True
        await lease.save(9)
        assert lease.held and state_doc(store)["seq"] == 9
        await lease.save(10)  # from the revision read back: no conflict
        assert state_doc(store)["seq"] == 10

    asyncio.run(main())
