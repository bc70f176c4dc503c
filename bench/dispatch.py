"""Dispatch throughput and latency: a warm ``reply`` worker against a fresh process per event.

One run starts an in-memory PouchDB Server and ``couchdb-events serve``, deploys two workers
running the same standard-library Python script (``bench_reply``: long-lived processes that
answer one JSON line per message; ``bench_once``: a fresh interpreter per message, the baseline),
then fires events over HTTP with ``?wait=30`` from ``--concurrency`` concurrent requests and
reports throughput and latency percentiles for each.

    python -m bench.dispatch [--events 2000] [--concurrency 32] [--baseline-events 200]
                             [--processes 2] [--json]

It reports; it does not assert. Everything it starts is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: python bench/dispatch.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Service,
    Target,
    add_couchdb_url,
    couch_request,
    percentile_ms,
    put_event,
    put_worker,
)

EVENTS_DB = "events"  # after the target's prefix
WORKERS_DB = "workers"
REPLY = "bench_reply"
ONCE = "bench_once"
WAIT = 30


# -- setting up ---------------------------------------------------------------------------------
def deploy(target: Target, processes: int) -> None:
    """The two databases, the two workers (same script, two modes) and an event for each."""
    for db in (EVENTS_DB, WORKERS_DB):
        couch_request("PUT", f"{target.url}{target.db(db)}")
    for name, mode in ((REPLY, "reply"), (ONCE, "once")):
        put_worker(target.url, target.db(WORKERS_DB), name, mode, processes)
        put_event(target.url, target.db(EVENTS_DB), name, f"/bench/{mode}", [name])


# -- firing ---------------------------------------------------------------------------------------
@dataclass
class Result:
    mode: str
    worker: str
    events: int
    concurrency: int
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    pids: set[int] = field(default_factory=set)
    service_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return percentile_ms(self.latencies, p)

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "worker": self.worker,
            "events": self.events,
            "concurrency": self.concurrency,
            "succeeded": self.ok,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "wall_s": round(self.wall, 3),
            "events_per_s": round(self.rate, 1),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p90_ms": round(self.percentile_ms(90), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "max_ms": round(self.percentile_ms(100), 2),
            "worker_pids": len(self.pids),
            "service_cpu_s": round(self.service_cpu, 2),
            "client_cpu_s": round(self.client_cpu, 2),
        }


async def fire_one(session: aiohttp.ClientSession, url: str) -> tuple[str | None, int | None]:
    """One event: (None, worker pid) when the worker answered, (error kind, None) otherwise."""
    try:
        async with session.get(url) as response:
            body = await response.read()
            if response.status != 200:
                return (
                    f"HTTP {response.status}: {body[:120].decode(errors='replace').strip()}",
                    None,
                )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:160], None
    try:
        answer = json.loads(body)
        run = answer["runs"][0]
        if run.get("state") != "succeeded" or run["answer"]["id"] != run["id"]:
            return f"run {run.get('state')}: {run.get('error')}"[:160], None
        return None, int(run["answer"]["pid"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable answer ({type(exc).__name__}: {exc})"[:160], None


async def fire(session: aiohttp.ClientSession, base: str, result: Result, service: Service) -> None:
    url = f"{base}{result.worker}?wait={WAIT}"
    remaining = iter(range(result.events))

    async def client() -> None:
        for _ in remaining:  # the iterator is shared: each request is taken exactly once
            sent = time.perf_counter()
            error, pid = await fire_one(session, url)
            if error is None:
                result.latencies.append(time.perf_counter() - sent)
                if pid is not None:
                    result.pids.add(pid)
            else:
                result.errors[error] += 1

    cpu = service.cpu_seconds()
    own_cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(result.concurrency)))
    result.wall = time.perf_counter() - started
    result.client_cpu = time.process_time() - own_cpu
    result.service_cpu = service.cpu_seconds() - cpu


async def run_load(args: argparse.Namespace, service: Service) -> list[Result]:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=WAIT + 30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # Warm-up: start the reply processes, deploy both workers, open connections.
        warm_reply = Result(
            "warm-up", REPLY, max(4 * args.processes, args.concurrency), args.concurrency
        )
        warm_once = Result("warm-up", ONCE, max(2 * args.processes, 4), args.processes)
        for warm in (warm_reply, warm_once):
            await fire(session, service.base, warm, service)
            if warm.errors:
                print(f"warm-up errors for {warm.worker}: {dict(warm.errors)}", file=sys.stderr)
        reply = Result(f"reply (warm, {args.processes} proc)", REPLY, args.events, args.concurrency)
        await fire(session, service.base, reply, service)
        once = Result(
            f"once (fresh proc, {args.processes} at a time)",
            ONCE,
            args.baseline_events,
            args.concurrency,
        )
        await fire(session, service.base, once, service)
    return [reply, once]


# -- reporting ------------------------------------------------------------------------------------
def pool_counters(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {}
    keys = ("fired", "delivered", "succeeded", "failed", "restarts", "queued", "last_error")
    workers = status.get("workers", {})
    return {
        name: {k: workers[name].get(k) for k in keys} for name in (REPLY, ONCE) if name in workers
    }


def print_table(results: list[Result], ratio: float, counters: dict[str, Any]) -> None:
    header = f"{'mode':<32} {'events':>7} {'errors':>7} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.mode:<32} {r.events:>7} {sum(r.errors.values()):>7} {r.rate:>9.1f} "
            f"{r.percentile_ms(50):>8.1f} {r.percentile_ms(99):>8.1f}"
        )
    print(f"\nwarm/baseline throughput: {ratio:.1f}x (target >= 20x)")
    for r in results:
        per_event = r.service_cpu / r.ok * 1000 if r.ok else math.nan
        print(
            f"{r.worker}: wall {r.wall:.2f} s, {len(r.pids)} worker pid(s), "
            f"p90 {r.percentile_ms(90):.1f} ms, max {r.percentile_ms(100):.1f} ms, "
            f"CPU: service {r.service_cpu:.2f} s ({per_event:.2f} ms/event), "
            f"this client {r.client_cpu:.2f} s"
        )
        for kind, count in r.errors.most_common(5):
            print(f"  {count} x {kind}")
    for name, values in counters.items():
        print(f"service counters {name}: {values}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--events",
        type=int,
        default=2000,
        metavar="N",
        help="events fired at the warm reply worker (default 2000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        metavar="C",
        help="concurrent HTTP requests (default 32)",
    )
    add_couchdb_url(parser)
    parser.add_argument(
        "--baseline-events",
        type=int,
        default=200,
        metavar="M",
        help="events fired at the fresh-process once worker (default 200)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="processes of each worker (default 2)"
    )
    parser.add_argument(
        "--durable",
        action="store_true",
        help="store activation records too (default: off, to measure dispatch alone)",
    )
    parser.add_argument(
        "--interpreter",
        default=sys.executable,
        help="the Python that runs the workers (default: this one)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of a table"
    )
    args = parser.parse_args(argv)
    if min(args.events, args.concurrency, args.baseline_events, args.processes) < 1:
        parser.error(
            "--events, --concurrency, --baseline-events and --processes must be at least 1"
        )

    try:
        with tempfile.TemporaryDirectory(prefix="couchdb-events-bench-") as scratch_dir:
            scratch = Path(scratch_dir)
            with Target(args.couchdb_url) as couch:
                print(f"server: {couch.label}", file=sys.stderr)
                deploy(couch, args.processes)
                # Dispatch alone: activation records are bench.durable's subject.
                settings = {"durable": "true" if args.durable else "false"}
                service = Service(
                    couch.url,
                    scratch,
                    args.interpreter,
                    couch.db(EVENTS_DB),
                    couch.db(WORKERS_DB),
                    (REPLY, ONCE),
                    settings=settings,
                )
                try:
                    service.start()
                    results = asyncio.run(run_load(args, service))
                    counters = pool_counters(service.status())
                finally:
                    exit_status = service.stop()  # also on Ctrl-C and errors
                problems = service.log_problems()
    except KeyboardInterrupt:
        print("bench.dispatch: interrupted; service and PouchDB Server stopped", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, urllib.error.URLError) as exc:
        print(f"bench.dispatch: {exc}", file=sys.stderr)
        return 1
    reply, once = results
    ratio = reply.rate / once.rate if once.rate > 0 else math.inf
    if args.json:
        summary = {
            "results": [r.summary() for r in results],
            "ratio": round(ratio, 2) if math.isfinite(ratio) else None,
            "service_ready_s": round(service.ready_after, 3),
            "service_counters": counters,
            "service_log_problems": problems[:20],
            "service_exit_status": exit_status,
        }
        print(json.dumps(summary, indent=2))
    else:
        print_table(results, ratio, counters)
        print(f"service answered {service.ready_after:.2f} s after it was started")
        print(f"service exit status after SIGTERM: {exit_status}")
        if problems:
            print(f"service log: {len(problems)} warning/error line(s), first ones:")
            for line in problems[:5]:
                print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
