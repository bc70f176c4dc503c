"""The activation writer's grouping, against a fake store: accepted records never wait, updates
nobody waits for linger (up to ``LINGER``) for an accepted record to share their request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from couchdb_events.config import Config
from couchdb_events.errors import AlreadyFired, HTTPError, NotFound, Unreachable
from couchdb_events.model.message import Message, Outcome, derived_id, new_id
from couchdb_events.runs import commit, writer
from couchdb_events.runs.activations import Activations
from couchdb_events.runs.daemons import Owner


class FakeStore:
    """Takes every ``_bulk_docs`` request, remembering its documents' ids and states."""

    def __init__(self) -> None:
        self.writes: list[list[tuple[str, str]]] = []
        self.lock = threading.Lock()

    def create(self, db: str) -> bool:
        return False

    def index(self, db: str, fields: list[str], name: str, ddoc: str) -> None:
        pass

    def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            self.writes.append([(doc["_id"], doc["state"]) for doc in docs])
        return [{"ok": True, "id": doc["_id"], "rev": "1-x"} for doc in docs]


def message() -> Message:
    return Message(new_id(), "event", "worker", {}, {})


async def started(store: FakeStore) -> Activations:
    records = Activations(store, Config())  # type: ignore[arg-type]
    await records.start()
    return records


async def written(store: FakeStore, count: int, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while len(store.writes) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_accepted_records_do_not_wait_for_the_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "LINGER", 5.0)

    async def main() -> None:
        store = FakeStore()
        records = await started(store)
        first = message()
        began = time.monotonic()
        await asyncio.wait_for(records.accept([first], {}), 1.0)
        assert time.monotonic() - began < 1.0
        assert store.writes == [[(first.id, "accepted")]]
        await records.close()

    asyncio.run(main())


def test_an_update_lingers_and_goes_out_with_the_next_accepted_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "LINGER", 5.0)

    async def main() -> None:
        store = FakeStore()
        records = await started(store)
        first, second = message(), message()
        await records.accept([first], {})
        records.finished(first, Outcome("succeeded", {"ok": True}))
        await asyncio.sleep(0.2)
        assert len(store.writes) == 1  # the final state waits: nobody waits for it
        assert records.backlog == 1
        await asyncio.wait_for(records.accept([second], {}), 1.0)
        assert store.writes[1] == [(first.id, "succeeded"), (second.id, "accepted")]
        assert records.backlog == 0
        await records.close()

    asyncio.run(main())


def test_an_update_alone_is_written_after_the_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "LINGER", 0.05)

    async def main() -> None:
        store = FakeStore()
        records = await started(store)
        first = message()
        await records.accept([first], {})
        records.finished(first, Outcome("succeeded", {"ok": True}))
        await written(store, 2)
        assert store.writes[1] == [(first.id, "succeeded")]
        await records.close()

    asyncio.run(main())


def test_close_writes_lingering_updates_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "LINGER", 30.0)

    async def main() -> None:
        store = FakeStore()
        records = await started(store)
        first = message()
        await records.accept([first], {})
        records.started(first)
        records.finished(first, Outcome("failed", None, "boom"))
        began = time.monotonic()
        await records.close()
        assert time.monotonic() - began < 1.0
        assert records.backlog == 0
        assert store.writes[1] == [(first.id, "failed")]  # answered before close returned

    asyncio.run(main())


def test_close_waits_for_the_write_in_flight() -> None:
    class SlowStore(FakeStore):
        def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            time.sleep(0.3)
            return super().bulk_docs(db, docs)

    async def main() -> None:
        store = SlowStore()
        records = await started(store)
        first = message()
        accepting = asyncio.create_task(records.accept([first], {}))
        await asyncio.sleep(0.05)  # the accepted record's write is in flight
        await records.close()
        assert store.writes == [[(first.id, "accepted")]]
        await asyncio.wait_for(accepting, 1.0)  # and its 202 was not left hanging

    asyncio.run(main())


class RecordStore(FakeStore):
    """Keeps the documents, with CouchDB's conflict check on their revisions; ``down``: every
    request fails after ``delay`` seconds, as with CouchDB gone."""

    def __init__(self) -> None:
        super().__init__()
        self.docs: dict[str, dict[str, Any]] = {}
        self.down = False
        self.delay = 0.0
        self.requests = 0

    def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.requests += 1
        if self.down:
            time.sleep(self.delay)
            raise Unreachable(f"POST /{db}/_bulk_docs: ConnectionRefusedError")
        results: list[dict[str, Any]] = []
        with self.lock:
            self.writes.append([(doc["_id"], doc["state"]) for doc in docs])
            for doc in docs:
                current = self.docs.get(doc["_id"])
                if (current or {}).get("_rev") != doc.get("_rev"):
                    results.append({"id": doc["_id"], "error": "conflict", "reason": "conflict"})
                    continue
                rev = f"{int(str((current or {}).get('_rev', '0-')).split('-')[0] or 0) + 1}-x"
                self.docs[doc["_id"]] = {**doc, "_rev": rev}
                results.append({"ok": True, "id": doc["_id"], "rev": rev})
        return results

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            raise NotFound(doc_id)
        return dict(self.docs[doc_id])

    def leaves(self, db: str, doc_id: str) -> list[dict[str, Any]]:
        return [dict(self.docs[doc_id])] if doc_id in self.docs else []


def test_a_second_record_of_one_fire_is_refused_as_already_fired() -> None:
    """Two daemons firing one schedule time or one change derive the same run id: the second
    one's accept fails with AlreadyFired, and the first one's record is left as it was."""

    async def main() -> None:
        store = RecordStore()
        one = await started(store)
        two = Activations(store, Config(), Owner("otherhost", 2, 0.0))  # type: ignore[arg-type]
        await two.start()
        run_id = derived_id("schedule\0e\01767268800.0", 0)
        await one.accept([Message(run_id, "e", "worker", {}, {})], {})
        with pytest.raises(AlreadyFired) as refused:
            await two.accept([Message(run_id, "e", "worker", {}, {})], {})
        assert refused.value.status == 409 and refused.value.error == "conflict"
        assert "was fired already by daemon" in refused.value.reason
        assert store.docs[run_id]["daemon"] == one.owner.fields()
        assert store.docs[run_id]["_rev"] == "1-x"
        assert two.backlog == 0
        await one.close()
        await two.close()

    asyncio.run(main())


def test_a_conflict_on_our_own_stored_record_is_taken_as_stored() -> None:
    """A ``_bulk_docs`` answer lost on the way and the request sent again: the record is there
    already, as this daemon wrote it, so the fire is accepted."""

    async def main() -> None:
        store = RecordStore()
        records = await started(store)
        first = message()
        real = store.bulk_docs

        def twice(db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            real(db, docs)  # the first request lands, its answer is lost...
            return real(db, docs)  # ...and the one sent again meets it

        store.bulk_docs = twice  # type: ignore[method-assign]
        await asyncio.wait_for(records.accept([first], {}), 2.0)
        assert store.docs[first.id]["state"] == "accepted"
        await records.close()

    asyncio.run(main())


def test_a_rejected_record_of_a_fire_is_written_over_when_fired_again() -> None:
    """A change refused by a full queue (accepted, then rejected) is fired again with the same
    run id: it is run, not taken as fired already."""

    async def main() -> None:
        store = RecordStore()
        records = await started(store)
        run_id = derived_id("changes\0e\0orders\0o1\01-a", 0)
        first = Message(run_id, "e", "worker", {}, {})
        await records.accept([first], {})
        records.finished(first, Outcome("rejected", None, "queue full"))
        await records.close(timeout=2.0)
        again = await started(store)
        await asyncio.wait_for(again.accept([Message(run_id, "e", "worker", {}, {})], {}), 2.0)
        assert store.docs[run_id]["state"] == "accepted"
        await again.close()

    asyncio.run(main())


def test_a_fire_gets_its_503_quickly_while_the_writer_backs_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CouchDB gone: the writer's retries of updates back off up to RETRY_CAP seconds, but each
    new fire is tried at once and refused within couchdb_timeout and a little."""
    monkeypatch.setattr(commit, "RETRY_FIRST", 30.0)

    async def main() -> None:
        store = RecordStore()
        records = Activations(store, Config(couchdb_timeout=0.5))  # type: ignore[arg-type]
        await records.start()
        done = message()
        await records.accept([done], {})
        store.down = True
        records.finished(done, Outcome("succeeded", {"ok": True}))  # to retry, behind a 30 s wait
        await asyncio.sleep(0.2)
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(HTTPError) as refused:
                await asyncio.wait_for(records.accept([message()], {}), 5.0)
            assert refused.value.status == 503
            assert time.monotonic() - began < 0.5 + writer.GRACE + 0.5
        # A write hanging (CouchDB not answering): the fire waits for it, then for its own.
        store.delay = 0.4
        began = time.monotonic()
        with pytest.raises(HTTPError) as refused:
            await asyncio.wait_for(records.accept([message()], {}), 5.0)
        assert refused.value.status == 503
        assert time.monotonic() - began < 0.5 + writer.GRACE + 0.5
        # Back: what was accepted before is written.
        store.down, store.delay = False, 0.0
        await records.accept([message()], {})
        for _ in range(200):
            if store.docs[done.id]["state"] == "succeeded":
                break
            await asyncio.sleep(0.01)
        assert store.docs[done.id]["state"] == "succeeded"
        await records.close()

    asyncio.run(main())


def test_a_record_a_cluster_took_without_quorum_beside_another_is_refused() -> None:
    """A 3-node cluster can take two daemons' records of one fire, one with its quorum, the
    other with ``"accepted": true``: that one yields (its leaf deleted) as fired already."""

    class Cluster(RecordStore):
        def __init__(self) -> None:
            super().__init__()
            self.settled_asked: list[tuple[str, str]] = []

        def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            if docs[0]["daemon"]["host"] == "otherhost":  # the second daemon's write...
                doc = docs[0]  # ...taken by one copy, the others had the first daemon's
                return [{"ok": True, "id": doc["_id"], "rev": "1-y", "accepted": True}]
            return super().bulk_docs(db, docs)

        def settled(self, db: str, doc_id: str, rev: str) -> bool:
            self.settled_asked.append((doc_id, rev))
            return False

    async def main() -> None:
        store = Cluster()
        one = await started(store)
        two = Activations(store, Config(), Owner("otherhost", 2, 0.0))  # type: ignore[arg-type]
        await two.start()
        run_id = derived_id("schedule\0e\01767268800.0", 0)
        await one.accept([Message(run_id, "e", "worker", {}, {})], {})
        with pytest.raises(AlreadyFired):
            await two.accept([Message(run_id, "e", "worker", {}, {})], {})
        assert store.settled_asked == [(run_id, "1-y")]
        await one.close()
        await two.close()

    asyncio.run(main())


class GatedStore(RecordStore):
    """Holds each ``_bulk_docs`` request until the test lets it go (``release``), so that the
    test can see which requests are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[threading.Event] = []
        self.started: list[list[tuple[str, str]]] = []

    def bulk_docs(self, db: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        gate = threading.Event()
        with self.lock:
            self.started.append([(doc["_id"], doc["state"]) for doc in docs])
            self.gates.append(gate)
        gate.wait(5.0)
        return super().bulk_docs(db, docs)

    def release(self, index: int) -> None:
        self.gates[index].set()


async def requests_started(store: GatedStore, count: int, within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while len(store.started) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_an_accepted_record_does_not_wait_for_the_write_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write in flight (CouchDB slow to answer) does not hold up the next fires' records when
    there are enough of them (``BESIDE``, here 1): they go out in a request of their own beside
    it, up to IN_FLIGHT requests at once."""
    monkeypatch.setattr(commit, "BESIDE", 1)

    async def main() -> None:
        store = GatedStore()
        records = await started(store)
        fires = [message() for _ in range(commit.IN_FLIGHT + 1)]
        accepting = [asyncio.create_task(records.accept([m], {})) for m in fires[:1]]
        await requests_started(store, 1)
        for m in fires[1:]:
            accepting.append(asyncio.create_task(records.accept([m], {})))
            await requests_started(store, min(len(accepting), commit.IN_FLIGHT))
        await asyncio.sleep(0.1)  # time for a request beyond IN_FLIGHT (there must be none)
        # IN_FLIGHT requests at once; the last fire waits for one of them to be answered.
        assert len(store.started) == commit.IN_FLIGHT
        assert store.started == [[(m.id, "accepted")] for m in fires[:-1]]
        store.release(1)  # the second is answered first: its fire is accepted at once
        await asyncio.wait_for(accepting[1], 1.0)
        assert not accepting[0].done()
        await requests_started(store, commit.IN_FLIGHT + 1)
        assert store.started[-1] == [(fires[-1].id, "accepted")]
        for index in range(len(store.gates)):
            store.release(index)
        await asyncio.wait_for(asyncio.gather(*accepting), 1.0)
        await records.close()

    asyncio.run(main())


def test_an_update_waits_for_the_write_of_its_record_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that ends while its accepted record is still being written: its final state needs
    that write's revision, so it goes out after the answer, never beside it."""
    monkeypatch.setattr(commit, "BESIDE", 1)

    async def main() -> None:
        store = GatedStore()
        records = await started(store)
        first, second = message(), message()
        accepting = asyncio.create_task(records.accept([first], {}))
        await requests_started(store, 1)
        records.finished(first, Outcome("succeeded", {"ok": True}))
        other = asyncio.create_task(records.accept([second], {}))
        await requests_started(store, 2)
        assert store.started[1] == [(second.id, "accepted")]  # not the update of the first
        store.release(0)
        await asyncio.wait_for(accepting, 1.0)
        store.release(1)
        await asyncio.wait_for(other, 1.0)
        await requests_started(store, 3)
        assert store.started[2] == [(first.id, "succeeded")]
        store.release(2)
        await records.close()
        assert store.docs[first.id]["state"] == "succeeded"
        assert store.docs[first.id]["_rev"] == "2-x"

    asyncio.run(main())


def test_a_few_records_wait_for_the_write_in_flight_and_go_out_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fewer than ``BESIDE`` records do not make a request of their own beside one in flight
    (CouchDB's cost is mostly per request): they go out together once it is answered."""
    monkeypatch.setattr(commit, "BESIDE", 3)

    async def main() -> None:
        store = GatedStore()
        records = await started(store)
        first, second, third = message(), message(), message()
        accepting = [asyncio.create_task(records.accept([first], {}))]
        await requests_started(store, 1)
        accepting += [asyncio.create_task(records.accept([m], {})) for m in (second, third)]
        await asyncio.sleep(0.1)
        assert len(store.started) == 1  # two waiting, fewer than BESIDE: no second request
        store.release(0)
        await requests_started(store, 2)
        assert store.started[1] == [(second.id, "accepted"), (third.id, "accepted")]
        fourth = [message() for _ in range(3)]
        accepting += [asyncio.create_task(records.accept([m], {})) for m in fourth]
        await requests_started(store, 3)  # three waiting: a request beside the one in flight
        assert store.started[2] == [(m.id, "accepted") for m in fourth]
        for index in range(len(store.gates)):
            store.release(index)
        await asyncio.wait_for(asyncio.gather(*accepting), 1.0)
        await records.close()

    asyncio.run(main())
