"""The access rules and the session cache (pure), and asking a fake CouchDB's ``/_session``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from couchdb_events.api.access import (
    Access,
    SessionCache,
    User,
    check_events,
    check_status,
    credentials,
    is_authenticated,
    needs_user,
)
from couchdb_events.api.answer import error_answer
from couchdb_events.api.router import Router
from couchdb_events.config import Config
from couchdb_events.errors import HTTPError
from couchdb_events.model.events import EventSpec
from couchdb_events.model.request import Request

OPEN = EventSpec("open", "1")
MAIL = EventSpec("mail", "1", roles=("mailers",))
HELLO = EventSpec("hello", "1", public=True)
ANN: User = {"name": "ann", "roles": ["mailers"]}
BOB: User = {"name": "bob", "roles": []}
ADMIN: User = {"name": "boss", "roles": ["_admin"]}
PARTY: User = {"name": None, "roles": ["_admin"]}  # anonymous in CouchDB's admin party
ANON: User = {"name": None, "roles": []}
JSON = "application/json"


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


# -- asking /_session: a fake CouchDB answering as CouchDB 3.5 does ----------------------------
BAD_BASE64 = "Authorization header has invalid base64 value"
BAD_COOKIE = "Malformed AuthSession cookie. Please clear your cookies."
SESSION_OK = '{"ok": true, "userCtx": {"name": "ann", "roles": ["mailers"]}}'
# Credential header value -> what the fake /_session answers: status, body, content type.
ANSWERS: dict[str, tuple[int, str, str]] = {
    "Basic !!!": (400, json.dumps({"error": "bad_request", "reason": BAD_BASE64}), JSON),
    "AuthSession=garbage": (400, json.dumps({"error": "bad_request", "reason": BAD_COOKIE}), JSON),
    "Basic YW5uOmFubi1wdw==": (200, SESSION_OK, JSON),
    "Basic YW5uOndyb25n": (
        401,
        '{"error": "unauthorized", "reason": "Name or password is incorrect."}',
        JSON,
    ),
    "Basic bm8tcmVhc29u": (400, '{"error": "bad_request"}', JSON),
    "Basic aHRtbA==": (400, "<html>Bad Request</html>", "text/html"),
    "Basic NDAxLWh0bWw=": (401, "<html>Unauthorized</html>", "text/html"),
    "Basic b29wcw==": (500, '{"error": "unknown_error", "reason": "badarg"}', JSON),
}
MALFORMED = "the credentials are malformed: CouchDB cannot read this request's Authorization or "
MALFORMED += "Cookie header"

Check = Callable[[Access, list[str]], Awaitable[None]]


def with_session_server(check: Check, **settings: Any) -> None:
    """Run ``check`` with an ``Access`` whose CouchDB is a fake ``/_session``; ``check`` gets the
    credential headers each request brought."""
    seen: list[str] = []

    async def session(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization") or request.headers.get("Cookie") or ""
        seen.append(given)
        status, body, content_type = ANSWERS.get(given, (200, SESSION_OK, JSON))
        return web.Response(status=status, text=body, content_type=content_type)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/_session", session)
        async with TestServer(app) as server:
            access = Access(Config(couchdb_url=str(server.make_url("/")), **settings))
            try:
                await check(access, seen)
            finally:
                await access.close()

    asyncio.run(main())


async def refusal(access: Access, headers: dict[str, str], required: bool) -> HTTPError:
    with pytest.raises(HTTPError) as refused:
        await access.user(headers, required)
    return refused.value


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Authorization": "Basic !!!"}, BAD_BASE64),
        ({"Cookie": "AuthSession=garbage"}, BAD_COOKIE),
    ],
)
def test_malformed_credentials_are_couchdbs_400_needed_or_not(
    headers: dict[str, str], reason: str
) -> None:
    async def check(access: Access, seen: list[str]) -> None:
        for required in (True, False):
            error = await refusal(access, headers, required)
            assert (error.status, error.error, error.reason) == (400, "bad_request", reason)
        assert len(seen) == 1  # the refusal is cached, like a 401

    with_session_server(check)


@pytest.mark.parametrize(
    ("token", "status", "reason"),
    [
        ("bm8tcmVhc29u", 400, MALFORMED),  # JSON without a reason
        ("aHRtbA==", 400, MALFORMED),  # not JSON
        ("NDAxLWh0bWw=", 401, "Name or password is incorrect."),
        ("YW5uOndyb25n", 401, "Name or password is incorrect."),
    ],
)
def test_refusals_without_couchdbs_reason_get_a_sensible_one(
    token: str, status: int, reason: str
) -> None:
    error = {400: "bad_request", 401: "unauthorized"}[status]

    async def check(access: Access, _seen: list[str]) -> None:
        for required in (True, False):
            refused = await refusal(access, {"Authorization": f"Basic {token}"}, required)
            assert (refused.status, refused.error, refused.reason) == (status, error, reason)

    with_session_server(check)


def test_a_user_and_a_failing_couchdb() -> None:
    async def check(access: Access, _seen: list[str]) -> None:
        assert await access.user({"authorization": "Basic YW5uOmFubi1wdw=="}, True) == ANN
        broken = {"Authorization": "Basic b29wcw=="}
        assert await access.user(broken, False) is None  # nothing to decide: goes on
        error = await refusal(access, broken, True)
        assert (error.status, error.error) == (503, "unavailable")
        assert (
            error.reason == "cannot ask CouchDB who is calling: OSError: GET /_session answered 500"
        )

    with_session_server(check)


class MatchOnly:
    """The dispatcher's ``match``, for requests that never get as far as firing."""

    def match(self, request: Request) -> list[EventSpec]:
        events = {"/open": [OPEN], "/mail": [MAIL], "/hello": [HELLO]}
        if request.path not in events:
            raise HTTPError(404, "not_found", f"no event for {request.path}")
        return events[request.path]


@pytest.mark.parametrize(
    ("path", "settings"),
    [
        ("/open", {}),  # nothing to decide: asked all the same, as credentials came
        ("/mail", {}),  # roles
        ("/hello", {"require_valid_user": True}),  # public
        ("/nope", {"require_valid_user": True}),
        ("/_status", {"status_access": "public"}),
        ("/_activations", {"status_access": "public"}),
    ],
)
def test_routes_that_ask_answer_400_to_malformed_credentials(
    path: str, settings: dict[str, Any]
) -> None:
    async def check(access: Access, seen: list[str]) -> None:
        # Only ``match`` is reached, not the runner nor the status: credentials come first.
        dispatcher: Any = MatchOnly()
        router = Router(dispatcher, None, None, access.config, access)  # type: ignore[arg-type]
        request = Request("GET", path, headers={"Authorization": "Basic !!!"})
        with pytest.raises(HTTPError) as refused:
            await router.handle(request)
        assert (refused.value.status, refused.value.reason) == (400, BAD_BASE64)
        assert error_answer(refused.value).body == {"error": "bad_request", "reason": BAD_BASE64}
        assert seen == ["Basic !!!"]

    with_session_server(check, **settings)
