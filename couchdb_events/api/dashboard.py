"""``/_events/_dashboard``: the live dashboard, static files shipped in the package
(``couchdb_events/dashboard/``) that poll ``_status`` and ``_activations`` from the browser.

::

    GET /_events/_dashboard            302 to _dashboard/ (relative: works below any prefix)
    GET /_events/_dashboard/           the page (index.html)
    GET /_events/_dashboard/<asset>    one of its files; 404 for any other name

Every file is read once and served with an ``ETag`` (``If-None-Match`` answers 304) and
``Cache-Control: no-cache``: a browser asks again each time but downloads a file only when it
changed (after an upgrade). Who may see the page is the router's business (as ``_status``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from ..errors import HTTPError
from ..model.request import Request
from .answer import Answer, raw_answer

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
PREFIX = "/_dashboard"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
}


def is_dashboard(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


@lru_cache(maxsize=64)
def _asset(name: str) -> tuple[bytes, str, str] | None:
    """(bytes, Content-Type, ETag) of a shipped file, or None for a name that is not one."""
    path = ASSETS / name
    kind = TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        return None
    data = path.read_bytes()
    return data, kind, '"' + hashlib.sha256(data).hexdigest()[:20] + '"'


def dashboard_answer(request: Request) -> Answer:
    """The answer to a ``/_dashboard`` path (the caller's access already checked)."""
    rest = request.path[len(PREFIX) :]
    if not rest:
        # Relative, so that /_events/_dashboard goes to /_events/_dashboard/ and
        # /db/_events/_dashboard (CouchDB's external) to /db/_events/_dashboard/.
        location = "_dashboard/"
        return Answer(302, {"ok": True, "location": location}, {"Location": location})
    name = rest.lstrip("/") or "index.html"
    found = _asset(name)
    if found is None:
        raise HTTPError(404, "not_found", f"the dashboard has no file {name!r}")
    data, kind, etag = found
    headers = {"ETag": etag, "Cache-Control": "no-cache", **SECURITY}
    if etag in _tags(_header(request, "if-none-match")):
        return raw_answer(304, b"", kind, headers)
    return raw_answer(200, data, kind, headers)


def _header(request: Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name:
            return value
    return ""


def _tags(value: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in value.split(",") if tag.strip()}
