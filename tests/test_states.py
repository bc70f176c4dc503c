"""The crash-loop policy, driven by an explicit clock: no sleeping."""

from __future__ import annotations

import pytest

from couchdb_events.workers.states import (
    BACKOFF_CAP,
    BACKOFF_FIRST,
    MAX_YOUNG_DEATHS,
    START_SECONDS,
    CrashPolicy,
    PoolState,
    ProcessState,
)

YOUNG = START_SECONDS / 10  # a lifetime short enough to count as dying young


def die_young(policy: CrashPolicy, now: float) -> PoolState:
    return policy.exited(now=now, started=now - YOUNG, expected=False)


def test_constants() -> None:
    assert START_SECONDS == 1.0
    assert MAX_YOUNG_DEATHS == 5
    assert BACKOFF_FIRST == 0.5
    assert BACKOFF_CAP >= BACKOFF_FIRST


def test_states_are_strings() -> None:
    assert ProcessState.IDLE.value == "idle"
    assert isinstance(ProcessState.IDLE, str)
    assert PoolState.FAILED.value == "failed"
    assert [s.value for s in PoolState] == ["ok", "backoff", "failed"]
    assert [s.value for s in ProcessState] == ["starting", "idle", "busy", "stopping", "exited"]


def test_a_new_policy_may_start_at_once() -> None:
    policy = CrashPolicy()
    assert policy.young_deaths == 0
    assert policy.may_start(0.0)


def test_first_young_death_backs_off_half_a_second() -> None:
    policy = CrashPolicy()
    assert die_young(policy, 100.0) is PoolState.BACKOFF
    assert policy.young_deaths == 1
    assert policy.retry_at == 100.5


def test_young_deaths_back_off_doubling_then_fail() -> None:
    policy = CrashPolicy()
    now = 100.0
    for deaths in range(1, MAX_YOUNG_DEATHS):
        assert die_young(policy, now) is PoolState.BACKOFF
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (deaths - 1))
        assert policy.retry_at == now + delay
        assert not policy.may_start(now)
        now = policy.retry_at
        assert policy.may_start(now)
    assert die_young(policy, now) is PoolState.FAILED
    assert policy.young_deaths == MAX_YOUNG_DEATHS


def test_backoff_sequence_doubles_from_half_a_second() -> None:
    policy = CrashPolicy()
    delays = []
    now = 0.0
    while (state := die_young(policy, now)) is PoolState.BACKOFF:
        delays.append(policy.retry_at - now)
        now = policy.retry_at
    assert state is PoolState.FAILED
    assert delays == [0.5, 1.0, 2.0, 4.0]


def test_failed_stays_failed_on_more_young_deaths() -> None:
    policy = CrashPolicy(young_deaths=MAX_YOUNG_DEATHS)
    assert die_young(policy, 10.0) is PoolState.FAILED
    assert policy.young_deaths == MAX_YOUNG_DEATHS + 1


@pytest.mark.parametrize("lived", [0.0, 0.5, START_SECONDS - 0.001])
def test_short_unexpected_exit_is_young(lived: float) -> None:
    policy = CrashPolicy()
    assert policy.exited(now=50.0, started=50.0 - lived, expected=False) is PoolState.BACKOFF


@pytest.mark.parametrize("lived", [START_SECONDS, START_SECONDS + 0.001, 3600.0])
def test_long_lived_process_resets(lived: float) -> None:
    policy = CrashPolicy(young_deaths=MAX_YOUNG_DEATHS - 1, retry_at=70.0)
    assert policy.exited(now=50.0, started=50.0 - lived, expected=False) is PoolState.OK
    assert policy.young_deaths == 0
    assert policy.retry_at == 50.0
    assert policy.may_start(50.0)


@pytest.mark.parametrize("lived", [0.0, 0.01, 10.0])
def test_expected_exit_resets(lived: float) -> None:
    policy = CrashPolicy(young_deaths=MAX_YOUNG_DEATHS - 1, retry_at=70.0)
    assert policy.exited(now=50.0, started=50.0 - lived, expected=True) is PoolState.OK
    assert policy.young_deaths == 0
    assert policy.may_start(50.0)


def test_after_a_reset_backoff_starts_again_at_the_first_delay() -> None:
    policy = CrashPolicy()
    die_young(policy, 0.0)
    die_young(policy, 1.0)
    policy.exited(now=10.0, started=0.0, expected=False)
    assert die_young(policy, 20.0) is PoolState.BACKOFF
    assert policy.retry_at == 20.0 + BACKOFF_FIRST


def test_may_start_respects_retry_at() -> None:
    policy = CrashPolicy(retry_at=10.0)
    assert not policy.may_start(9.999)
    assert policy.may_start(10.0)
    assert policy.may_start(11.0)


def test_healthy_resets_the_count() -> None:
    policy = CrashPolicy()
    die_young(policy, 0.0)
    die_young(policy, 1.0)
    policy.healthy()
    assert policy.young_deaths == 0
    # The count starts again: the next young death backs off by the first delay.
    assert die_young(policy, 5.0) is PoolState.BACKOFF
    assert policy.retry_at == 5.0 + BACKOFF_FIRST


def test_healthy_leaves_retry_at_alone() -> None:
    policy = CrashPolicy()
    die_young(policy, 0.0)
    policy.healthy()
    assert policy.retry_at == BACKOFF_FIRST
    assert not policy.may_start(0.1)
