"""The access rules and the session cache: pure, no CouchDB."""

from __future__ import annotations

import pytest

from couchdb_events.access import (
    SessionCache,
    User,
    check_events,
    check_status,
    credentials,
    is_authenticated,
    needs_user,
)
from couchdb_events.config import Config
from couchdb_events.documents import EventSpec
from couchdb_events.errors import HTTPError

OPEN = EventSpec("open", "1")
MAIL = EventSpec("mail", "1", roles=("mailers",))
HELLO = EventSpec("hello", "1", public=True)
ANN: User = {"name": "ann", "roles": ["mailers"]}
BOB: User = {"name": "bob", "roles": []}
ADMIN: User = {"name": "boss", "roles": ["_admin"]}
PARTY: User = {"name": None, "roles": ["_admin"]}  # anonymous in CouchDB's admin party
ANON: User = {"name": None, "roles": []}


def status_of(config: Config, events: list[EventSpec], user: User | None) -> int:
    try:
        check_events(config, events, user)
    except HTTPError as exc:
        return exc.status
    return 200


@pytest.mark.parametrize(
    ("user", "expected"),
    [(None, 401), (ANON, 401), (BOB, 403), (ANN, 200), (ADMIN, 200), (PARTY, 200)],
)
def test_roles(user: User | None, expected: int) -> None:
    assert status_of(Config(), [MAIL], user) == expected


def test_open_and_public_events_need_nobody() -> None:
    assert status_of(Config(), [OPEN, HELLO], None) == 200
    assert not needs_user(Config(), [OPEN, HELLO])
    assert needs_user(Config(), [OPEN, MAIL])


def test_require_valid_user_spares_public_events_only() -> None:
    config = Config(require_valid_user=True)
    assert needs_user(config, [OPEN]) and not needs_user(config, [HELLO])
    assert status_of(config, [OPEN], ANON) == 401
    assert status_of(config, [OPEN], BOB) == 200
    assert status_of(config, [HELLO], None) == 200
    assert status_of(config, [HELLO, OPEN], None) == 401  # all or nothing


@pytest.mark.parametrize(
    ("access", "user", "expected"),
    [
        ("admin", None, 401),
        ("admin", BOB, 403),
        ("admin", ADMIN, 200),
        ("user", BOB, 200),
        ("user", ANON, 401),
        ("public", None, 200),
    ],
)
def test_status_access(access: str, user: User | None, expected: int) -> None:
    try:
        check_status(Config(status_access=access), user)
    except HTTPError as exc:
        assert exc.status == expected
    else:
        assert expected == 200


def test_is_authenticated() -> None:
    assert is_authenticated(BOB) and is_authenticated(PARTY)
    assert not is_authenticated(ANON) and not is_authenticated(None)


def test_credentials_picks_only_credential_headers_in_any_case() -> None:
    headers = {"authorization": "Basic x", "COOKIE": "a=b", "Host": "h", "X-Forwarded-For": "1"}
    assert credentials(headers) == {"Authorization": "Basic x", "Cookie": "a=b"}


def test_session_cache_is_time_limited_and_bounded() -> None:
    cache = SessionCache(ttl=10, size=2)
    a, b, c = (cache.key({"Authorization": x}) for x in "abc")
    assert len({a, b, c}) == 3 and cache.key({}) != a
    cache.put(a, ANN, now=0)
    assert cache.get(a, now=5) == ANN
    assert cache.get(a, now=11) is None  # expired and dropped
    cache.put(a, ANN, now=20)
    cache.put(b, BOB, now=20)
    cache.get(a, now=21)  # a is now the most recently used
    cache.put(c, ADMIN, now=21)
    assert len(cache) == 2
    assert cache.get(b, now=21) is None and cache.get(a, now=21) == ANN
    refusal = HTTPError(401, "unauthorized", "no")
    cache.put(c, refusal, now=22)
    assert cache.get(c, now=22) is refusal
