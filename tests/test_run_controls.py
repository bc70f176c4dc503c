"""Run controls' pure parts: when a delayed fire runs (``due``), the ``Idempotency-Key``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from couchdb_events.errors import HTTPError
from couchdb_events.model.fire_options import MAX_DELAY, due, idempotency_key
from couchdb_events.runs.records import iso, parse_iso

NOW = 1_790_000_000.0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, None),
        ({"delay": "0"}, None),
        ({"delay": "2.5"}, NOW + 2.5),
        ({"delay": str(MAX_DELAY)}, NOW + MAX_DELAY),
        ({"at": iso(NOW + 60)}, NOW + 60),
        ({"at": "2026-09-21T14:13:20+02:00"}, NOW - 2 * 3600 + 0.0),
        ({"at": iso(NOW - 30)}, None),  # a little in the past (clocks differ): now
    ],
)
def test_due(query: dict[str, str], expected: float | None) -> None:
    if query.get("at", "").endswith("+02:00"):
        expected = parse_iso("2026-09-21T12:13:20.000Z")
        now = (expected or 0) - 10
        assert due(query, now) == expected
        return
    assert due(query, NOW) == expected


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"delay": "-1"}, "delay must be 0 to 2592000 seconds, not '-1'"),
        ({"delay": "nan"}, "delay must be"),
        ({"delay": "1e9"}, "delay must be"),
        ({"at": "2026-09-21T14:13:20"}, "with its zone"),
        ({"at": "soon"}, "ISO 8601 time"),
        ({"at": iso(NOW - 3600)}, "in the past"),
        ({"at": iso(NOW + MAX_DELAY + 10)}, "at most"),
        ({"at": iso(NOW + 10), "delay": "1"}, "not both"),
    ],
)
def test_due_refuses_precisely(query: dict[str, str], words: str) -> None:
    with pytest.raises(HTTPError) as caught:
        due(query, NOW)
    assert caught.value.status == 400 and words in caught.value.reason


def test_idempotency_key() -> None:
    assert idempotency_key({}) is None
    assert idempotency_key({"idempotency-key": "a b~"}) == "a b~"
    for bad in ("", "x" * 256, "tab\there", "é"):
        with pytest.raises(HTTPError) as caught:
            idempotency_key({"Idempotency-Key": bad})
        assert caught.value.status == 400


def test_parse_iso_keeps_milliseconds() -> None:
    assert parse_iso(iso(NOW + 0.25)) == NOW + 0.25
    assert parse_iso(iso(NOW)[:19] + "Z") == NOW
    assert parse_iso("nonsense") is None


def test_fires_of_one_key_take_turns() -> None:
    """Fires with the same Idempotency-Key go one at a time in a daemon (the next one finds the
    first one's runs), however many wait; the lock is forgotten when the last is done."""
    from types import SimpleNamespace

    from couchdb_events.runs.controls import Controls

    runner: Any = SimpleNamespace(activations=None, cancel_requests=None)
    controls = Controls(runner, None, None, "state")  # type: ignore[arg-type]
    inside: list[int] = []
    most = 0

    async def fire(number: int) -> None:
        nonlocal most
        await asyncio.sleep(number * 0.004)  # some come while another's turn is ending
        async with controls.once("k"):
            inside.append(number)
            most = max(most, len(inside))
            await asyncio.sleep(0.01)
            inside.remove(number)

    async def main() -> None:
        await asyncio.gather(*(fire(n) for n in range(5)), fire_other())

    async def fire_other() -> None:
        async with controls.once("other"):
            await asyncio.sleep(0.01)

    asyncio.run(main())
    assert most == 1
    assert controls._firing == {}
