"""``GET /_events/_metrics``: Prometheus' text exposition format, built with prometheus_client
(imported only when this route is first used), from the runner's telemetry
(``runs.telemetry``) and the status document.

One registry per service (never prometheus_client's global one), holding one collector that
reads both at each scrape. Every name starts with ``couchdb_events_``; labels are event,
worker, trigger names (documents), states, and the daemon's version and host: never a run id.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from ..runs.telemetry import Histogram, Telemetry
from ..workers.states import ProcessState
from .answer import Answer, raw_answer

# The text format of this output (0.0.4; prometheus_client's CONTENT_TYPE_LATEST up to 0.21).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "couchdb_events_"


class Metrics:
    """The service's registry and the answer to a scrape."""

    def __init__(self, telemetry: Telemetry, status: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EventsCollector(telemetry, status))

    def answer(self) -> Answer:
        return raw_answer(200, generate_latest(self.registry), CONTENT_TYPE)


class EventsCollector(Collector):
    def __init__(self, telemetry: Telemetry, status: Callable[[], dict[str, Any]]) -> None:
        self.telemetry = telemetry
        self.status = status

    def collect(self) -> Iterator[Metric]:
        yield from self._runs()
        yield from self._from_status(self.status())

    def _runs(self) -> Iterator[Metric]:
        telemetry = self.telemetry
        runs = CounterMetricFamily(
            PREFIX + "runs", "Runs ended, by event, worker and final state.",
            labels=["event", "worker", "state"],
        )  # fmt: skip
        for (event, worker, state), count in sorted(telemetry.runs.items()):
            runs.add_metric([event, worker, state], count)
        yield runs
        yield _histograms(
            "run_duration_seconds",
            "Seconds from a run's (last attempt's) start to its final state.",
            telemetry.run_duration,
        )
        yield _histograms(
            "queue_wait_seconds",
            "Seconds from a run's acceptance (or a delayed fire's time) to its first start.",
            telemetry.queue_wait,
        )
        yield _histogram(
            "accept_latency_seconds",
            "Seconds a fire spent accepting its runs (storing their activation records).",
            telemetry.accept_latency,
        )
        yield _histogram(
            "activation_batch_size",
            "Activation records per _bulk_docs write.",
            telemetry.batch_size,
        )

    def _from_status(self, status: dict[str, Any]) -> Iterator[Metric]:
        daemon = status.get("couchdb_events", {})
        info = InfoMetricFamily(PREFIX[:-1], "The daemon's version and host.")
        info.add_metric(
            [], {"version": str(daemon.get("version")), "host": str(daemon.get("host"))}
        )
        yield info
        yield _gauge("uptime_seconds", "Seconds since the daemon started.", daemon.get("uptime"))
        yield _gauge(
            "couchdb_connected",
            "1 while every feed of CouchDB is connected, else 0.",
            1 if daemon.get("couchdb_connected") else 0,
        )
        yield from _workers(status.get("workers", {}))
        activations = status.get("activations", {})
        writes = CounterMetricFamily(
            PREFIX + "activation_writes", "_bulk_docs requests writing activation records."
        )
        writes.add_metric([], activations.get("writes", 0))
        yield writes
        yield _gauge(
            "activation_backlog",
            "Activation record writes waiting for the writer.",
            activations.get("backlog", 0),
        )
        lag = GaugeMetricFamily(
            PREFIX + "changes_lag",
            "Changes a changes trigger has still to fire (while this daemon holds it).",
            labels=["trigger"],
        )
        for trigger, state in sorted(status.get("changes", {}).items()):
            if isinstance(state, dict) and isinstance(state.get("lag"), int):
                lag.add_metric([trigger], state["lag"])
        yield lag
        next_fire = GaugeMetricFamily(
            PREFIX + "schedule_next_fire_seconds",
            "Seconds until a schedule's next fire (negative: overdue).",
            labels=["event"],
        )
        now = time.time()
        for event, schedule in sorted(status.get("schedules", {}).items()):
            when = _epoch(schedule.get("next_fire")) if isinstance(schedule, dict) else None
            if when is not None:
                next_fire.add_metric([event], round(when - now, 3))
        yield next_fire


def _workers(workers: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        PREFIX + "queue_depth", "Runs queued for a worker, not yet started.", labels=["worker"]
    )
    processes = GaugeMetricFamily(
        PREFIX + "processes", "A worker's processes, by state.", labels=["worker", "state"]
    )
    rss = GaugeMetricFamily(
        PREFIX + "worker_rss_bytes",
        "Resident memory of a worker's processes (with their children).",
        labels=["worker"],
    )
    restarts = CounterMetricFamily(
        PREFIX + "worker_restarts", "A worker's process restarts.", labels=["worker"]
    )
    timeouts = CounterMetricFamily(
        PREFIX + "worker_timeouts", "A worker's runs that timed out.", labels=["worker"]
    )
    for name, worker in sorted(workers.items()):
        depth.add_metric([name], worker.get("queued", 0))
        states = dict.fromkeys((state.value for state in ProcessState), 0)
        memory = 0
        for process in worker.get("processes", []):
            state = str(process.get("state"))
            states[state] = states.get(state, 0) + 1
            memory += process.get("rss") or 0
        for state, count in states.items():
            processes.add_metric([name, state], count)
        rss.add_metric([name], memory)
        restarts.add_metric([name], worker.get("restarts", 0))
        timeouts.add_metric([name], worker.get("timeouts", 0))
    yield from (depth, processes, rss, restarts, timeouts)


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    family = HistogramMetricFamily(PREFIX + name, documentation)
    family.add_metric([], _buckets(histogram), histogram.sum)
    return family


def _histograms(name: str, documentation: str, table: dict[str, Histogram]) -> Metric:
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=["worker"])
    for worker, histogram in sorted(table.items()):
        family.add_metric([worker], _buckets(histogram), histogram.sum)
    return family


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [
        ("+Inf" if math.isinf(bound) else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]


def _gauge(name: str, documentation: str, value: Any) -> Metric:
    family = GaugeMetricFamily(PREFIX + name, documentation)
    family.add_metric([], float(value or 0))
    return family


def _epoch(text: Any) -> float | None:
    """An ISO 8601 time of the status (``2026-11-28T23:59:59.123Z``) as epoch seconds."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
