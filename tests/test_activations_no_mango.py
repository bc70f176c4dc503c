"""Activation records on a server without Mango (CouchDB 1.x): found out at start, then resuming
and the listing go through the views of ``activations_views``, run for real on PouchDB Server,
whose ``_find`` and ``_index`` answer here as CouchDB 1.7's do."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import couchdb.http
import pytest

from couchdb_events.api.activations import activations_answer, selector
from couchdb_events.config import Config
from couchdb_events.couch.store import Store
from couchdb_events.errors import Unsupported
from couchdb_events.model.capabilities import Capabilities
from couchdb_events.model.request import Request
from couchdb_events.runs import views as activations_views
from couchdb_events.runs.activations import Activations
from couchdb_events.runs.months import INDEX_DDOC
from couchdb_events.runs.records import month_db
from tests.couch import CouchServer

RESERVED = "Only reserved document ids may start with underscore."


class CouchDB17(Store):
    """PouchDB Server, but ``POST /{db}/_find`` and ``/{db}/_index`` fail as on CouchDB 1.7,
    which takes them for document ids: python-couchdb's error for its 400 answer."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=10)
        self.mango_asked: list[str] = []
        self.as_17 = True  # False: PouchDB Server's own answers

    def _post_json(self, db: str, path: str, body: Any, **params: str) -> Any:
        if path in ("_find", "_index") and self.as_17:
            self.mango_asked.append(path)
            raise couchdb.http.ServerError((400, ("bad_request", RESERVED)))
        return super()._post_json(db, path, body, **params)


@pytest.fixture
def prefix(couch: CouchServer) -> Iterator[str]:
    """A unique ``activations_db`` (``t_acts_<hex>``; ``mango_prefix`` gives another of the same
    hex); their monthly databases are deleted afterwards."""
    unique = uuid.uuid4().hex[:10]
    yield f"t_acts_{unique}"
    store = Store(couch.url, 10)
    for db in store.databases():
        if db.startswith(("t_acts_", "t_actm_")) and unique in db:
            store.delete(db)


def mango_prefix(prefix: str) -> str:
    """Not ``prefix + "_..."``: those databases would be ``prefix``'s too (``databases``)."""
    return prefix.replace("t_acts_", "t_actm_")


MONTHS = ("2026_01", "2026_02")  # two monthly databases besides the current one


def record(n: int, month: str, **fields: Any) -> dict[str, Any]:
    year, number = month.split("_")
    doc = {
        "_id": f"r{n:03d}",
        "type": "activation",
        "event": ("mail", "sms")[n // 3 % 2],
        "worker": ("w1", "w2", "w3")[n % 3],
        "state": ("succeeded", "failed", "accepted", "running")[n // 2 % 4],
        # Five records of a month share each accepted time, more than a batch of the views
        # (ROWS, DOCS): paging must neither skip nor repeat them.
        "accepted": f"{year}-{number}-{10 + n // 16:02d}T08:00:{n // 10:02d}.000Z",
        "attempt": 1,
    }
    return {**doc, **fields}


def records() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {month: [] for month in MONTHS}
    for n in range(40):
        out[MONTHS[n % 2]].append(record(n, MONTHS[n % 2]))
    return out


async def started(store: Store, prefix: str) -> Activations:
    acts = Activations(store, Config(activations_db=prefix))
    await acts.start()
    await acts.close()
    return acts


def put_records(store: Store, acts: Activations, prefix: str) -> list[dict[str, Any]]:
    everything = []
    for month, docs in records().items():
        db = f"{prefix}_{month}"
        asyncio.run(acts.months.ensure(db))  # as a new month's first record does
        assert all(result.get("ok") for result in store.bulk_docs(db, docs))
        everything += docs
    return everything


def expected(docs: list[dict[str, Any]], query: dict[str, str], limit: int, skip: int) -> list[str]:
    """What ``_find`` gives: matching records newest first (ties: by id, as the view sorts)."""
    picked = [
        d
        for d in docs
        if all(d[key] == query[key] for key in ("event", "worker", "state") if key in query)
        and query.get("since", "") <= d["accepted"]
        and (not query.get("until") or d["accepted"] <= query["until"])
    ]
    picked.sort(key=lambda d: (d["accepted"], d["_id"]), reverse=True)
    return [d["_id"] for d in picked[skip : skip + limit]]


def test_start_finds_out_and_says_how_records_are_read(
    couch: CouchServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = CouchDB17(couch.url)
    capabilities = Capabilities()
    capabilities.learn("4.2.0")  # a version that promises Mango: the server decides

    async def main() -> Activations:
        acts = Activations(store, Config(activations_db=prefix), capabilities=capabilities)
        with caplog.at_level(logging.INFO, logger="couchdb_events"):
            await acts.start()
        await acts.close()
        return acts

    acts = asyncio.run(main())
    assert capabilities.mango is False and acts.capabilities is capabilities
    assert store.mango_asked == ["_index"]  # asked once, and never _find
    lines = [r.getMessage() for r in caplog.records if "Mango" in r.getMessage()]
    assert lines == [
        "CouchDB 4.2.0 has no Mango (_find): activation records are queried through the views "
        "_design/couchdb-events/_view/open and _design/couchdb-events/_view/accepted"
    ]
    ddoc = store.get(month_db(prefix, time.time()), "_design/" + INDEX_DDOC)
    assert ddoc["language"] == "javascript" and ddoc["views"] == activations_views.VIEWS


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"event": "mail"},
        {"worker": "w2", "state": "failed"},
        {"event": "sms", "worker": "w3", "state": "running"},
        {"since": "2026-02-11"},
        {"until": "2026-01-12T08:00:10.000Z"},
        {"since": "2026-01-11", "until": "2026-02-13", "event": "mail"},
        {"state": "lost"},
    ],
)
def test_the_listing_pages_like_find(
    couch: CouchServer, prefix: str, query: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activations_views, "ROWS", 3)  # many small batches, ties across them
    monkeypatch.setattr(activations_views, "DOCS", 2)
    store = CouchDB17(couch.url)
    acts = asyncio.run(started(store, prefix))
    docs = put_records(store, acts, prefix)
    where = selector(query)
    for limit, skip in ((50, 0), (5, 0), (5, 5), (7, 3), (1, 19), (3, 39), (4, 100), (0, 2)):
        found = acts.query(where, query.get("since"), query.get("until"), limit, skip)
        assert [d["_id"] for d in found] == expected(docs, query, limit, skip), (limit, skip)
        assert all(d["type"] == "activation" and "_rev" in d for d in found)
    assert store.mango_asked == ["_index"]


def test_the_listing_answers_over_http_the_same(couch: CouchServer, prefix: str) -> None:
    store = CouchDB17(couch.url)
    acts = asyncio.run(started(store, prefix))
    docs = put_records(store, acts, prefix)
    query = {"event": "mail", "limit": "4", "skip": "2"}

    async def ask() -> Any:
        return await activations_answer(acts, Request("GET", "/_activations", query=query))

    answer = asyncio.run(ask())
    assert answer.status == 200
    assert [d["_id"] for d in answer.body["activations"]] == expected(docs, query, 4, 2)
    assert (answer.body["limit"], answer.body["skip"], answer.body["count"]) == (4, 2, 4)


def test_the_listing_matches_find_on_a_server_with_mango(couch: CouchServer, prefix: str) -> None:
    """The same records, read through Mango (PouchDB Server has it) and through the views."""
    views = CouchDB17(couch.url)
    without = asyncio.run(started(views, prefix))
    put_records(views, without, prefix)
    mango = Store(couch.url, 10)
    other = mango_prefix(prefix)
    with_mango = Activations(mango, Config(activations_db=other))
    asyncio.run(with_mango.start())
    put_records(mango, with_mango, other)
    assert with_mango.capabilities.mango
    for query in ({}, {"worker": "w1"}, {"since": "2026-01-15", "state": "accepted"}):
        for limit, skip in ((6, 0), (6, 6), (50, 3)):
            args = (selector(query), query.get("since"), None, limit, skip)
            through_views = [d["_id"] for d in without.query(*args)]
            assert through_views == [d["_id"] for d in with_mango.query(*args)], (query, skip)


def test_resuming_finds_the_open_records_oldest_first(
    couch: CouchServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activations_views, "DOCS", 3)
    store = CouchDB17(couch.url)
    acts = asyncio.run(started(store, prefix))
    docs = put_records(store, acts, prefix)
    open_ones = sorted(
        (d for d in docs if d["state"] in ("accepted", "running")),
        key=lambda d: (d["accepted"], d["_id"]),
    )
    found = acts.open_records()
    assert [doc["_id"] for _db, doc in found] == [d["_id"] for d in open_ones]
    assert {db for db, _doc in found} == {f"{prefix}_{month}" for month in MONTHS}
    assert acts.open_records(before=1767571200.0) == []  # 2026-01-05: before every record
    cut = 1768204800.0  # 2026-01-12T08:00:00Z
    early = [doc["_id"] for _db, doc in acts.open_records(before=cut)]
    assert early == [d["_id"] for d in open_ones if d["accepted"] < "2026-01-12T08:00:00.000Z"]
    assert early and len(early) < len(open_ones) / 2

    # The records name no daemon: their daemons count as gone, so this one takes them over.
    claimed = acts.orphans()
    assert [doc["_id"] for _db, doc in claimed] == [d["_id"] for d in open_ones]
    again = store.get(claimed[0][0], claimed[0][1]["_id"])
    assert again["daemon"] == acts.owner.fields() and again["_rev"] == claimed[0][1]["_rev"]
    assert store.mango_asked == ["_index"]


def test_a_month_without_the_design_document_gets_it_when_read(
    couch: CouchServer, prefix: str
) -> None:
    store = CouchDB17(couch.url)
    acts = asyncio.run(started(store, prefix))
    db = f"{prefix}_2025_12"
    store.create(db)  # from before: no design document
    store.bulk_docs(db, [record(1, "2025_12", state="running")])
    assert [doc["_id"] for _db, doc in acts.open_records()] == ["r001"]
    assert store.get(db, "_design/" + INDEX_DDOC)["views"] == activations_views.VIEWS


def test_only_start_decides(couch: CouchServer, prefix: str) -> None:
    """A server that had ``_index`` at start and then answers as 1.7 (a proxy gone wrong) gets
    an error for the new month, not views over its Mango indexes."""
    store = CouchDB17(couch.url)
    store.as_17 = False
    acts = Activations(store, Config(activations_db=prefix))

    async def main() -> None:
        await acts.start()
        await acts.close()
        store.as_17 = True
        with pytest.raises(Unsupported):
            await acts.months.ensure(f"{prefix}_2026_01")

    asyncio.run(main())
    assert acts.capabilities.mango is True
