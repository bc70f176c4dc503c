"""Who may fire what, against a real PouchDB Server with an admin and users (serve mode).

The server here has an admin, so it is no longer an "admin party": anonymous callers are
anonymous, and couchdb-events must ask ``/_session`` who each caller is.
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
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.embedded import EmbeddedCouch, free_port
from tests.daemon_host import http
from tests.docs import put_doc, put_worker

pytestmark = pytest.mark.e2e

ADMIN = ("boss", "s3cret")
WHO_PY = """
import couchdb_events_worker as w
w.run(lambda m: {"user": m["request"]["user"]}, mode="reply")
"""


def basic(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="module")
def secured() -> Iterator[EmbeddedCouch]:
    """A server with an admin, users ann (role mailers) and bob (no roles), and the documents."""
    with EmbeddedCouch() as couch:
        assert http("PUT", couch.url + "_config/admins/" + ADMIN[0], raw=b'"s3cret"')[0] == 200
        admin = basic(*ADMIN)
        for name, roles in (("ann", ["mailers"]), ("bob", [])):
            doc = {"name": name, "password": f"{name}-pw", "roles": roles, "type": "user"}
            url = f"{couch.url}_users/org.couchdb.user:{name}"
            assert http("PUT", url, doc, headers=admin)[0] == 201
        authed = couch.url.replace("http://", f"http://{ADMIN[0]}:{ADMIN[1]}@")
        for db in ("events", "workers"):
            assert http("PUT", couch.url + db, headers=admin)[0] == 201
        put_worker(
            authed, "workers", "who", {"w.py": WHO_PY}, type="python", delegate="w.py", mode="reply"
        )
        put_doc(authed, "events", {"_id": "open", "workers": {"who": {}}})
        put_doc(authed, "events", {"_id": "mail", "roles": ["mailers"], "workers": {"who": {}}})
        put_doc(authed, "events", {"_id": "hello", "public": True, "workers": {"who": {}}})
        yield couch


StartServe = Callable[..., str]


@pytest.fixture
def serve(secured: EmbeddedCouch, tmp_path: Path) -> Iterator[StartServe]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(**settings: str) -> str:
        port = free_port()
        ini = tmp_path / f"serve{len(procs)}.ini"
        authed = secured.url.replace("http://", f"http://{ADMIN[0]}:{ADMIN[1]}@")
        lines = [
            "[couchdb_events]",
            f"couchdb_url = {authed}",
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
        while (
            http("GET", url + "_status", headers=basic(*ADMIN))[2].get("workers", {}).get("who")
            is None
        ):
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


def test_wrong_password_is_refused(serve: StartServe) -> None:
    url = serve()
    status, body = fire(url, "open", basic("ann", "wrong"))
    assert (status, body["error"]) == (401, "unauthorized")


def test_roles_decide_who_may_fire(serve: StartServe) -> None:
    url = serve()
    assert fire(url, "mail")[0] == 401
    status, body = fire(url, "mail", basic("bob", "bob-pw"))
    assert (status, body["error"]) == (403, "forbidden") and "mailers" in body["reason"]
    status, body = fire(url, "mail", basic("ann", "ann-pw"))
    assert status == 200 and body["runs"][0]["answer"]["user"] == {
        "name": "ann",
        "roles": ["mailers"],
    }
    status, body = fire(url, "mail", basic(*ADMIN))
    assert status == 200 and body["runs"][0]["answer"]["user"]["name"] == "boss"


def test_cookie_sessions_work_too(serve: StartServe, secured: EmbeddedCouch) -> None:
    url = serve()
    form = urllib.parse.urlencode({"name": "ann", "password": "ann-pw"}).encode()
    status, headers, _b = http(
        "POST", secured.url + "_session", raw=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    status, body = fire(url, "mail", {"Cookie": cookie})
    assert status == 200 and body["runs"][0]["answer"]["user"]["name"] == "ann"


def test_anonymous_may_fire_an_open_event_without_asking_couchdb(serve: StartServe) -> None:
    url = serve()
    status, body = fire(url, "open")
    assert status == 200 and body["runs"][0]["answer"]["user"] is None


def test_require_valid_user(serve: StartServe) -> None:
    url = serve(require_valid_user="true")
    assert fire(url, "open")[0] == 401
    assert fire(url, "no_such_event")[0] == 401  # strangers learn nothing
    assert fire(url, "no_such_event", basic("bob", "bob-pw"))[0] == 404
    assert fire(url, "open", basic("bob", "bob-pw"))[0] == 200
    status, body = fire(url, "hello")  # public
    assert status == 200 and body["runs"][0]["answer"]["user"] is None


@pytest.mark.parametrize(
    ("access", "anonymous", "bob", "boss"),
    [("admin", 401, 403, 200), ("user", 401, 200, 200), ("public", 200, 200, 200)],
)
def test_status_access(serve: StartServe, access: str, anonymous: int, bob: int, boss: int) -> None:
    url = serve(status_access=access)
    assert http("GET", url + "_status")[0] == anonymous
    assert http("GET", url + "_status", headers=basic("bob", "bob-pw"))[0] == bob
    assert http("GET", url + "_status", headers=basic(*ADMIN))[0] == boss


@pytest.mark.parametrize("durable", [True, False])
def test_couchdb_down_means_503_not_a_pass(tmp_path: Path, durable: bool) -> None:
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
