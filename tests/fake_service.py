"""A small local HTTP server playing couchdb-events' HTTP API for the command line's unit tests:
it answers each (method, path) from a table the test fills, and records every request."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a route answers: (status, a JSON body or raw bytes), or a function of the request giving it.
Reply = tuple[int, Any]
Route = Reply | Callable[["Seen"], Reply]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeService:
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, reply: Route) -> None:
        self.routes[(method, path)] = reply

    def last(self) -> Seen:
        assert self.seen, "no request reached the fake service"
        return self.seen[-1]


def serve(fake: FakeService) -> Iterator[FakeService]:
    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length) if length else b"",
            )
            fake.seen.append(seen)
            route = fake.routes.get((self.command, parts.path))
            if route is None:
                reply: Reply = (404, {"error": "not_found", "reason": f"{parts.path} unknown"})
            else:
                reply = route(seen) if callable(route) else route
            status, body = reply
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
