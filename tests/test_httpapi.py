"""The aiohttp host's own translation."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from couchdb_events.hosts.http import joined_headers


def test_repeated_headers_are_joined_not_dropped() -> None:
    raw = CIMultiDict(
        [("X-Forwarded-For", "10.0.0.1"), ("Host", "h"), ("x-forwarded-for", "127.0.0.1")]
    )
    assert joined_headers(CIMultiDictProxy(raw)) == {
        "X-Forwarded-For": "10.0.0.1, 127.0.0.1",
        "Host": "h",
    }
