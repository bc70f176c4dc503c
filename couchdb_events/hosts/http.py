"""The HTTP host (aiohttp): serves the router on a TCP port, for the daemon and ``serve`` modes.

Both the proxy-stripped (``/email_event``) and the full (``/_events/email_event``) forms are
accepted. Every error is JSON like CouchDB's own: ``{"error": ..., "reason": ...}``; nothing
ever answers with a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from .. import logs
from ..api.answer import Answer, error_answer
from ..api.router import Router
from ..config import Config
from ..core.startup import StartupError
from ..errors import HTTPError
from ..model.request import Request, parse_body, strip_prefix

log = logs.get("http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once, not per answer


def json_response(answer: Answer) -> web.Response:
    """The answer as JSON, or its ``raw`` bytes as they are, with their own Content-Type."""
    if answer.raw is not None:
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = answer.content_type()
        return web.Response(status=answer.status, body=answer.raw, headers=headers)
    return web.Response(
        status=answer.status,
        body=_COMPACT.encode(answer.body).encode() + b"\n",
        content_type="application/json",
        headers=answer.headers,
    )


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HTTPError as exc:
        return json_response(error_answer(exc))
    except web.HTTPRequestEntityTooLarge as exc:
        error = HTTPError(413, "too_large", exc.text or "the body is too large")
        return json_response(error_answer(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return json_response(error_answer(HTTPError(exc.status, code, exc.text or exc.reason)))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        error = HTTPError(500, "internal_error", f"{type(exc).__name__}: {exc}")
        return json_response(error_answer(error))


def joined_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Headers as one dict; a repeated header's values joined with ", " (RFC 9110), so that a
    second ``X-Forwarded-For`` (haproxy adds one) is not lost."""
    joined: dict[str, str] = {}
    for name in headers:
        if name not in joined:
            joined[name] = ", ".join(headers.getall(name))
    return joined


class Api:
    def __init__(self, router: Router, max_body: int) -> None:
        self._router = router
        self.app = web.Application(middlewares=[errors_as_json], client_max_size=max_body)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = strip_prefix(request.path)
        body: Any = None
        if request.can_read_body:
            body = parse_body(request.headers.get("Content-Type"), await request.read())
        answer = await self._router.handle(
            Request(
                method=request.method,
                path=path,
                query=dict(request.query),
                headers=joined_headers(request.headers),
                body=body,
                peer=request.remote,
                user=None,
            )
        )
        return json_response(answer)


class HttpListener:
    """Serves the HTTP API on ``bind_address:port`` (the os_daemon and standalone hosts)."""

    def __init__(self, router: Router, config: Config) -> None:
        self.config = config
        self.api = Api(router, config.max_body)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; ``StartupError`` saying what to change when the address cannot be had."""
        config = self.config
        self._runner = web.AppRunner(
            self.api.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.bind_address, config.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            where = f"{config.bind_address}:{config.port}"
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"cannot listen on {where}: the port is taken (set [couchdb_events] port)"
                ) from None
            reason = exc.strerror or exc
            raise StartupError(
                f"cannot listen on {where}: {reason} (check [couchdb_events] bind_address)"
            ) from None

    @property
    def port(self) -> int:
        """The port listened on (``port = 0`` takes a free one)."""
        if self._runner is not None:
            for address in self._runner.addresses:
                if isinstance(address, tuple):
                    return int(address[1])
        return self.config.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
