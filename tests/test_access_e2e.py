"""Who may fire what, against a server with an admin and users (serve mode): a PouchDB Server
of its own, or the CouchDB of COUCHDB_URL and its admin (``server_with_admin``).

The server here has an admin, so it is no longer an "admin party": anonymous callers are
anonymous, and couchdb-events must ask ``/_session`` who each caller is. The users (ann, role
mailers; bob, no roles) and the databases have names of their own.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.couch.embedded import EmbeddedCouch, free_port
from tests.couch import CouchServer, server_with_admin
from tests.daemon_host import http
from tests.docs import put_doc, put_worker

pytestmark = pytest.mark.e2e

WHO_PY = """
import couchdb_events_worker as w
w.run(lambda m: {"user": m["request"]["user"]}, mode="reply")
"""


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Secured:
    server: CouchServer  # url: with the admin's credentials
    admin: tuple[str, str]
    ann: tuple[str, str]  # role mailers
    bob: tuple[str, str]  # no roles
    events: str
    workers: str


@pytest.fixture(scope="module")
def secured(couch: CouchServer) -> Iterator[Secured]:
    """A server with an admin, users ann (role mailers) and bob (no roles), and the documents."""
    with server_with_admin(couch) as server:
        assert server.admin is not None
        ann, bob = server.add_user("ann", roles=["mailers"]), server.add_user("bob")
        events, workers = server.create_db("events"), server.create_db("workers")
        authed = server.url
        put_worker(
            authed, workers, "who", {"w.py": WHO_PY}, type="python", delegate="w.py", mode="reply"
        )
        put_doc(authed, events, {"_id": "open", "workers": {"who": {}}})
        put_doc(authed, events, {"_id": "mail", "roles": ["mailers"], "workers": {"who": {}}})
        put_doc(authed, events, {"_id": "hello", "public": True, "workers": {"who": {}}})
        yield Secured(server, server.admin, ann, bob, events, workers)


StartServe = Callable[..., str]


@pytest.fixture
def serve(secured: Secured, tmp_path: Path) -> Iterator[StartServe]:
    procs: list[subprocess.Popen[bytes]] = []
    admin = basic(*secured.admin)

    def start(**settings: str) -> str:
        port = free_port()
        ini = tmp_path / f"serve{len(procs)}.ini"
        lines = [
            "[couchdb_events]",
            f"couchdb_url = {secured.server.url}",
            f"events_db = {secured.events}",
            f"workers_db = {secured.workers}",
            f"port = {port}",
            f"work_dir = {tmp_path / 'work'}",
            *(f"{k} = {v}" for k, v in settings.items()),
        ]
        ini.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "serve", "--config", str(ini)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(proc)
        url = f"http://127.0.0.1:{port}/_events/"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, "serve exited at start"
            try:
                if http("GET", url, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not answer"
            time.sleep(0.05)
        wait_until = time.monotonic() + 10
        while http("GET", url + "_status", headers=admin)[2].get("workers", {}).get("who") is None:
            assert time.monotonic() < wait_until
            time.sleep(0.05)
        return url

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fire(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _h, body = http("GET", f"{url}{path}?wait=10", headers=headers)
    return status, body


def test_wrong_password_is_refused(serve: StartServe, secured: Secured) -> None:
    url = serve()
    status, body = fire(url, "open", basic(secured.ann[0], "wrong"))
    assert (status, body["error"]) == (401, "unauthorized")


def test_roles_decide_who_may_fire(serve: StartServe, secured: Secured) -> None:
    url = serve()
    assert fire(url, "mail")[0] == 401
    status, body = fire(url, "mail", basic(*secured.bob))
    assert (status, body["error"]) == (403, "forbidden") and "mailers" in body["reason"]
    status, body = fire(url, "mail", basic(*secured.ann))
    assert status == 200 and body["runs"][0]["answer"]["user"] == {
        "name": secured.ann[0],
        "roles": ["mailers"],
    }
    status, body = fire(url, "mail", basic(*secured.admin))
    assert status == 200 and body["runs"][0]["answer"]["user"]["name"] == secured.admin[0]


def test_cookie_sessions_work_too(serve: StartServe, secured: Secured) -> None:
    url = serve()
    name, password = secured.ann
    form = urllib.parse.urlencode({"name": name, "password": password}).encode()
    status, headers, _b = http(
        "POST", secured.server.public_url + "_session", raw=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    status, body = fire(url, "mail", {"Cookie": cookie})
    assert status == 200 and body["runs"][0]["answer"]["user"]["name"] == name


@pytest.mark.couchdb_only("PouchDB Server takes malformed credentials as an anonymous caller")
def test_malformed_credentials_get_couchdbs_400(serve: StartServe, secured: Secured) -> None:
    """As CouchDB 3.5 answers them itself: an Authorization header that is not base64, or an
    AuthSession cookie that is not one, is the caller's error, whatever the event needs."""
    url = serve()
    for event in ("open", "mail"):
        status, body = fire(url, event, {"Authorization": "Basic !!!"})
        assert (status, body["error"]) == (400, "bad_request"), body
        assert body["reason"] == "Authorization header has invalid base64 value"
        status, body = fire(url, event, {"Cookie": "AuthSession=garbage"})
        assert (status, body["error"]) == (400, "bad_request"), body
        assert body["reason"] == "Malformed AuthSession cookie. Please clear your cookies."
    # CouchDB says the same to a request of its own.
    status, _h, body = http(
        "GET", secured.server.public_url + "_session", headers={"Authorization": "Basic !!!"}
    )
    assert (status, body["reason"]) == (400, "Authorization header has invalid base64 value")


def test_anonymous_may_fire_an_open_event_without_asking_couchdb(serve: StartServe) -> None:
    url = serve()
    status, body = fire(url, "open")
    assert status == 200 and body["runs"][0]["answer"]["user"] is None


def test_require_valid_user(serve: StartServe, secured: Secured) -> None:
    url = serve(require_valid_user="true")
    assert fire(url, "open")[0] == 401
    assert fire(url, "no_such_event")[0] == 401  # strangers learn nothing
    assert fire(url, "no_such_event", basic(*secured.bob))[0] == 404
    assert fire(url, "open", basic(*secured.bob))[0] == 200
    status, body = fire(url, "hello")  # public
    assert status == 200 and body["runs"][0]["answer"]["user"] is None


@pytest.mark.parametrize(
    ("access", "anonymous", "bob", "boss"),
    [("admin", 401, 403, 200), ("user", 401, 200, 200), ("public", 200, 200, 200)],
)
def test_status_access(
    serve: StartServe, secured: Secured, access: str, anonymous: int, bob: int, boss: int
) -> None:
    url = serve(status_access=access)
    assert http("GET", url + "_status")[0] == anonymous
    assert http("GET", url + "_status", headers=basic(*secured.bob))[0] == bob
    assert http("GET", url + "_status", headers=basic(*secured.admin))[0] == boss


@pytest.mark.parametrize("durable", [True, False])
def test_couchdb_down_means_503_not_a_pass(tmp_path: Path, durable: bool) -> None:
    # A PouchDB Server of its own, also when COUCHDB_URL names a CouchDB: the test stops it.
    with EmbeddedCouch() as couch:
        for db in ("events", "workers"):
            assert http("PUT", couch.url + db)[0] == 201
        put_worker(
            couch.url,
            "workers",
            "who",
            {"w.py": WHO_PY},
            type="python",
            delegate="w.py",
            mode="reply",
        )
        put_doc(couch.url, "events", {"_id": "mail", "roles": ["mailers"], "workers": {"who": {}}})
        put_doc(couch.url, "events", {"_id": "open", "workers": {"who": {}}})
        port = free_port()
        ini = tmp_path / "serve.ini"
        ini.write_text(f"[couchdb_events]\ndurable = {str(durable).lower()}\n")
        proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "serve", "--couchdb-url", couch.url,
             "--port", str(port), "--work-dir", str(tmp_path / "w"), "--config", str(ini)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/_events/"
            deadline = time.monotonic() + 20
            while True:
                try:
                    status, _h, body = http("GET", url + "_status", timeout=2)
                    if status == 200 and "mail" in body["events"] and "who" in body["workers"]:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert fire(url, "open")[0] == 200  # the worker's code is fetched while CouchDB is up
            couch.stop()
            status, body = fire(url, "mail", basic("ann", "ann-pw"))
            assert (status, body["error"]) == (503, "unavailable")
            status, body = fire(url, "open")
            if durable:  # nothing is acknowledged that was not stored
                assert (status, body["error"]) == (503, "unavailable")
                assert "activation record" in body["reason"]
            else:  # nothing to decide and nothing to store: goes on
                assert status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
