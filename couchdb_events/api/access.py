"""Who is calling, and may they.

CouchDB's proxy rejects bad credentials but tells the backend nothing about the caller, and a
reverse proxy tells even less. So the HTTP host asks CouchDB's ``GET /_session`` with the
caller's own ``Authorization`` and ``Cookie`` headers (never the service's credentials). Answers
are cached briefly (``session_cache_ttl``) and boundedly (``session_cache_size``), keyed by a
hash of those headers. The external host already has CouchDB's ``userCtx`` and skips this.

Rules, in order:

* ``require_valid_user``: every request needs an authenticated caller (anonymous: 401), except
  events marked ``"public": true``;
* an event with ``"roles"`` may be fired only by a caller with one of them, or ``_admin``
  (anonymous: 401, a user without the role: 403);
* ``/_events/_status`` needs ``status_access``: ``admin`` (default), ``user`` or ``public``;
  so do ``_activations`` and ``_dashboard``. Their 401 carries ``WWW-Authenticate: Basic``.
  ``/_events/_metrics`` needs ``metrics_access``, by default the same.

When a decision needs the caller and CouchDB cannot say who it is, the answer is 503, never a
pass. When no decision needs it, the request goes on with ``user`` null.

Credentials CouchDB refuses are refused here too, whether or not a decision needs the caller:
``/_session`` is asked whenever a request carries an ``Authorization`` or ``Cookie`` header
(``Router._user``), and its answer stands. A wrong name or password is 401, as CouchDB answers
it. Malformed credentials are 400 ``bad_request`` with CouchDB's reason: CouchDB 3.5 answers
400 to an ``Authorization`` header that is not valid base64 ("Authorization header has invalid
base64 value") and to an ``AuthSession`` cookie it cannot read ("Malformed AuthSession cookie.
Please clear your cookies."), on every endpoint. Here the routes that ask ``/_session`` do:
firing an event (with ``require_valid_user`` also a path that matches none), ``_status`` and
``_activations``; the welcome, another ``/_`` path, a bad ``wait`` and otherwise a path that
matches no event answer without asking.
Behind CouchDB's ``_events`` proxy CouchDB has refused such a request itself. Refusals (400,
401) are cached like users.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .. import logs
from ..config import Config
from ..errors import HTTPError
from ..model.events import EventSpec

log = logs.get("access")

User = dict[str, Any]  # {"name": str | None, "roles": [str, ...]}
ANONYMOUS: User = {"name": None, "roles": []}
CREDENTIAL_HEADERS = ("authorization", "cookie")


def is_admin(user: User | None) -> bool:
    return user is not None and "_admin" in user.get("roles", [])


def is_authenticated(user: User | None) -> bool:
    """A named user, or an admin (in CouchDB's admin party even anonymous callers are)."""
    return user is not None and (user.get("name") is not None or is_admin(user))


def credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's credential headers, by their usual names."""
    found = {}
    for name, value in headers.items():
        if name.lower() in CREDENTIAL_HEADERS:
            found[name.title()] = value
    return found


def needs_user(config: Config, events: Iterable[EventSpec]) -> bool:
    """Whether firing these events needs to know the caller."""
    return any(event.roles or (config.require_valid_user and not event.public) for event in events)


def check_events(config: Config, events: Iterable[EventSpec], user: User | None) -> None:
    """Raise 401/403 unless ``user`` may fire every one of ``events``."""
    for event in events:
        if event.public:
            continue
        if config.require_valid_user and not is_authenticated(user):
            raise HTTPError(401, "unauthorized", "Authentication required.")
        if event.roles and not is_admin(user):
            if not is_authenticated(user):
                raise HTTPError(
                    401, "unauthorized", f"event {event.id!r} needs one of the roles "
                    f"{', '.join(event.roles)}: log in"
                )  # fmt: skip
            assert user is not None
            if not set(event.roles) & set(user.get("roles", [])):
                raise HTTPError(
                    403,
                    "forbidden",
                    f"user {user.get('name')!r} has none of the roles {', '.join(event.roles)} "
                    f"that event {event.id!r} needs",
                )


# What a 401 of status, activations and the dashboard asks for (RFC 9110 wants one): a browser
# opening the dashboard prompts for a name and password, and sends them to the rest of it.
CHALLENGE = {"WWW-Authenticate": 'Basic realm="couchdb-events"'}


def check_status(config: Config, user: User | None) -> None:
    _check_reader(config.status_access, user, "/_events/_status")


def metrics_access(config: Config) -> str:
    """Who may read ``/_events/_metrics``: ``metrics_access``, or for ``status`` (the default)
    whom ``status_access`` names."""
    return config.status_access if config.metrics_access == "status" else config.metrics_access


def check_metrics(config: Config, user: User | None) -> None:
    _check_reader(metrics_access(config), user, "/_events/_metrics")


def _check_reader(rule: str, user: User | None, what: str) -> None:
    if rule == "public":
        return
    if not is_authenticated(user):
        raise HTTPError(401, "unauthorized", f"{what} needs a logged-in user", CHALLENGE)
    if rule == "admin" and not is_admin(user):
        raise HTTPError(403, "forbidden", f"{what} is for server admins")


def check_controls(config: Config, user: User | None) -> None:
    """Retrying and cancelling runs: server admins where status is theirs, else any logged-in
    user (also where status is public: reading is not steering)."""
    if not is_authenticated(user):
        raise HTTPError(
            401, "unauthorized", "retrying or cancelling a run needs a logged-in user", CHALLENGE
        )
    if config.status_access == "admin" and not is_admin(user):
        raise HTTPError(403, "forbidden", "retrying or cancelling a run is for server admins")


class SessionCache:
    """Bounded, time-limited memory of ``/_session`` answers (users and refusals)."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, User | HTTPError]] = OrderedDict()

    @staticmethod
    def key(creds: Mapping[str, str]) -> str:
        text = "\0".join(f"{k}:{v}" for k, v in sorted(creds.items()))
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str, now: float) -> User | HTTPError | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored, value = entry
        if now - stored > self.ttl:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: User | HTTPError, now: float) -> None:
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# What ``/_session`` answers to credentials it refuses, and the reason when it gives none.
REFUSALS = {
    400: (
        "bad_request",
        "the credentials are malformed: CouchDB cannot read this request's Authorization or "
        "Cookie header",
    ),
    401: ("unauthorized", "Name or password is incorrect."),
}


def _reason(text: str) -> str | None:
    """The ``reason`` of a CouchDB error body, if it is JSON and has one."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    reason = body.get("reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) and reason else None


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Access:
    """Resolves callers through CouchDB's ``/_session`` and applies the rules above."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.session_url = _without_credentials(config.couchdb_url) + "_session"
        self.cache = SessionCache(config.session_cache_ttl, config.session_cache_size)
        self._client: aiohttp.ClientSession | None = None

    async def _ask(self, creds: dict[str, str]) -> User:
        if self._client is None:
            timeout = aiohttp.ClientTimeout(total=self.config.couchdb_timeout)
            self._client = aiohttp.ClientSession(timeout=timeout)
        headers = {"Accept": "application/json", **creds}
        async with self._client.get(self.session_url, headers=headers) as answer:
            status, text = answer.status, await answer.text(errors="replace")
        if status in REFUSALS:
            error, default = REFUSALS[status]
            raise HTTPError(status, error, _reason(text) or default)
        body = json.loads(text)  # ValueError when it is not JSON
        if status != 200 or not isinstance(body, dict):
            raise OSError(f"GET /_session answered {status}")
        ctx = body.get("userCtx") or {}
        return {"name": ctx.get("name"), "roles": list(ctx.get("roles") or [])}

    async def user(self, headers: Mapping[str, str], required: bool) -> User | None:
        """The caller; None when CouchDB cannot say and ``required`` is false (else 503).
        Credentials CouchDB refuses raise its 400 or 401 either way."""
        creds = credentials(headers)
        key = self.cache.key(creds)
        now = time.monotonic()
        cached = self.cache.get(key, now)
        if isinstance(cached, HTTPError):
            raise cached
        if cached is not None:
            return cached
        try:
            user = await self._ask(creds)
        except HTTPError as exc:
            self.cache.put(key, exc, now)
            raise
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            reason = f"cannot ask CouchDB who is calling: {type(exc).__name__}: {exc}".rstrip(": ")
            if required:
                raise HTTPError(503, "unavailable", reason, {"Retry-After": "5"}) from None
            log.warning("%s; going on without a user", reason)
            return None
        self.cache.put(key, user, now)
        return user

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
