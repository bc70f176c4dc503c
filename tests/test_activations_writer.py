"""The activation writer's grouping, against a fake store: accepted records never wait, updates
nobody waits for linger (up to ``LINGER``) for an accepted record to share their request."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from couchdb_events import activations
from couchdb_events.activations import Activations
from couchdb_events.config import Config
from couchdb_events.message import Message, Outcome, new_id


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
    monkeypatch.setattr(activations, "LINGER", 5.0)

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
    monkeypatch.setattr(activations, "LINGER", 5.0)

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
    monkeypatch.setattr(activations, "LINGER", 0.05)

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
    monkeypatch.setattr(activations, "LINGER", 30.0)

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
