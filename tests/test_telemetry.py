"""The runner's telemetry: buckets, percentiles, the per-second ring rolling over time (a clock
the test steps), and what the runner tells it."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from couchdb_events.model.message import Message
from couchdb_events.runs.telemetry import (
    BATCH_BUCKETS,
    MAX_SAMPLES,
    SERIES,
    Histogram,
    Samples,
    Series,
    Telemetry,
)

T0 = 1_800_000_000.0  # a whole second


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def message(run_id: str, worker: str = "w", event: str = "e", **fields: Any) -> Message:
    return Message(id=run_id, event=event, worker=worker, arguments={}, request={}, **fields)


def test_a_value_goes_to_the_first_bound_at_or_above_it() -> None:
    histogram = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 7.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1, 1]
    assert histogram.cumulative() == [(1.0, 2), (2.0, 3), (5.0, 4), (math.inf, 5)]
    assert histogram.count == 5
    assert histogram.sum == 15.0


def test_batch_buckets_reach_a_whole_batch() -> None:
    assert BATCH_BUCKETS[0] == 1.0
    assert BATCH_BUCKETS[-1] >= 500  # records.BATCH


def test_the_series_rolls_over_time() -> None:
    series = Series(seconds=5)
    series.add(T0, "fired", 3)
    series.add(T0 + 0.9, "fired")
    series.add(T0 + 2, "failed")
    window = series.window(T0 + 2)
    assert window["fired"] == [0, 0, 4, 0, 0]  # T0 - 2 .. T0 + 2
    assert window["failed"] == [0, 0, 0, 0, 1]
    assert series.window(T0 + 6)["fired"] == [0, 0, 0, 0, 0]  # T0 is over 5 s ago
    # Five seconds later the slot of T0 holds T0 + 5: the old count is gone, not added to.
    series.add(T0 + 5, "fired")
    window = series.window(T0 + 5)
    assert window["fired"] == [0, 0, 0, 0, 1]  # T0 + 1 .. T0 + 5
    assert window["failed"] == [0, 1, 0, 0, 0]
    assert set(window) == set(SERIES)


def test_a_quiet_ring_gives_zeros_for_every_second() -> None:
    series = Series(seconds=300)
    series.add(T0, "succeeded")
    later = series.window(T0 + 10_000)
    assert later["succeeded"] == [0] * 300


def test_percentiles_by_nearest_rank_over_the_last_minute() -> None:
    samples = Samples()
    for number in range(1, 101):  # 1 ms .. 100 ms
        samples.add(T0, number / 1000)
    assert samples.summary(T0) == {"p50": 50.0, "p99": 99.0, "count": 100}
    samples.add(T0 + 30, 0.5)
    assert samples.summary(T0 + 30)["count"] == 101
    assert samples.summary(T0 + 61) == {"p50": 500.0, "p99": 500.0, "count": 1}
    assert samples.summary(T0 + 200) == {"p50": None, "p99": None, "count": 0}


def test_samples_are_bounded() -> None:
    samples = Samples()
    for number in range(MAX_SAMPLES + 50):
        samples.add(T0, float(number))
    assert samples.summary(T0)["count"] == MAX_SAMPLES


def test_a_run_from_fire_to_final() -> None:
    clock = Clock()
    telemetry = Telemetry(clock)
    run = message("r1", accepted=T0)
    began = clock.now
    clock.now += 0.004
    telemetry.fired(1, began)
    clock.now += 0.5
    telemetry.started(run)
    clock.now += 2.0
    telemetry.final(run, "succeeded")

    assert telemetry.runs == {("e", "w", "succeeded"): 1}
    assert telemetry.accept_latency.count == 1
    assert math.isclose(telemetry.accept_latency.sum, 0.004, abs_tol=1e-6)
    assert math.isclose(telemetry.queue_wait["w"].sum, 0.504, abs_tol=1e-6)
    assert math.isclose(telemetry.run_duration["w"].sum, 2.0)
    recent = telemetry.recent()
    assert recent["interval"] == 1
    assert recent["seconds"] == 300
    assert recent["end"] == "2027-01-15T08:00:02.000Z"
    assert recent["series"]["fired"][-3:] == [1, 0, 0]
    assert recent["series"]["succeeded"][-1] == 1
    assert all(len(values) == 300 for values in recent["series"].values())
    latency = recent["latency_ms"]
    assert latency["accept"] == {"p50": 4.0, "p99": 4.0, "count": 1}
    assert latency["queue_wait"]["p50"] == 504.0
    assert latency["run"] == {"p50": 2000.0, "p99": 2000.0, "count": 1}


def test_a_retried_run_waits_once_and_lasts_its_last_attempt() -> None:
    clock = Clock()
    telemetry = Telemetry(clock)
    run = message("r1", accepted=T0)
    clock.now += 1
    telemetry.started(run)
    clock.now += 11  # the attempt failed (not final: the runner retries it), then its delay
    telemetry.started(run)
    clock.now += 3
    telemetry.final(run, "timeout")
    assert telemetry.queue_wait["w"].count == 1
    assert telemetry.queue_wait["w"].sum == 1.0
    assert telemetry.run_duration["w"].sum == 3.0
    assert telemetry.recent()["series"]["timeout"][-1] == 1


def test_a_delayed_fire_waits_from_its_time() -> None:
    clock = Clock()
    telemetry = Telemetry(clock)
    run = message("r1", accepted=T0, run_at=T0 + 60)
    clock.now = T0 + 60.25
    telemetry.started(run)
    assert telemetry.queue_wait["w"].sum == 0.25


def test_any_state_is_counted_but_only_the_series_states_go_to_the_series() -> None:
    clock = Clock()
    telemetry = Telemetry(clock)
    for number, state in enumerate(("cancelled", "rejected", "lost", "failed", "failed")):
        telemetry.final(message(f"r{number}", worker="x", event="ev"), state)
    assert telemetry.runs == {
        ("ev", "x", "cancelled"): 1,
        ("ev", "x", "rejected"): 1,
        ("ev", "x", "lost"): 1,
        ("ev", "x", "failed"): 2,
    }
    series = telemetry.recent()["series"]
    assert series["failed"][-1] == 2
    assert sum(series["succeeded"]) == 0
    assert telemetry.run_duration == {}  # never started: no duration


def test_an_empty_fire_counts_nothing_and_writes_are_counted() -> None:
    telemetry = Telemetry(Clock())
    telemetry.fired(0, T0)
    assert telemetry.accept_latency.count == 0
    telemetry.wrote(3)
    telemetry.wrote(64)
    assert telemetry.batch_size.count == 2
    assert telemetry.batch_size.sum == 67


def test_the_runner_tells_its_telemetry() -> None:
    async def scenario() -> Telemetry:
        from couchdb_events.config import Config
        from couchdb_events.model.message import Outcome
        from couchdb_events.model.registry import Registry
        from couchdb_events.runs.runner import Runner

        class Supervisor:
            def check(self, spec: Any) -> None:
                pass

            def submit(self, spec: Any, message: Message, force: bool = False) -> None:
                message.started()
                assert message.settle is not None
                message.settle(message, Outcome("succeeded", {"ok": True}))

        config = Config(couchdb_url="http://127.0.0.1:5984/")
        registry = Registry(config, lambda name, spec: None)
        runner = Runner(registry, Supervisor(), None)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        run = message("r1", outcome=loop.create_future())
        await runner.run([(object(), run)])  # type: ignore[list-item]
        return runner.telemetry

    telemetry = asyncio.run(scenario())
    assert telemetry.runs == {("e", "w", "succeeded"): 1}
    assert telemetry.accept_latency.count == 1
    assert telemetry.queue_wait["w"].count == 1
    assert telemetry.run_duration["w"].count == 1
