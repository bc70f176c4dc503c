"""Only server admins may change events and workers: ``couchdb-events setup`` and what it puts
in place (a ``validate_doc_update`` design document and a ``_security`` object).

The validate function runs in node as CouchDB would call it; the rest against a PouchDB
Server of its own with an admin, a user without roles (bob) and a user with a reader role
(ann). PouchDB Server 4.2.0 enforces both the validate function and ``_security``, with other
statuses and reasons than CouchDB at places (see POUCHDB_DIFFERENCES.md): the tests take 401
or 403 as a refusal.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from couchdb_events.errors import ConfigError
from couchdb_events.security import (
    DESIGN_ID,
    REFUSAL,
    VALIDATE_DOC_UPDATE,
    design_document,
    security_object,
)
from tests.couch import PouchServer, find_node, find_pouchdb_server, free_port
from tests.daemon_host import http

ADMIN = ("boss", "s3cret-admin-pw")
BOB = ("bob", "bob-pw-123")  # a user without roles
ANN = ("ann", "ann-pw-456")  # a user with the role "readers"
READERS = "readers"
REFUSED = (401, 403)

EVENTS, WORKERS = "events", "workers"  # set up without reader roles
R_EVENTS, R_WORKERS = "r_events", "r_workers"  # set up with --reader-role readers


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"these tests need {reason}", pytrace=False)
    pytest.skip(reason)


def with_user(url: str, user: tuple[str, str] | None) -> str:
    return url if user is None else url.replace("http://", f"http://{user[0]}:{user[1]}@", 1)


def run_setup(
    url: str, *args: str, via_env: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``couchdb-events setup`` as a user runs it; the URL in the environment unless told."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    argv = [sys.executable, "-m", "couchdb_events", "setup", *args]
    if via_env:
        env["COUCHDB_EVENTS_COUCHDB_URL"] = url
    else:
        argv += ["--couchdb-url", url]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def attachment(text: str) -> dict[str, str]:
    return {"content_type": "text/plain", "data": base64.b64encode(text.encode()).decode()}


def event_doc(doc_id: str) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "trigger": {f"/{doc_id}": {"method": "GET"}},
        "workers": {"send_email": {"recipient": "support@example.com"}},
    }


def worker_doc(doc_id: str) -> dict[str, Any]:
    return {
        "_id": doc_id,
        "type": "node",
        "delegate": "main.js",
        "arguments": {},
        "_attachments": {"main.js": attachment("console.error('hi')"), "lib.js": attachment("1")},
    }


def new_doc(db: str) -> dict[str, Any]:
    doc_id = f"d_{uuid.uuid4().hex[:10]}"
    return worker_doc(doc_id) if "workers" in db else event_doc(doc_id)


# -- what setup puts in place, without a server ----------------------------------------------
def test_design_document_and_security_object() -> None:
    assert design_document() == {
        "_id": "_design/couchdb_events",
        "language": "javascript",
        "validate_doc_update": VALIDATE_DOC_UPDATE,
    }
    assert security_object() == {
        "admins": {"names": [], "roles": ["_admin"]},
        "members": {"names": [], "roles": ["_admin"]},
    }
    assert security_object(["readers", "ops", "readers"])["members"] == {
        "names": [],
        "roles": ["_admin", "readers", "ops"],
    }
    assert security_object(["readers"])["admins"] == {"names": [], "roles": ["_admin"]}
    for bad in ("", " ", "_admin", "_reader"):
        with pytest.raises(ConfigError):
            security_object([bad])


def test_validate_function_is_plain_es5() -> None:
    # CouchDB 1.x runs SpiderMonkey 1.8.5.
    assert "=>" not in VALIDATE_DOC_UPDATE
    assert not re.search(r"\b(let|const|class|includes)\b", VALIDATE_DOC_UPDATE)
    assert VALIDATE_DOC_UPDATE.startswith("function (newDoc, oldDoc, userCtx, secObj) {")


# Calls the function as CouchDB does, in a context of its own without node's globals: one
# JSON line in (the source and the cases), one out (per case "ok" or what it threw).
NODE_HARNESS = r"""
const vm = require('vm');
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const validate = vm.runInNewContext('(' + input.source + ')', {});
const results = input.cases.map(function (c) {
  try {
    validate(c[0], c[1], c[2], c[3]);
    return 'ok';
  } catch (e) {
    return {thrown: e};
  }
});
process.stdout.write(JSON.stringify(results));
"""

SEC = {"admins": {"names": ["dbadmin"], "roles": ["dbadmins"]}, "members": {"roles": ["_admin"]}}
DOC = {"_id": "e", "workers": {}}
OLD = {"_id": "e", "_rev": "1-a", "workers": {"x": {}}}
DELETED = {"_id": "e", "_rev": "1-a", "_deleted": True}


def ctx(name: str | None, roles: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"db": "events", "name": name}
    if roles is not None:
        out["roles"] = roles
    return out


ALLOWED = {
    "server admin creates": (DOC, None, ctx("boss", ["_admin"]), SEC),
    "server admin updates": (DOC, OLD, ctx("boss", ["_admin"]), SEC),
    "server admin deletes": (DELETED, OLD, ctx("boss", ["_admin"]), SEC),
    "admin party": (DOC, OLD, ctx(None, ["_admin"]), {}),
    "server admin with more roles": (DOC, OLD, ctx("boss", ["ops", "_admin"]), SEC),
}
REFUSED_CASES = {
    "user creates": (DOC, None, ctx("bob", []), SEC),
    "user updates": (DOC, OLD, ctx("bob", []), SEC),
    "user deletes": (DELETED, OLD, ctx("bob", []), SEC),
    "reader updates": (DOC, OLD, ctx("ann", ["readers"]), SEC),
    "anonymous creates": (DOC, None, ctx(None, []), SEC),
    "database admin by name": (DOC, OLD, ctx("dbadmin", []), SEC),
    "database admin by role": (DOC, OLD, ctx("carl", ["dbadmins"]), SEC),
    "role named like admin": (DOC, OLD, ctx("eve", ["_admin_", "admin", "_ADMIN"]), SEC),
    "no roles field": (DOC, OLD, ctx("bob", None), SEC),
    "no security object": (DOC, OLD, ctx("bob", []), {}),
}


def test_validate_function_in_node() -> None:
    node = find_node()
    if node is None:
        _unavailable("node on PATH")
    names = [*ALLOWED, *REFUSED_CASES]
    cases = [*ALLOWED.values(), *REFUSED_CASES.values()]
    answer = subprocess.run(
        [node, "-e", NODE_HARNESS],
        input=json.dumps({"source": VALIDATE_DOC_UPDATE, "cases": cases}),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    results = dict(zip(names, json.loads(answer.stdout), strict=True))
    for name in ALLOWED:
        assert results[name] == "ok", name
    for name in REFUSED_CASES:
        assert results[name] == {"thrown": {"unauthorized": REFUSAL}}, name


# -- a server with an admin and users --------------------------------------------------------
@dataclass(frozen=True)
class Secured:
    url: str  # anonymous
    admin: str  # with the admin's credentials
    first: subprocess.CompletedProcess[str]  # setup of events and workers
    first_readers: subprocess.CompletedProcess[str]  # setup of r_events, r_workers


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    node, script = find_node(), find_pouchdb_server()
    if node is None:
        _unavailable("node on PATH")
    if script is None:
        _unavailable("PouchDB Server in node_modules (run ./run-tests or npm ci)")
    with PouchServer(node=node, script=script) as couch:
        status = http(
            "PUT", f"{couch.url}_config/admins/{ADMIN[0]}", raw=json.dumps(ADMIN[1]).encode()
        )
        assert status[0] == 200, status
        admin = with_user(couch.url, ADMIN)
        for (name, password), roles in ((BOB, []), (ANN, [READERS])):
            user = {"name": name, "password": password, "roles": roles, "type": "user"}
            status = http("PUT", f"{admin}_users/org.couchdb.user:{name}", user)
            assert status[0] == 201, status
        first = run_setup(admin)
        first_readers = run_setup(
            admin, "--events-db", R_EVENTS, "--workers-db", R_WORKERS, "--reader-role", READERS
        )
        yield Secured(couch.url, admin, first, first_readers)


def admin_get(s: Secured, db: str, doc_id: str) -> tuple[int, Any]:
    status, _h, body = http("GET", f"{s.admin}{db}/{doc_id}")
    return status, body


def admin_put(s: Secured, db: str, doc: dict[str, Any]) -> str:
    status, _h, body = http("PUT", f"{s.admin}{db}/{doc['_id']}", doc)
    assert status == 201, body
    return str(body["rev"])


@pytest.mark.integration
@pytest.mark.e2e
def test_setup_creates_and_secures_both_databases(secured: Secured) -> None:
    first = secured.first
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    lines = first.stdout.splitlines()
    assert "created database events" in lines
    assert "created database workers" in lines
    for db in (EVENTS, WORKERS, f"{EVENTS}_state"):
        assert any(line.startswith(f"database {db}: added {DESIGN_ID} (rev 1-") for line in lines)
        assert f"database {db}: set _security: only server admins may read it" in first.stdout
        status, ddoc = admin_get(secured, db, DESIGN_ID)
        assert status == 200
        assert ddoc["validate_doc_update"] == VALIDATE_DOC_UPDATE
        assert ddoc["language"] == "javascript"
        assert http("GET", f"{secured.admin}{db}/_security")[2] == security_object()
    assert lines[-1] == (
        "events, workers and events_state: only CouchDB server admins may create, change or "
        "delete documents; only server admins may read them"
    )
    assert ADMIN[1] not in first.stdout + first.stderr

    readers = secured.first_readers
    assert readers.returncode == 0, readers.stderr
    for db in (R_EVENTS, R_WORKERS):
        assert f"database {db}: set _security: only server admins and roles readers" in (
            readers.stdout
        )
        assert http("GET", f"{secured.admin}{db}/_security")[2] == security_object([READERS])


@pytest.mark.integration
@pytest.mark.e2e
def test_second_setup_changes_nothing(secured: Secured) -> None:
    for dbs, extra in (
        ((EVENTS, WORKERS), ()),
        ((R_EVENTS, R_WORKERS), ("--reader-role", READERS)),
    ):
        before = {db: admin_get(secured, db, DESIGN_ID)[1]["_rev"] for db in dbs}
        security = {db: http("GET", f"{secured.admin}{db}/_security")[2] for db in dbs}
        again = run_setup(secured.admin, "--events-db", dbs[0], "--workers-db", dbs[1], *extra)
        assert again.returncode == 0, again.stderr
        for db in dbs:
            assert f"database {db} already exists" in again.stdout
            assert f"database {db}: {DESIGN_ID} is in place (rev {before[db]})" in again.stdout
            assert f"database {db}: _security is in place" in again.stdout
            assert admin_get(secured, db, DESIGN_ID)[1]["_rev"] == before[db]
            assert http("GET", f"{secured.admin}{db}/_security")[2] == security[db]
        assert "created" not in again.stdout
        assert "added" not in again.stdout
        assert "set _security" not in again.stdout


@pytest.mark.integration
@pytest.mark.parametrize("db", [EVENTS, WORKERS, R_EVENTS, R_WORKERS])
def test_admin_can_create_update_and_delete(secured: Secured, db: str) -> None:
    doc = new_doc(db)
    url = f"{secured.admin}{db}/{doc['_id']}"
    status, _h, body = http("PUT", url, {**doc, "_attachments": {"a.txt": attachment("one")}})
    assert status == 201, body
    rev = body["rev"]
    status, _h, body = http("PUT", url, {**doc, "_rev": rev, "note": "updated"})  # attachments too
    assert status == 201, body
    rev = body["rev"]
    status, _h, body = http(
        "PUT", f"{url}/extra.txt?rev={rev}", raw=b"two", headers={"Content-Type": "text/plain"}
    )
    assert status == 201, body
    rev = body["rev"]
    status, stored = admin_get(secured, db, doc["_id"])
    assert status == 200
    assert stored["note"] == "updated"
    assert set(stored["_attachments"]) == {*doc.get("_attachments", {}), "extra.txt"}
    status, _h, body = http("DELETE", f"{url}?rev={rev}")
    assert status == 200, body
    assert admin_get(secured, db, doc["_id"])[0] == 404


def refused(status: int, body: Any) -> bool:
    return (
        status in REFUSED
        and isinstance(body, dict)
        and body.get("error")
        in (
            "unauthorized",
            "forbidden",
        )
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("who", "db"),
    [
        (BOB, EVENTS),
        (BOB, WORKERS),
        (ANN, EVENTS),
        (ANN, WORKERS),
        (None, EVENTS),
        (None, WORKERS),
        (BOB, R_EVENTS),
        (BOB, R_WORKERS),
        (ANN, R_EVENTS),  # a member: only the validate function stops her
        (ANN, R_WORKERS),
        (None, R_EVENTS),
        (None, R_WORKERS),
    ],
    ids=lambda x: x[0] if isinstance(x, tuple) else ("anonymous" if x is None else x),
)
def test_a_non_admin_cannot_create_or_change(
    secured: Secured, who: tuple[str, str] | None, db: str
) -> None:
    base = with_user(secured.url, who) + db
    reader = who == ANN and db in (R_EVENTS, R_WORKERS)

    # Create: plain PUT, POST, and a worker with its code as attachments.
    doc = new_doc(db)
    status, _h, body = http("PUT", f"{base}/{doc['_id']}", doc)
    assert refused(status, body), (status, body)
    if reader:
        assert body == {"error": "unauthorized", "reason": REFUSAL}
    status, _h, body = http("POST", base, doc)
    assert refused(status, body), (status, body)
    assert admin_get(secured, db, doc["_id"])[0] == 404

    # Change one the admin made: update, attachment, delete; and through _bulk_docs.
    existing = new_doc(db)
    rev = admin_put(secured, db, existing)
    url = f"{base}/{existing['_id']}"
    attempts = [
        ("PUT", url, {**existing, "_rev": rev, "type": "sh"}, None, None),
        ("PUT", f"{url}/evil.sh?rev={rev}", None, b"rm -rf ~", {"Content-Type": "text/plain"}),
        ("DELETE", f"{url}?rev={rev}", None, None, None),
    ]
    for method, target, body_in, raw, headers in attempts:
        status, _h, body = http(method, target, body_in, headers=headers, raw=raw)
        assert refused(status, body), (method, target, status, body)
        if reader:
            assert body == {"error": "unauthorized", "reason": REFUSAL}
    status, _h, body = http(
        "POST", f"{base}/_bulk_docs", {"docs": [{**existing, "_rev": rev, "type": "sh"}]}
    )
    assert refused(status, body) or (
        status == 201 and [row.get("error") for row in body] == ["unauthorized"]
    ), (status, body)
    status, stored = admin_get(secured, db, existing["_id"])
    assert status == 200
    assert stored["_rev"] == rev

    # Reading: members only.
    status, _h, body = http("GET", url)
    if reader:
        assert status == 200, body
    else:
        assert refused(status, body), (status, body)


@pytest.mark.integration
@pytest.mark.parametrize("who", [BOB, ANN, None], ids=["bob", "ann", "anonymous"])
@pytest.mark.parametrize("db", [EVENTS, R_WORKERS])
def test_a_non_admin_cannot_switch_the_rule_off(
    secured: Secured, who: tuple[str, str] | None, db: str
) -> None:
    base = with_user(secured.url, who) + db
    ddoc = admin_get(secured, db, DESIGN_ID)[1]
    security = http("GET", f"{secured.admin}{db}/_security")[2]
    allow_all = {**ddoc, "validate_doc_update": "function () {}"}
    for method, url, body_in in (
        ("PUT", f"{base}/{DESIGN_ID}", allow_all),
        ("DELETE", f"{base}/{DESIGN_ID}?rev={ddoc['_rev']}", None),
        ("PUT", f"{base}/_design/other", {"validate_doc_update": "function () {}"}),
        ("PUT", f"{base}/_security", {"admins": {"names": ["bob", "ann"], "roles": []}}),
    ):
        status, _h, body = http(method, url, body_in)
        assert refused(status, body), (method, url, status, body)
    assert admin_get(secured, db, DESIGN_ID)[1]["_rev"] == ddoc["_rev"]
    assert admin_get(secured, db, "_design/other")[0] == 404
    assert http("GET", f"{secured.admin}{db}/_security")[2] == security


@pytest.mark.integration
@pytest.mark.e2e
def test_setup_puts_back_a_changed_validate_function(secured: Secured) -> None:
    events, workers = f"x_{uuid.uuid4().hex[:8]}", f"y_{uuid.uuid4().hex[:8]}"
    assert run_setup(secured.admin, "--events-db", events, "--workers-db", workers).returncode == 0
    ddoc = admin_get(secured, events, DESIGN_ID)[1]
    changed = {**ddoc, "validate_doc_update": "function () {}", "views": {"v": {"map": "x"}}}
    admin_put(secured, events, changed)
    http("PUT", f"{secured.admin}{workers}/_security", {})  # as good as no _security

    again = run_setup(secured.admin, "--events-db", events, "--workers-db", workers)
    assert again.returncode == 0, again.stderr
    assert re.search(
        rf"database {events}: updated {DESIGN_ID} to rev 3-\w+: its validate_doc_update had "
        "been changed",
        again.stdout,
    ), again.stdout
    assert f"database {workers}: set _security: only server admins may read it" in again.stdout
    restored = admin_get(secured, events, DESIGN_ID)[1]
    assert restored["validate_doc_update"] == VALIDATE_DOC_UPDATE
    assert restored["views"] == {"v": {"map": "x"}}  # what else it held is kept
    assert http("GET", f"{secured.admin}{workers}/_security")[2] == security_object()
    status, _h, body = http("PUT", with_user(secured.url, ANN) + f"{events}/e", event_doc("e"))
    assert refused(status, body), (status, body)


def one_line_error(result: subprocess.CompletedProcess[str], *secrets: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("couchdb-events setup: error: ")
    assert "Traceback" not in result.stderr
    for secret in secrets:
        assert secret not in result.stderr
    return lines[0]


@pytest.mark.integration
@pytest.mark.e2e
def test_setup_needs_a_server_admin(secured: Secured) -> None:
    events, workers = f"n_{uuid.uuid4().hex[:8]}", f"m_{uuid.uuid4().hex[:8]}"
    dbs = ("--events-db", events, "--workers-db", workers)

    line = one_line_error(run_setup(with_user(secured.url, BOB), *dbs), BOB[1])
    assert "knows 'bob', but not as a server admin" in line
    assert f"http://bob:*****@127.0.0.1:{secured.url.split(':')[2]}" in line

    line = one_line_error(run_setup(with_user(secured.url, (ADMIN[0], "wr0ng-pw")), *dbs), "wr0ng")
    assert "rejects the credentials in couchdb_url" in line

    line = one_line_error(run_setup(secured.url, *dbs, via_env=False))
    assert "takes the requests as anonymous" in line

    for db in (events, workers):  # nothing was created
        assert http("GET", f"{secured.admin}{db}")[0] == 404
    # The server is still up (a non-admin's PUT /<db> would have ended PouchDB Server).
    assert http("GET", secured.url)[0] == 200


def test_setup_when_couchdb_does_not_answer() -> None:
    url = f"http://boss:s3cr3t-pw@127.0.0.1:{free_port()}/"
    line = one_line_error(run_setup(url, via_env=False), "s3cr3t-pw")
    assert "CouchDB does not answer at http://boss:*****@127.0.0.1:" in line


def test_setup_refuses_a_reserved_reader_role() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    result = run_setup(url, "--reader-role", "_admin")
    assert result.returncode == 2
    assert "roles starting with '_' are CouchDB's own" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.e2e
def test_setup_warns_about_an_admin_party(couch_url: str, fresh_db: Any) -> None:
    events, workers = fresh_db("sec"), fresh_db("sec")
    result = run_setup(couch_url, "--events-db", events, "--workers-db", workers)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'warning: CouchDB at {couch_url} has no admins ("admin party"')
    assert f"database {events} already exists" in result.stdout
    assert f"database {workers} already exists" in result.stdout


# -- the service reads the secured databases -------------------------------------------------
WHO_PY = """
import couchdb_events_worker as w
w.run(lambda m: {"hello": m["arguments"]["to"]}, mode="reply")
"""


@pytest.mark.integration
@pytest.mark.e2e
def test_the_service_runs_events_from_secured_databases(secured: Secured, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    worker = {
        "_id": f"hello_{tag}",
        "type": "python",
        "delegate": "w.py",
        "mode": "reply",
        "_attachments": {"w.py": attachment(WHO_PY)},
    }
    admin_put(secured, WORKERS, worker)
    admin_put(secured, EVENTS, {"_id": f"greet_{tag}", "workers": {worker["_id"]: {"to": "ann"}}})
    port = free_port()
    ini = tmp_path / "serve.ini"
    ini.write_text(
        f"[couchdb_events]\ncouchdb_url = {secured.admin}\nport = {port}\n"
        f"work_dir = {tmp_path / 'work'}\nstatus_access = public\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "couchdb_events", "serve", "--config", str(ini)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/_events/"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                status, _h, body = http("GET", url + "_status", timeout=2)
                if status == 200 and worker["_id"] in body.get("workers", {}):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        status, _h, body = http("GET", f"{url}greet_{tag}?wait=10")
        assert status == 200, (body, log.read_text())
        assert [run["answer"] for run in body["runs"]] == [{"hello": "ann"}]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
