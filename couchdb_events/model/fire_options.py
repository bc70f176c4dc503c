"""What a fire asks for besides its event, read from its request: when its runs start
(``?delay=SECONDS`` or ``?at=<ISO 8601 time>``, ``due``) and its ``Idempotency-Key``
(``idempotency_key``). Pure; the run controls (``runs.controls``) act on them."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from ..errors import HTTPError

KEY_HEADER = "Idempotency-Key"
MAX_KEY = 255
MAX_DELAY = 30 * 24 * 3600.0
PAST = 60.0  # seconds an ``at`` may lie in the past (clocks differ): it runs at once


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The fire's ``Idempotency-Key``, or None; 400 for a malformed one."""
    for name, value in headers.items():
        if name.lower() == KEY_HEADER.lower():
            if not 1 <= len(value) <= MAX_KEY or not all(" " <= c <= "~" for c in value):
                raise HTTPError(
                    400,
                    "bad_request",
                    f"{KEY_HEADER} must be 1 to {MAX_KEY} visible ASCII characters",
                )
            return value
    return None


def due(query: Mapping[str, str], now: float) -> float | None:
    """When a fire's runs are to start (``?delay=SECONDS`` or ``?at=<ISO 8601 time>``), or
    None for now; 400 for a bad or out-of-range value."""
    delay, at = query.get("delay"), query.get("at")
    if delay is not None and at is not None:
        raise HTTPError(400, "bad_request", "give delay or at, not both")
    if delay is not None:
        try:
            seconds = float(delay)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_DELAY:
            raise HTTPError(
                400, "bad_request", f"delay must be 0 to {MAX_DELAY:.0f} seconds, not {delay!r}"
            )
        return now + seconds if seconds > 0 else None
    if at is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise HTTPError(
            400,
            "bad_request",
            f"at must be an ISO 8601 time with its zone, like 2026-12-24T18:00:00Z, not {at!r}",
        )
    moment = when.timestamp()
    if moment < now - PAST:
        raise HTTPError(400, "bad_request", f"at {at!r} is in the past")
    if moment > now + MAX_DELAY:
        raise HTTPError(400, "bad_request", f"at must be at most {MAX_DELAY:.0f} seconds ahead")
    return moment if moment > now else None
