"""The HTTP host (aiohttp): serves the router on a TCP port, for the daemon and ``serve`` modes.

Both the proxy-stripped (``/email_event``) and the full (``/_events/email_event``) forms are
accepted. Every error is JSON like CouchDB's own: ``{"error": ..., "reason": ...}``; nothing
ever answers with a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from . import logs
from .errors import HTTPError
from .request import Request, parse_body, strip_prefix
from .router import Answer, Router, error_answer

log = logs.get("http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # made once, not per answer


def json_response(answer: Answer) -> web.Response:
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
