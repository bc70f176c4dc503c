"""The dashboard's routes and the raw answers that carry its files, host by host (the browser
tests are ``test_dashboard_browser.py``)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from couchdb_events.api.answer import Answer, raw_answer
from couchdb_events.api.dashboard import ASSETS, dashboard_answer
from couchdb_events.api.router import Router
from couchdb_events.config import Config
from couchdb_events.errors import HTTPError
from couchdb_events.hosts.external_codec import encode_response, to_response
from couchdb_events.hosts.http import json_response
from couchdb_events.model.request import Request

ADMIN = {"name": "root", "roles": ["_admin"]}
ANONYMOUS: dict[str, Any] = {"name": None, "roles": []}


# -- raw answers, per host -----------------------------------------------------------------------
def test_http_host_sends_raw_bytes_with_their_type() -> None:
    answer = raw_answer(200, b"# HELP x\nx 1\n", "text/plain; version=0.0.4", {"ETag": '"a"'})
    response = json_response(answer)
    assert response.status == 200
    assert response.body == b"# HELP x\nx 1\n"
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4"
    assert response.headers["ETag"] == '"a"'


def test_http_host_raw_without_a_type_is_octet_stream_and_json_is_unchanged() -> None:
    assert json_response(Answer(200, None, {}, b"\x00\xff")).content_type == (
        "application/octet-stream"
    )
    response = json_response(Answer(202, {"ok": True}, {"X-A": "1"}))
    assert response.body == b'{"ok":true}\n'
    assert response.content_type == "application/json"
    assert response.headers["X-A"] == "1"


def test_external_host_sends_utf8_raw_as_body_and_other_bytes_as_base64() -> None:
    text = raw_answer(200, "x 1 é\n".encode(), "text/plain; charset=utf-8")
    response = to_response(text)
    assert response == {
        "code": 200,
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
        "body": "x 1 é\n",
    }
    binary = to_response(raw_answer(200, b"\x89PNG\xff\x00", "image/png"))
    assert set(binary) == {"code", "headers", "base64"}
    assert base64.b64decode(binary["base64"]) == b"\x89PNG\xff\x00"
    assert binary["headers"]["Content-Type"] == "image/png"
    # One ASCII line either way, as CouchDB reads them.
    for one in (response, binary):
        line = encode_response(one)
        assert line.endswith(b"\n") and b"\n" not in line[:-1]
        assert json.loads(line) == one


def test_external_host_json_answers_are_unchanged() -> None:
    assert to_response(Answer(202, {"ok": True}, {"Retry-After": "5"})) == {
        "code": 202,
        "headers": {"Content-Type": "application/json", "Retry-After": "5"},
        "json": {"ok": True},
    }


# -- the routes ----------------------------------------------------------------------------------
def get(path: str, **headers: str) -> Answer:
    return dashboard_answer(Request("GET", path, headers=headers))


def test_without_the_slash_redirects_relatively() -> None:
    answer = get("/_dashboard")
    assert answer.status == 302
    # Relative: /_events/_dashboard -> /_events/_dashboard/, /db/_events/_dashboard likewise.
    assert answer.headers["Location"] == "_dashboard/"


def test_page_and_files_are_served_with_type_and_etag() -> None:
    page = get("/_dashboard/")
    assert page.status == 200
    assert page.raw == (ASSETS / "index.html").read_bytes()
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    assert get("/_dashboard/index.html").raw == page.raw
    script = get("/_dashboard/app.js")
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert get("/_dashboard/style.css").headers["Content-Type"].startswith("text/css")
    etag = script.headers["ETag"]
    assert etag.startswith('"') and etag != page.headers["ETag"]
    again = get("/_dashboard/app.js", **{"If-None-Match": f'"other", W/{etag}'})
    assert (again.status, again.raw) == (304, b"")
    assert again.headers["ETag"] == etag


def test_every_url_in_the_page_is_relative() -> None:
    for path in sorted(ASSETS.iterdir()):
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text().replace('"http://www.w3.org/2000/svg"', "")  # a name
            for absolute in ('href="/', 'src="/', 'fetch("/', 'api("/', "http://", "https://"):
                assert absolute not in text, f"{path.name} has {absolute!r}"


@pytest.mark.parametrize("name", ["nope.js", "../dashboard.py", "..%2Fx", ".hidden.js", "a/b.js"])
def test_unknown_files_are_404(name: str) -> None:
    with pytest.raises(HTTPError) as refused:
        get("/_dashboard/" + name)
    assert refused.value.status == 404


def router(**settings: Any) -> Router:
    config = Config(**settings)
    return Router(None, None, None, config, None)  # type: ignore[arg-type]


def handle(router: Router, path: str, user: dict[str, Any], method: str = "GET") -> Answer:
    return asyncio.run(router.handle(Request(method, path, user=user)))


def test_the_page_follows_status_access_and_asks_for_a_login() -> None:
    admin_only = router()
    assert handle(admin_only, "/_dashboard/", ADMIN).status == 200
    assert handle(admin_only, "/_dashboard", ANONYMOUS).status == 302  # shows nothing
    for path in ("/_dashboard/", "/_dashboard/app.js", "/_status"):
        with pytest.raises(HTTPError) as refused:
            handle(admin_only, path, ANONYMOUS)
        assert refused.value.status == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic realm=")
    with pytest.raises(HTTPError) as refused:
        handle(admin_only, "/_dashboard/", {"name": "ann", "roles": []})
    assert refused.value.status == 403
    assert handle(router(status_access="public"), "/_dashboard/", ANONYMOUS).status == 200
    with pytest.raises(HTTPError) as refused:
        handle(admin_only, "/_dashboard/", ADMIN, method="POST")
    assert refused.value.status == 405
