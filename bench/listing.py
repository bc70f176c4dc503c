"""How fast the activation records' listing answers over many records: the dashboard's runs
page and ``couchdb-events runs`` read it.

    python -m bench.listing [--records 100000] [--couchdb-url URL] [--repeat 20]

Stores ``--records`` activation records in one monthly database (shaped as the writer stores
them: 5 events, 10 workers, 1 % failed, 0.1 % timed out), then times the listing as the HTTP
route asks for it (``Reader.query``, newest first, a page of 50): no filter, each filter alone,
two filters, a time window, and the twentieth page (``until`` the last row of the one before).
The first query of each index builds it (CouchDB indexes when read): that time is reported
apart, as ``first``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from couchdb_events.config import Config
from couchdb_events.couch.store import Store
from couchdb_events.model.capabilities import Capabilities
from couchdb_events.model.message import Message, new_id
from couchdb_events.runs.activations import Activations
from couchdb_events.runs.records import accepted_doc, iso, month_db

from .common import Target, add_couchdb_url, percentile_ms

PAGE = 50


def record(number: int, now: float) -> dict[str, Any]:
    accepted = now - (100_000 - number) * 0.01
    message = Message(new_id(), f"event_{number % 5}", f"worker_{number % 10}", {}, {})
    message.accepted = accepted
    doc = accepted_doc(message, True, {"id": "bench"})
    state = "failed" if number % 100 == 7 else "timeout" if number % 1000 == 3 else "succeeded"
    doc.update(state=state, started=iso(accepted + 0.001), ended=iso(accepted + 0.002))
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    add_couchdb_url(parser)
    args = parser.parse_args()
    with Target(args.couchdb_url, prefix="bench_listing") as target:
        config = Config(couchdb_url=target.url, events_db=target.db("events"))
        prefix = config.activations_db
        store = Store(target.url, 300.0)
        activations = Activations(store, config, capabilities=Capabilities())
        now = time.time()
        db = month_db(prefix, now)
        asyncio.run(activations.months.ensure(db, probe=True))
        print(f"{target.label}: storing {args.records:,} activation records in {db}")
        started = time.perf_counter()
        batch: list[dict[str, Any]] = []
        for number in range(args.records):
            batch.append(record(number, now))
            if len(batch) == 1000 or number == args.records - 1:
                store.bulk_docs(db, batch)
                batch = []
            if number and number % 20_000 == 0:
                print(f"  {number:,} stored ({time.perf_counter() - started:.0f} s)")
        print(f"  stored in {time.perf_counter() - started:.1f} s")
        base: dict[str, Any] = {"type": "activation"}
        window = (iso(now - 300), iso(now - 200))
        queries: list[tuple[str, dict[str, Any], str | None, str | None]] = [
            ("newest", {}, None, None),
            ("event=event_3", {"event": "event_3"}, None, None),
            ("worker=worker_7", {"worker": "worker_7"}, None, None),
            ("state=failed (1 %)", {"state": "failed"}, None, None),
            ("state=timeout (0.1 %)", {"state": "timeout"}, None, None),
            ("event + state=failed", {"event": "event_2", "state": "failed"}, None, None),
            ("a 100 s window", {}, *window),
        ]
        print(f"\n{'listing (page of 50)':28} {'first':>9} {'p50':>9} {'p99':>9}  rows")
        for name, where, since, until in queries:
            times: list[float] = []
            rows = 0
            for _ in range(args.repeat + 1):
                t0 = time.perf_counter()
                rows = len(activations.query({**base, **where}, since, until, PAGE, 0))
                times.append(time.perf_counter() - t0)
            first, rest = times[0], times[1:]
            print(
                f"{name:28} {first * 1000:7.1f}ms {percentile_ms(rest, 50):7.1f}ms "
                f"{percentile_ms(rest, 99):7.1f}ms  {rows}"
            )
        # Paging back: each page ends where the one before did.
        until = None
        t0 = time.perf_counter()
        for _page in range(20):
            docs = activations.query(base, None, until, PAGE + 1, 0)
            until = docs[-1]["accepted"]
        print(f"{'20 pages back (until=)':28} {'':9} {(time.perf_counter() - t0) * 50:7.1f}ms "
              f"{'':9}  per page")  # fmt: skip


if __name__ == "__main__":
    main()
