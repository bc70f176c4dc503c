"""What the runner saw: counters, histograms and the last minutes, for ``/_status``'s ``recent``
section and for ``/_metrics``.

Plain Python, touched by the event loop only (no locks), a few dict and list increments per run:

* final runs counted by (event, worker, state), whatever the state is called;
* fixed-bucket histograms (``Histogram``) of run duration (the last attempt's start to the final
  state) and queue wait (accepted, or a delayed fire's time, to the first start) per worker, of
  accept latency (the time a fire spends storing its records, per fire), and of the documents in
  each ``_bulk_docs`` write of the activation records;
* one bucket per second of fired, succeeded, failed and timeout runs over the last ``SECONDS``
  (``Series``, a ring over time);
* latency samples of the last ``SAMPLE_SECONDS``, at most ``MAX_SAMPLES`` each (``Samples``),
  for p50 and p99.

Labels are only event and worker names (documents) and states: never a run id.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

from ..model.message import Message
from .records import BATCH, iso

# Seconds: from a millisecond (an accept that found the writer free) to a long worker run.
TIME_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
BATCH_BUCKETS = tuple(float(2**n) for n in range(BATCH.bit_length() + 1))  # 1, 2 ... 512
SECONDS = 300  # per-second buckets kept
SAMPLE_SECONDS = 60.0  # latency samples kept for percentiles
MAX_SAMPLES = 10_000  # per kind: a burst beyond it keeps the newest
MAX_OPEN = 100_000  # start times kept for runs not yet final (bounded, whatever happens)
SERIES = ("fired", "succeeded", "failed", "timeout")
_INDEX = {name: index for index, name in enumerate(SERIES, 1)}


class Histogram:
    """Counts per bucket (a value goes to the first bound at or above it, else to +Inf)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, values at or below it), the last bound ``inf``: Prometheus' buckets."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class Series:
    """Per-second counts of ``SERIES`` over the last ``seconds``: slot ``second % seconds``
    holds that second's counts, cleared when a later second comes to it."""

    def __init__(self, seconds: int = SECONDS) -> None:
        self.seconds = seconds
        self._slots = [[-1] + [0] * len(SERIES) for _ in range(seconds)]

    def add(self, now: float, name: str, count: int = 1) -> None:
        second = int(now)
        slot = self._slots[second % self.seconds]
        if slot[0] != second:
            slot[:] = [second] + [0] * len(SERIES)
        slot[_INDEX[name]] += count

    def window(self, now: float) -> dict[str, list[int]]:
        """Each series' counts for the ``seconds`` seconds up to ``now``'s, oldest first."""
        out: dict[str, list[int]] = {name: [] for name in SERIES}
        end = int(now)
        for second in range(end - self.seconds + 1, end + 1):
            slot = self._slots[second % self.seconds]
            for name, index in _INDEX.items():
                out[name].append(slot[index] if slot[0] == second else 0)
        return out


class Samples:
    """(time, value) of the last ``SAMPLE_SECONDS``, at most ``MAX_SAMPLES``."""

    def __init__(self, keep: float = SAMPLE_SECONDS, most: int = MAX_SAMPLES) -> None:
        self.keep = keep
        self._values: deque[tuple[float, float]] = deque(maxlen=most)

    def add(self, now: float, value: float) -> None:
        self._values.append((now, value))

    def summary(self, now: float) -> dict[str, Any]:
        """p50 and p99 (nearest rank) in milliseconds, and how many; None without samples."""
        values = self._values
        while values and values[0][0] < now - self.keep:
            values.popleft()
        ordered = sorted(value for _t, value in values)
        return {
            "p50": _rank(ordered, 0.50),
            "p99": _rank(ordered, 0.99),
            "count": len(ordered),
        }


def _rank(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 3)


class Telemetry:
    """The runner's (``Runner.telemetry``); ``clock`` gives epoch seconds (tests step it)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.runs: dict[tuple[str, str, str], int] = {}
        self.run_duration: dict[str, Histogram] = {}
        self.queue_wait: dict[str, Histogram] = {}
        self.accept_latency = Histogram(TIME_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.series = Series()
        self.samples = {"accept": Samples(), "queue_wait": Samples(), "run": Samples()}
        self._started: dict[str, float] = {}  # run id -> its last start, until it is final

    def fired(self, runs: int, since: float) -> None:
        """``runs`` runs of one fire were accepted, their records stored from ``since`` on."""
        if not runs:
            return
        now = self.clock()
        latency = max(0.0, now - since)
        self.accept_latency.observe(latency)
        self.samples["accept"].add(now, latency)
        self.series.add(now, "fired", runs)

    def started(self, message: Message) -> None:
        now = self.clock()
        if message.id not in self._started:  # its first start here: it waited until now
            if len(self._started) >= MAX_OPEN:
                self._started.clear()
            wait = max(0.0, now - max(message.accepted, message.run_at or 0.0))
            _histogram(self.queue_wait, message.worker).observe(wait)
            self.samples["queue_wait"].add(now, wait)
        self._started[message.id] = now

    def final(self, message: Message, state: str) -> None:
        now = self.clock()
        key = (message.event, message.worker, state)
        self.runs[key] = self.runs.get(key, 0) + 1
        if state in _INDEX:
            self.series.add(now, state)
        started = self._started.pop(message.id, None)
        if started is not None:
            duration = max(0.0, now - started)
            _histogram(self.run_duration, message.worker).observe(duration)
            self.samples["run"].add(now, duration)

    def wrote(self, documents: int) -> None:
        """One ``_bulk_docs`` request of the activation records, of ``documents``."""
        self.batch_size.observe(documents)

    def recent(self) -> dict[str, Any]:
        """The status document's ``recent`` section."""
        now = self.clock()
        return {
            "interval": 1,
            "seconds": self.series.seconds,
            "end": iso(float(int(now))),
            "series": self.series.window(now),
            "latency_ms": {name: s.summary(now) for name, s in self.samples.items()},
        }


def _histogram(table: dict[str, Histogram], worker: str) -> Histogram:
    found = table.get(worker)
    if found is None:
        found = table[worker] = Histogram(TIME_BUCKETS)
    return found
