"""The HTTP face of the service (aiohttp): ``/_events/<event or path>``, ``/_events/_status``.

Both the proxy-stripped (``/email_event``) and the full (``/_events/email_event``) forms are
accepted. Every error is JSON like CouchDB's own: ``{"error": ..., "reason": ...}``; nothing
ever answers with a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from . import __version__, logs
from .dispatch import Dispatcher
from .errors import HTTPError
from .request import Request, parse_body, strip_prefix

log = logs.get("http")

MAX_WAIT = 300.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode() + b"\n",
        content_type="application/json",
        headers=headers,
    )


def error_response(error: HTTPError) -> web.Response:
    return json_response(
        error.status, {"error": error.error, "reason": error.reason}, error.headers
    )


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(HTTPError(413, "too_large", exc.text or "the body is too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(
            HTTPError(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(HTTPError(500, "internal_error", f"{type(exc).__name__}: {exc}"))


def _wait_seconds(request: web.Request) -> float | None:
    value = request.query.get("wait")
    if value is None:
        for part in request.headers.getall("Prefer", []):
            for item in part.split(","):
                key, _, val = item.strip().partition("=")
                if key.strip().lower() == "wait":
                    value = val.strip()
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise HTTPError(
            400, "bad_request", f"wait must be a number of seconds, not {value!r}"
        ) from None
    if not 0 <= seconds <= MAX_WAIT:
        raise HTTPError(400, "bad_request", f"wait must be between 0 and {MAX_WAIT:.0f} seconds")
    return seconds


class Api:
    def __init__(self, dispatcher: Dispatcher, status: StatusSource, max_body: int) -> None:
        self._dispatcher = dispatcher
        self._status = status
        self.app = web.Application(middlewares=[errors_as_json], client_max_size=max_body)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = strip_prefix(request.path)
        if path == "/":
            self._only(request, "GET", "HEAD")
            return json_response(200, {"couchdb_events": "Welcome", "version": __version__})
        if path in ("/_status", "/_status/"):
            self._only(request, "GET", "HEAD")
            return json_response(200, self._status.status())
        if path.startswith("/_"):
            raise HTTPError(404, "not_found", f"{path} is not an endpoint of couchdb-events")
        return await self._fire(request, path)

    @staticmethod
    def _only(request: web.Request, *methods: str) -> None:
        if request.method not in methods:
            allow = ", ".join(methods)
            raise HTTPError(
                405, "method_not_allowed", f"{request.path} takes {allow}", {"Allow": allow}
            )

    async def _fire(self, request: web.Request, path: str) -> web.Response:
        wait = _wait_seconds(request)
        raw = await request.read()
        body = parse_body(request.headers.get("Content-Type"), raw)
        fired = self._dispatcher.fire(
            Request(
                method=request.method,
                path=path,
                query=dict(request.query),
                headers=dict(request.headers),
                body=body,
                peer=request.remote,
                user=None,
            )
        )
        runs: list[dict[str, Any]] = [
            {"id": m.id, "event": m.event, "worker": m.worker} for m in fired.messages
        ]
        if wait:
            futures = [m.outcome for m in fired.messages if m.outcome is not None]
            done, _pending = await asyncio.wait(futures, timeout=wait)
            if len(done) == len(futures):
                for run, future in zip(runs, futures, strict=True):
                    run.update(future.result().as_json())
                return json_response(200, {"ok": True, "events": fired.events, "runs": runs})
        return json_response(202, {"ok": True, "events": fired.events, "runs": runs})
