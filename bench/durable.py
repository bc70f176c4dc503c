"""Durable against non-durable firing: what storing an activation record before the 202 costs.

One run starts an in-memory PouchDB Server, deploys a ``reply`` Python worker and an event, then
starts ``couchdb-events serve`` once per mode, one after the other, with ``durable = true`` and
``durable = false``, and fires ``--events`` events at each over HTTP (no ``wait``) from
``--concurrency`` concurrent requests. For each mode it reports

* acceptance: requests answered 202 per second, and p50/p99 of request sent to 202 read;
* end to end: the time from the first request until every accepted run has a final state (the
  worker's counters in ``/_events/_status``), and for ``durable`` also until every activation
  record is stored in a final state;
* the ``_bulk_docs`` writes of the activation records and their mean batch size;
* the ratios durable/non-durable: of runs finished per second (the headline, checked against
  the 1/3 target) and of 202s per second (a non-durable 202 only queues the message).

    python -m bench.durable [--events 3000] [--concurrency 64] [--processes 2] [--json]

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
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as a script: python bench/durable.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Service,
    Target,
    add_couchdb_url,
    couch_request,
    cpu_seconds,
    percentile_ms,
    put_event,
    put_worker,
)

EVENTS_DB = "events"  # after the target's prefix
WORKERS_DB = "workers"
WORKER = "bench_durable"
WAIT = 30
SETTLE_TIMEOUT = 120.0  # seconds to wait for the runs to finish after the last 202
POLL = 0.02  # seconds between status polls while waiting for the runs
QUIET = 0.2  # seconds without a write before the records are read back
# Targets on a real CouchDB 3.5 (two cores shared by everything): durable runs finished per
# second at 64 clients, the p50 of one client's durable fire, non-durable runs finished per
# second at 64 clients.
TARGET_DURABLE = (64, 1500.0)
TARGET_ONE_P50_MS = 8.0
TARGET_PLAIN = (64, 5000.0)
FINAL_STATES = frozenset({"succeeded", "failed", "timeout", "lost", "rejected"})


# -- setting up ---------------------------------------------------------------------------------
def deploy(target: Target, processes: int, max_queue: int, mode: str = "reply") -> None:
    """The two databases, the worker (``reply``: a run ends with its answer; ``stream``: once
    its message is written) and its event."""
    for db in (EVENTS_DB, WORKERS_DB):
        couch_request("PUT", f"{target.url}{target.db(db)}")
    workers, events = target.db(WORKERS_DB), target.db(EVENTS_DB)
    put_worker(target.url, workers, WORKER, mode, processes, max_queue=max_queue)
    put_event(target.url, events, WORKER, "/bench/durable", [WORKER])


def unsettled_records(couch_url: str, prefix: str, ids: list[str]) -> int | None:
    """How many of the activation records ``ids`` are not stored in a final state yet, looked
    up by id in every activations database; None when CouchDB does not answer."""
    try:
        names = couch_request("GET", f"{couch_url}_all_dbs")
        final: set[str] = set()
        for db in names:
            if not (isinstance(db, str) and db.startswith(prefix)):
                continue
            url = f"{couch_url}{urllib.parse.quote(db)}/_all_docs?include_docs=true"
            for row in couch_request("POST", url, {"keys": ids}).get("rows", []):
                doc = row.get("doc") or {}
                if doc.get("state") in FINAL_STATES:
                    final.add(str(doc["_id"]))
        return len(set(ids) - final)
    except (OSError, ValueError, KeyError, AttributeError):
        return None


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Result:
    mode: str
    durable: bool
    events: int
    concurrency: int
    wall: float = 0.0  # first request sent to last answer read
    latencies: list[float] = field(default_factory=list)  # seconds, 202 answers only
    run_ids: list[str] = field(default_factory=list)  # of the 202 answers
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    finished_after: float = math.nan  # first request to every accepted run in a final state
    stored_after: float = math.nan  # ... and every activation record stored as final (durable)
    succeeded: int = 0
    failed: int = 0
    writes: int = 0  # _bulk_docs requests during the measurement
    written: int = 0  # documents they wrote
    backlog_max: int = 0  # records waiting for the writer, highest seen after the last 202
    cpu: dict[str, float] = field(default_factory=dict)  # seconds by process, while firing
    cpu_total: dict[str, float] = field(default_factory=dict)  # ... until everything settled
    ready_after: float = math.nan
    exit_status: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Requests answered 202 per second."""
        return self.accepted / self.wall if self.wall > 0 else 0.0

    @property
    def finished_rate(self) -> float:
        """Runs finished per second, end to end."""
        done = self.succeeded + self.failed
        return done / self.finished_after if self.finished_after > 0 else 0.0

    @property
    def batch(self) -> float:
        return self.written / self.writes if self.writes else math.nan

    def summary(self) -> dict[str, Any]:
        def num(value: float, digits: int = 2) -> float | None:
            return round(value, digits) if math.isfinite(value) else None

        return {
            "mode": self.mode,
            "durable": self.durable,
            "events": self.events,
            "concurrency": self.concurrency,
            "accepted": self.accepted,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "wall_s": num(self.wall, 3),
            "accepted_per_s": num(self.rate, 1),
            "p50_ms": num(percentile_ms(self.latencies, 50)),
            "p90_ms": num(percentile_ms(self.latencies, 90)),
            "p99_ms": num(percentile_ms(self.latencies, 99)),
            "max_ms": num(percentile_ms(self.latencies, 100)),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "finished_after_s": num(self.finished_after, 3),
            "finished_per_s": num(self.finished_rate, 1),
            "records_stored_after_s": num(self.stored_after, 3),
            "bulk_docs_writes": self.writes,
            "bulk_docs_written": self.written,
            "mean_batch": num(self.batch, 1),
            "writer_backlog_max": self.backlog_max,
            "cpu_firing_s": {name: num(value) for name, value in self.cpu.items()},
            "cpu_until_settled_s": {name: num(value) for name, value in self.cpu_total.items()},
            "service_ready_s": num(self.ready_after, 3),
            "service_exit_status": self.exit_status,
            "service_log_problems": self.problems[:20],
        }


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection for GET requests, one at a time: the load generator.

    It shares the two cores with what it measures, so it is made cheap: a request is bytes made
    once, an answer is read by its ``Content-Length`` (what the service always sends) with no
    more parsing than that. The request carries the headers aiohttp's client sends, so that the
    activation records (which keep the request's headers) are as large as with aiohttp."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(lambda: cls(loop), host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionResetError(str(exc) if exc else "closed by the server"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self._buffer[:end].decode("latin-1").split("\r\n")
        length = None
        try:
            status = int(head[0].split(" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self.closed = True
        except (IndexError, ValueError):
            self._fail(ValueError(f"unreadable answer head {head[0][:60]!r}"))
            return
        if length is None:
            self._fail(ValueError("an answer without Content-Length"))
            return
        if len(self._buffer) < end + 4 + length:
            return
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        waiter.set_result((status, body))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def _timed_out(self) -> None:
        self._fail(asyncio.TimeoutError(f"no answer within {WAIT + 30} s"))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        """Send one request (``data``, made by ``get_request``); its status and body."""
        assert self._transport is not None
        waiter: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(WAIT + 30, self._timed_out)
        self._transport.write(data)
        try:
            return await waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def get_request(base: str, path: str) -> bytes:
    """``GET base + path`` as bytes, with the headers of aiohttp's client."""
    url = urllib.parse.urlsplit(base + path)
    target = url.path + (f"?{url.query}" if url.query else "")
    return (
        f"GET {target} HTTP/1.1\r\nHost: {url.netloc}\r\nAccept: */*\r\n"
        f"Accept-Encoding: gzip, deflate\r\nUser-Agent: {aiohttp.http.SERVER_SOFTWARE}\r\n\r\n"
    ).encode("latin-1")


class Client:
    """Keep-alive connections to the service, as many as requests at once; a connection that
    failed or was closed is replaced by a new one for the next request."""

    def __init__(self, service: Service) -> None:
        url = urllib.parse.urlsplit(service.base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.base = service.base
        self.idle: list[Connection] = []

    async def get(self, data: bytes) -> tuple[int, bytes]:
        """One request on an idle connection (a new one when none is idle)."""
        while self.idle and self.idle[-1].closed:
            self.idle.pop()
        connection = self.idle.pop() if self.idle else await Connection.open(self.host, self.port)
        try:
            answer = await connection.request(data)
        finally:
            if connection.closed:
                connection.close()
            else:
                self.idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


async def fire_one(client: Client, data: bytes) -> tuple[str | None, str]:
    """One event without waiting for its run: (None, run id) for a 202, else (error kind, "")."""
    try:
        status, body = await client.get(data)
    except (OSError, ValueError, asyncio.TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:160], ""
    if status != 202:
        text = body[:120].decode(errors="replace").strip()
        return f"HTTP {status}: {text}", ""
    try:
        runs = json.loads(body)["runs"]
        if len(runs) != 1 or runs[0]["worker"] != WORKER:
            return f"unexpected runs: {runs!r}"[:160], ""
        return None, str(runs[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unreadable answer ({type(exc).__name__}: {exc})"[:160], ""


async def fire(client: Client, events: int, concurrency: int, result: Result) -> None:
    """``events`` requests from ``concurrency`` clients; latencies and errors into ``result``."""
    remaining = iter(range(events))
    data = get_request(client.base, WORKER)

    async def one_client() -> None:
        for _ in remaining:  # the iterator is shared: each request is taken exactly once
            sent = time.perf_counter()
            error, run_id = await fire_one(client, data)
            if error is None:
                result.latencies.append(time.perf_counter() - sent)
                result.run_ids.append(run_id)
            else:
                result.errors[error] += 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))


async def warm_up(client: Client, requests: int) -> None:
    """Start the worker's processes and open the connections: ``requests`` runs, waited for."""
    data = get_request(client.base, f"{WORKER}?wait={WAIT}")
    errors: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        try:
            status, _body = await client.get(data)
            if status != 200:
                errors[f"HTTP {status}"] += 1
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            errors[type(exc).__name__] += 1

    await asyncio.gather(*(one() for _ in range(requests)))
    if errors:
        print(f"warm-up errors: {dict(errors)}", file=sys.stderr)


def counters(
    status: dict[str, Any] | None, stream: bool = False
) -> tuple[int, int, dict[str, Any]]:
    """(finished, failed) of the worker and the activations part of a status; a stream
    worker's run is finished once its message is written (``delivered``)."""
    if status is None:
        raise RuntimeError("couchdb-events did not answer /_events/_status")
    worker = status.get("workers", {}).get(WORKER, {})
    activations: dict[str, Any] = status.get("activations", {})
    done = int(worker.get("delivered" if stream else "succeeded", 0))
    return done, int(worker.get("failed", 0)), activations


def cpu_snapshot(service: Service, couch_pid: int) -> dict[str, float]:
    """CPU seconds so far of each process taking part (workers: those running now)."""
    return {
        "service": service.cpu_seconds(),
        "CouchDB": cpu_seconds(couch_pid),
        "workers": service.workers_cpu_seconds(),
        "client": time.process_time(),
    }


def cpu_since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


async def measure(
    args: argparse.Namespace, service: Service, target: Target, result: Result
) -> None:
    couch_url, couch_pid = target.url, target.pid
    stream = args.mode == "stream"
    activations_prefix = target.db(f"{EVENTS_DB}_activations_")  # the default, monthly
    loop = asyncio.get_running_loop()
    client = Client(service)
    try:
        await warm_up(client, max(4 * args.processes, result.concurrency))
        succeeded0, failed0, activations0 = counters(
            await loop.run_in_executor(None, service.status), stream
        )
        cpu0 = cpu_snapshot(service, couch_pid)
        started = time.perf_counter()
        await fire(client, result.events, result.concurrency, result)
        result.wall = time.perf_counter() - started
        result.cpu = cpu_since(cpu0, cpu_snapshot(service, couch_pid))
    finally:
        client.close()

    # End to end: wait until every accepted run has its outcome (and, durable, its record).
    expected = result.accepted
    deadline = time.perf_counter() + SETTLE_TIMEOUT
    activations: dict[str, Any] = activations0
    writes_seen, writes_since = -1, math.nan  # the writer's count, first seen at (s from start)
    while time.perf_counter() < deadline:
        status = await loop.run_in_executor(None, service.status)
        if status is None:  # busy for more than the poll's timeout: ask again
            continue
        now = time.perf_counter() - started
        succeeded, failed, activations = counters(status, stream)
        result.succeeded, result.failed = succeeded - succeeded0, failed - failed0
        backlog = int(activations.get("backlog", 0))
        result.backlog_max = max(result.backlog_max, backlog)
        if int(activations.get("writes", 0)) != writes_seen:
            writes_seen, writes_since = int(activations.get("writes", 0)), now
        if math.isnan(result.finished_after) and result.succeeded + result.failed >= expected:
            result.finished_after = now
        if math.isnan(result.finished_after):
            await asyncio.sleep(POLL)
            continue
        if not result.durable:
            result.cpu_total = cpu_since(cpu0, cpu_snapshot(service, couch_pid))
            break
        if backlog == 0 and now - writes_since >= QUIET:
            # Reading the records back is slow on PouchDB Server (a lookup per id), so it is
            # done once the writer has been idle for a while, and left out of the figures: the
            # records count as stored from the first poll that saw the writer's last write.
            cpu = cpu_since(cpu0, cpu_snapshot(service, couch_pid))
            left = await loop.run_in_executor(
                None, unsettled_records, couch_url, activations_prefix, result.run_ids
            )
            again = await loop.run_in_executor(None, service.status)
            writes_now = counters(again)[2].get("writes") if again is not None else None
            if left == 0 and writes_now == writes_seen:
                result.stored_after = max(writes_since, result.finished_after)
                result.cpu_total = cpu
                break
        await asyncio.sleep(POLL)
    else:
        result.errors[f"not settled within {SETTLE_TIMEOUT:g} s after the last answer"] += 1
        result.cpu_total = cpu_since(cpu0, cpu_snapshot(service, couch_pid))
    _, _, activations = counters(await loop.run_in_executor(None, service.status))
    result.writes = int(activations.get("writes", 0)) - int(activations0.get("writes", 0))
    result.written = int(activations.get("written", 0)) - int(activations0.get("written", 0))


def run_mode(
    args: argparse.Namespace, target: Target, scratch: Path, durable: bool, clients: int
) -> Result:
    mode = "durable" if durable else "non-durable"
    events = args.events if clients >= 8 else max(1, args.events // 3)  # one client is slow
    result = Result(mode, durable, events, clients)
    service = Service(
        target.url,
        scratch,
        args.interpreter,
        target.db(EVENTS_DB),
        target.db(WORKERS_DB),
        (WORKER,),
        settings={"durable": "true" if durable else "false"},
        name=f"{mode}-{clients}",
    )
    try:
        service.start()
        result.ready_after = service.ready_after
        asyncio.run(measure(args, service, target, result))
    finally:
        result.exit_status = service.stop()  # also on Ctrl-C and errors
    result.problems = service.log_problems()
    return result


def measure_couchdb_events(
    couchdb_url: str | None,
    events: int,
    clients: int,
    processes: int,
    durable: bool = True,
    mode: str = "reply",
) -> dict[str, Any]:
    """One mode at one number of clients, for comparisons (``versus_celery``): the figures as a
    dictionary with the keys every system there reports."""
    args = argparse.Namespace(
        events=events, processes=processes, interpreter=sys.executable, max_queue=None, mode=mode
    )
    args.max_queue = max(events, 1000)
    with (
        tempfile.TemporaryDirectory(prefix="couchdb-events-bench-") as scratch_dir,
        Target(couchdb_url) as target,
    ):
        deploy(target, processes, args.max_queue, mode)
        result = run_mode(args, target, Path(scratch_dir), durable, clients)
        label = target.label
    return {
        "system": f"couchdb-events {version()}, {result.mode}, on {label}",
        "clients": clients,
        "events": result.events,
        "errors": sum(result.errors.values()),
        "accepted_per_s": result.rate,
        "done_per_s": result.finished_rate,
        "p50_ms": percentile_ms(result.latencies, 50),
        "p99_ms": percentile_ms(result.latencies, 99),
        "cpu_ms_per_run": {
            name: seconds / result.accepted * 1000 if result.accepted else math.nan
            for name, seconds in result.cpu_total.items()
        },
        "wall_s": result.wall,
    }


def version() -> str:
    from couchdb_events import __version__

    return str(__version__)


# -- reporting ------------------------------------------------------------------------------------
def cpu_line(cpu: dict[str, float], events: int) -> str:
    """CPU seconds by process as milliseconds per event."""
    return ", ".join(
        f"{name} {seconds / events * 1000 if events else math.nan:.2f}"
        for name, seconds in cpu.items()
    )


def targets(results: list[Result]) -> list[tuple[str, float, bool]]:
    """(what, figure, met) for each target a result of this run speaks to."""
    found = []
    for r in results:
        if r.durable and r.concurrency == TARGET_DURABLE[0]:
            found.append(
                (f"durable, {r.concurrency} clients: runs finished/s >= {TARGET_DURABLE[1]:.0f}",
                 r.finished_rate, r.finished_rate >= TARGET_DURABLE[1])
            )  # fmt: skip
        if r.durable and r.concurrency == 1:
            p50 = percentile_ms(r.latencies, 50)
            found.append(
                (f"durable, 1 client: p50 of a fire <= {TARGET_ONE_P50_MS:g} ms", p50,
                 p50 <= TARGET_ONE_P50_MS)
            )  # fmt: skip
        if not r.durable and r.concurrency == TARGET_PLAIN[0]:
            found.append(
                (f"non-durable, {r.concurrency} clients: runs finished/s >= {TARGET_PLAIN[1]:.0f}",
                 r.finished_rate, r.finished_rate >= TARGET_PLAIN[1])
            )  # fmt: skip
    return found


def print_report(results: list[Result], label: str) -> None:
    print(f"server: {label}")
    header = (
        f"{'mode':<12} {'clients':>7} {'events':>6} {'errors':>6} {'accepted/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'done s':>7} {'done/s':>7} {'stored s':>8} "
        f"{'writes':>6} {'batch':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        stored = f"{r.stored_after:>8.2f}" if r.durable else f"{'-':>8}"
        writes = f"{r.writes:>6} {r.batch:>6.1f}" if r.durable else f"{'-':>6} {'-':>6}"
        print(
            f"{r.mode:<12} {r.concurrency:>7} {r.events:>6} {sum(r.errors.values()):>6} "
            f"{r.rate:>10.1f} {percentile_ms(r.latencies, 50):>7.1f} "
            f"{percentile_ms(r.latencies, 99):>7.1f} {r.finished_after:>7.2f} "
            f"{r.finished_rate:>7.1f} {stored} {writes}"
        )
    for r in results:
        print(
            f"\n{r.mode}, {r.concurrency} clients: wall {r.wall:.2f} s, "
            f"p90 {percentile_ms(r.latencies, 90):.1f} ms, "
            f"max {percentile_ms(r.latencies, 100):.1f} ms; runs succeeded {r.succeeded}, "
            f"failed {r.failed}"
        )
        if r.durable:
            per_run = r.written / r.accepted if r.accepted else math.nan
            print(
                f"  _bulk_docs: {r.writes} writes, {r.written} documents "
                f"({r.batch:.1f} per write, {per_run:.2f} per run), "
                f"writer backlog after the last 202 up to {r.backlog_max}"
            )
        print(f"  CPU while firing, ms per accepted event: {cpu_line(r.cpu, r.accepted)}")
        busy = math.fsum(v for v in r.cpu.values() if math.isfinite(v)) / r.wall if r.wall else 0
        print(f"    cores busy while firing: {busy:.2f}")
        print(f"  CPU until settled, ms per run: {cpu_line(r.cpu_total, r.accepted)}")
        for kind, count in r.errors.most_common(5):
            print(f"  {count} x {kind}")
        print(
            f"  service ready after {r.ready_after:.2f} s, exit status after SIGTERM "
            f"{r.exit_status}"
        )
        for line in r.problems[:5]:
            print(f"  log: {line}")
    found = targets(results)
    if found:
        print()
    for what, figure, met in found:
        print(f"target {what}: {figure:.1f}, {'met' if met else 'MISSED'}")


def client_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers of at least 1")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.durable", description=__doc__.split("\n")[0]
    )
    add_couchdb_url(parser)
    parser.add_argument(
        "--events", type=int, default=3000, metavar="N",
        help="events per mode (default 3000; a third of that with fewer than 8 clients)",
    )  # fmt: skip
    parser.add_argument(
        "--clients",
        type=client_counts,
        default=[64],
        metavar="C[,C...]",
        help="concurrent clients of the durable runs, each waiting for its 202 (default 64); "
        "the non-durable run uses the largest",
    )
    parser.add_argument("--concurrency", type=client_counts, dest="clients", help=argparse.SUPPRESS)
    parser.add_argument("--durable-only", action="store_true", help="leave out the non-durable run")
    parser.add_argument(
        "--processes", type=int, default=2, help="processes of the worker (default 2)"
    )
    parser.add_argument(
        "--mode",
        choices=("reply", "stream"),
        default="reply",
        help="the worker's mode: reply (a run ends when the worker answers it, the default) "
        "or stream (a run ends once its message is written to the worker)",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=None,
        metavar="Q",
        help="max_queue of the worker (default: --events, at least 1000, so that no request "
        "meets a full queue)",
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
    if min(args.events, args.processes) < 1:
        parser.error("--events and --processes must be at least 1")
    max_queue = args.max_queue if args.max_queue is not None else max(args.events, 1000)
    args.max_queue = max_queue

    results: list[Result] = []
    label = ""
    runs = [(True, clients) for clients in args.clients]
    if not args.durable_only:
        runs.append((False, max(args.clients)))
    try:
        with tempfile.TemporaryDirectory(prefix="couchdb-events-bench-") as scratch_dir:
            scratch = Path(scratch_dir)
            with Target(args.couchdb_url) as target:
                label = target.label
                deploy(target, args.processes, max_queue, args.mode)
                for durable, clients in runs:
                    results.append(run_mode(args, target, scratch, durable, clients))
    except KeyboardInterrupt:
        print("bench.durable: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, urllib.error.URLError) as exc:
        print(f"bench.durable: {exc}", file=sys.stderr)
        return 1
    if args.json:
        summary = {
            "server": label,
            "worker": {"mode": args.mode, "processes": args.processes},
            "results": [r.summary() for r in results],
            "max_queue": max_queue,
            "targets": [
                {"target": what, "figure": round(figure, 2), "met": met}
                for what, figure, met in targets(results)
            ],
        }
        print(json.dumps(summary, indent=2))
    else:
        print_report(results, f"{label}; worker: {args.mode}, {args.processes} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
