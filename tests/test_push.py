"""``couchdb-events push``: reading and checking event files and worker folders, then saving them.

The unit tests need no server (a fake store records what would be saved); the integration tests
push to the tests' server (PouchDB Server, or COUCHDB_URL's CouchDB) and read the result back
over plain HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.cli import push
from couchdb_events.cli.push import load_json, push_path
from couchdb_events.config import Config
from couchdb_events.errors import Conflict, DocumentError, NotFound, Unreachable
from tests.couch import split_credentials

# The seed's two documents, typos included.
SEED_EVENT = """{
   "_id": "email_event",
   "trigger": {
       "/send_email": {
           "method": "GET"
       }
   },
   "workers": {
       "send_email": {
           "recipient": "support@yourcompany.com",
       }
   }
}
"""

SEED_WORKER = """{
   "_id": "send_email",
   "arguments": {
   },
   "delegate": "sendmail.js",
   type: node,
   "_attachments": {
       "sendmail.js": {...},
      someOtherScript.js: {...}
   }
}
"""

FIXED_EVENT = SEED_EVENT.replace('"support@yourcompany.com",', '"support@yourcompany.com"')
WORKER_DOC = {"_id": "send_email", "arguments": {}, "delegate": "sendmail.js", "type": "node"}
SENDMAIL_JS = "const helper = require('./lib/helper.js');\nprocess.stdin.on('data', helper.send);\n"
HELPER_JS = "exports.send = (line) => process.stderr.write(line);\n"


def json_error(text: str) -> json.JSONDecodeError:
    """What Python's json says about ``text`` (its wording and position vary between versions)."""
    with pytest.raises(json.JSONDecodeError) as info:
        json.loads(text)
    return info.value


def refusal(config: Config, path: Path) -> str:
    with pytest.raises(DocumentError) as info:
        push_path(config, path)
    return str(info.value)


def worker_folder(
    parent: Path, doc: Mapping[str, Any] | None = None, files: Mapping[str, str] | None = None
) -> Path:
    folder = parent / "send_email"
    folder.mkdir()
    (folder / "doc.json").write_text(json.dumps(WORKER_DOC if doc is None else doc))
    for name, text in (files or {"sendmail.js": SENDMAIL_JS}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


class FakeStore:
    """Stands in for ``Store``: one database of documents, conflicts on demand."""

    docs: dict[str, dict[str, Any]]
    puts: list[dict[str, Any]]
    conflicts: int

    def __init__(self, url: str, timeout: float) -> None:
        pass

    def get(self, db: str, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            raise NotFound(f"GET /{db}/{doc_id}: not found")
        return self.docs[doc_id]

    def put(self, db: str, doc: Mapping[str, Any]) -> str:
        self.puts.append(dict(doc))
        if self.conflicts:
            self.conflicts -= 1
            raise Conflict(f"PUT /{db}/{doc['_id']}: conflict")
        current = self.docs.get(doc["_id"])
        assert doc.get("_rev") == (current["_rev"] if current else None)
        number = int(current["_rev"].split("-")[0]) + 1 if current else 1
        self.docs[doc["_id"]] = {**doc, "_rev": f"{number}-abc"}
        return f"{number}-abc"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> type[FakeStore]:
    FakeStore.docs, FakeStore.puts, FakeStore.conflicts = {}, [], 0
    monkeypatch.setattr(push, "Store", FakeStore)
    return FakeStore


# -- JSON errors ------------------------------------------------------------------------------
def test_seed_event_trailing_comma_is_located(tmp_path: Path) -> None:
    path = tmp_path / "email_event.json"
    path.write_text(SEED_EVENT)
    message = refusal(Config(), path)
    error = json_error(SEED_EVENT)
    assert message.startswith(f"{path}:{error.lineno}:{error.colno}: {error.msg}\n")
    # The comma itself is line 10, column 50: Python 3.13+ reports it there ("Illegal trailing
    # comma"); older versions report the "}" after it and push adds a note pointing at the comma.
    assert f"{path}:10:50:" in message
    assert '           "recipient": "support@yourcompany.com",\n' + " " * 49 + "^" in message
    if sys.version_info < (3, 13):
        assert (error.lineno, error.colno) == (11, 8)
        assert message == (
            f"{path}:11:8: Expecting property name enclosed in double quotes\n"
            "       }\n"
            "       ^\n"
            f"{path}:10:50: note: JSON allows no comma before }}\n"
            '           "recipient": "support@yourcompany.com",\n'
            f"{' ' * 49}^"
        )


def test_seed_worker_unquoted_key_is_located(tmp_path: Path) -> None:
    folder = tmp_path / "send_email"
    folder.mkdir()
    (folder / "doc.json").write_text(SEED_WORKER)
    (folder / "sendmail.js").write_text(SENDMAIL_JS)
    message = refusal(Config(), folder)
    error = json_error(SEED_WORKER)
    assert (error.lineno, error.colno) == (6, 4)
    assert message == (f"{folder / 'doc.json'}:6:4: {error.msg}\n   type: node,\n   ^")


def test_caret_keeps_tabs_and_long_lines_are_cut(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text('{\n\t"a": x}')
    assert str(refusal(Config(), path)).endswith('\t"a": x}\n\t     ^')
    path.write_text('{"a": "' + "y" * 500 + '", "b": x}')
    last_two = refusal(Config(), path).splitlines()[-2:]
    assert last_two[0].startswith("...") and len(last_two[0]) < 140
    assert last_two[0][last_two[1].index("^")] == "x"


@pytest.mark.parametrize(
    ("text", "kind"),
    [("[1, 2]", "an array"), ('"x"', "a string"), ("3", "a number"), ("null", "null")],
)
def test_top_level_must_be_an_object(tmp_path: Path, text: str, kind: str) -> None:
    path = tmp_path / "email_event.json"
    path.write_text(text)
    with pytest.raises(DocumentError) as info:
        load_json(path)
    assert str(info.value) == f"{path}: the top level must be an object {{...}}, not {kind}"


def test_unreadable_json(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(b'{"a": "\xff"}')
    assert refusal(Config(), path) == f"{path}: not UTF-8 text (byte 7)"
    path.write_text('{"a": NaN}')
    assert "NaN is not valid JSON" in refusal(Config(), path)
    path.write_text("")
    assert refusal(Config(), path).startswith(f"{path}:1:1: Expecting value")


# -- events -----------------------------------------------------------------------------------
def test_event_is_saved_and_updated(tmp_path: Path, store: type[FakeStore]) -> None:
    path = tmp_path / "email_event.json"
    path.write_text(FIXED_EVENT)
    assert push_path(Config(), path) == "event email_event -> events (rev 1-abc)"
    assert push_path(Config(events_db="ev"), path) == "event email_event -> ev (rev 2-abc)"
    assert store.puts[1]["_rev"] == "1-abc"
    assert store.docs["email_event"]["workers"] == {
        "send_email": {"recipient": "support@yourcompany.com"}
    }


def test_event_id_defaults_to_the_file_name(tmp_path: Path, store: type[FakeStore]) -> None:
    path = tmp_path / "ping.json"
    path.write_text('{"workers": {"echo": {}}, "_rev": "7-stale"}')
    assert push_path(Config(), path) == "event ping -> events (rev 1-abc)"
    assert store.puts == [{"_id": "ping", "workers": {"echo": {}}}]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"_id": "e"}', "event 'e': no \"workers\""),
        ('{"_id": "e", "workers": {"w": {}}, "trigger": "/x"}', '"trigger" must be an object'),
        ('{"_id": "e", "workers": {"w": {}}, "trigger": [{}]}', 'trigger 1 has no "path"'),
        ('{"_id": 3, "workers": {"w": {}}}', "_id must be a non-empty string, not 3"),
        ('{"_id": "_design/x", "workers": {"w": {}}}', "ids starting with '_' are CouchDB's own"),
    ],
)
def test_bad_event_is_refused(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "e.json"
    path.write_text(text)
    message = refusal(Config(), path)
    assert message.startswith(f"{path}: ") and needle in message


def test_conflict_is_retried_once(tmp_path: Path, store: type[FakeStore]) -> None:
    path = tmp_path / "e.json"
    path.write_text('{"workers": {"w": {}}}')
    store.conflicts = 1
    assert push_path(Config(), path) == "event e -> events (rev 1-abc)"
    store.conflicts = 2
    with pytest.raises(Conflict):
        push_path(Config(), path)
    assert len(store.puts) == 4


def test_store_errors_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    path.write_text('{"workers": {"w": {}}}')
    with pytest.raises(Unreachable):
        push_path(Config(couchdb_url="http://127.0.0.1:1/", couchdb_timeout=2), path)


@pytest.mark.parametrize("name", ["missing.json", "notes.txt"])
def test_neither_event_nor_worker(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "notes.txt":
        path.write_text("{}")
        assert refusal(Config(), path).endswith(
            "not an event (a .json file) or a worker (a folder)"
        )
    else:
        assert refusal(Config(), path) == f"{path}: no such file or folder"


# -- workers ----------------------------------------------------------------------------------
def test_worker_files_become_attachments(tmp_path: Path, store: type[FakeStore]) -> None:
    folder = worker_folder(
        tmp_path,
        files={
            "sendmail.js": SENDMAIL_JS,
            "lib/helper.js": HELPER_JS,
            "data/logo.png": "png",
            "data/blob": "?",
            ".env": "SECRET=1",
            ".git/config": "x",
            "__pycache__/x.pyc": "x",
            "lib/__pycache__/y.pyc": "x",
            "lib/doc.json": "{}",
        },
    )
    (folder / "lib" / "alias.js").symlink_to("helper.js")
    (folder / "linked").symlink_to(folder / "lib", target_is_directory=True)
    summary = push_path(Config(workers_db="wk"), folder)
    assert summary == (
        "worker send_email -> wk (rev 1-abc, 9 attachments)\n"
        "left out: __pycache__/, lib/__pycache__/"
    )
    [saved] = store.puts
    types = {name: att["content_type"] for name, att in saved["_attachments"].items()}
    assert types == {
        "data/blob": "application/octet-stream",
        "data/logo.png": "image/png",
        "lib/alias.js": "application/javascript",
        "lib/doc.json": "application/json",
        "lib/helper.js": "application/javascript",
        "linked/alias.js": "application/javascript",
        "linked/doc.json": "application/json",
        "linked/helper.js": "application/javascript",
        "sendmail.js": "application/javascript",
    }
    data = saved["_attachments"]["lib/alias.js"]["data"]
    assert base64.b64decode(data).decode() == HELPER_JS
    assert {k: v for k, v in saved.items() if k != "_attachments"} == WORKER_DOC


def test_dependency_files_are_sent_and_installed_ones_left_out(
    tmp_path: Path, store: type[FakeStore]
) -> None:
    folder = worker_folder(
        tmp_path,
        files={
            "sendmail.js": SENDMAIL_JS,
            "package.json": '{"dependencies": {"is-number": "7.0.0"}}',
            "package-lock.json": "{}",
            "requirements.txt": "six==1.16.0\n",
            "node_modules/is-number/index.js": "x",
            "node_modules/.package-lock.json": "{}",
            ".venv/bin/python": "x",
            "venv/lib/site.py": "x",
            "lib/__pycache__/y.pyc": "x",
        },
    )
    summary = push_path(Config(workers_db="wk"), folder)
    assert summary == (
        "worker send_email -> wk (rev 1-abc, 4 attachments)\n"
        "left out: .venv/, lib/__pycache__/, node_modules/, venv/"
    )
    [saved] = store.puts
    names = set(saved["_attachments"])
    assert names == {"package-lock.json", "package.json", "requirements.txt", "sendmail.js"}


def test_worker_doc_attachments_are_replaced(tmp_path: Path, store: type[FakeStore]) -> None:
    stale = {"old.js": {"stub": True}, "sendmail.js": {"data": "eA=="}}
    doc = {k: v for k, v in WORKER_DOC.items() if k != "_id"} | {"_attachments": stale}
    folder = worker_folder(tmp_path, doc=doc)  # no _id: the folder's name is used
    assert push_path(Config(), folder) == "worker send_email -> workers (rev 1-abc, 1 attachment)"
    attachments = store.puts[0]["_attachments"]
    assert list(attachments) == ["sendmail.js"]
    assert base64.b64decode(attachments["sendmail.js"]["data"]).decode() == SENDMAIL_JS


def test_worker_folder_needs_doc_json(tmp_path: Path) -> None:
    folder = tmp_path / "send_email"
    folder.mkdir()
    (folder / "sendmail.js").write_text(SENDMAIL_JS)
    assert refusal(Config(), folder) == (
        f"{folder}: a worker folder needs a doc.json (the worker document)"
    )


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    folder = worker_folder(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (folder / "config.txt").symlink_to(secret)
    message = refusal(Config(), folder)
    assert (
        message
        == f"{folder / 'config.txt'}: a symbolic link to {secret}, outside the worker folder"
    )
    (folder / "config.txt").unlink()
    (folder / "up").symlink_to(tmp_path, target_is_directory=True)
    assert "outside the worker folder" in refusal(Config(), folder)


def test_symlink_loop_and_broken_link_are_refused(tmp_path: Path) -> None:
    folder = worker_folder(tmp_path)
    (folder / "lib").mkdir()
    (folder / "lib" / "again").symlink_to(folder, target_is_directory=True)
    assert refusal(Config(), folder) == f"{folder / 'lib' / 'again'}: a symbolic link loop"
    (folder / "lib" / "again").unlink()
    (folder / "lib" / "a").symlink_to("b")
    (folder / "lib" / "b").symlink_to("a")
    assert refusal(Config(), folder) == f"{folder / 'lib' / 'a'}: a symbolic link loop"
    (folder / "lib" / "a").unlink()
    (folder / "lib" / "b").unlink()
    (folder / "lib" / "gone.js").symlink_to(folder / "nothing.js")
    assert refusal(Config(), folder) == f"{folder / 'lib' / 'gone.js'}: a broken symbolic link"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({**WORKER_DOC, "type": "cobol"}, "unknown type 'cobol' (known types: "),
        (
            {**WORKER_DOC, "delegate": "main.js"},
            "delegate 'main.js' is not one of its attachments (it has: sendmail.js)",
        ),
        ({**WORKER_DOC, "delegate": None}, 'no "delegate"'),
        ({**WORKER_DOC, "mode": "batch"}, "mode must be one of stream, reply, once"),
    ],
)
def test_bad_worker_is_refused(tmp_path: Path, doc: dict[str, Any], needle: str) -> None:
    folder = worker_folder(tmp_path, doc=doc)
    message = refusal(Config(), folder)
    assert message.startswith(f"{folder}: worker 'send_email': ") and needle in message


def test_unsafe_attachment_name_is_refused(tmp_path: Path) -> None:
    folder = worker_folder(tmp_path, files={"sendmail.js": SENDMAIL_JS, "a\\b.js": "x"})
    assert "attachment name 'a\\\\b.js' contains a backslash" in refusal(Config(), folder)


def test_cli_reports_errors_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "email_event.json"
    path.write_text(SEED_EVENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "couchdb_events",
            "push",
            "--couchdb-url",
            "http://x.invalid/",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"couchdb-events push: {path}:")
    assert "Traceback" not in result.stderr


# -- against the tests' server ----------------------------------------------------------------
def _get(url: str, accept: str = "*/*") -> urllib.request.Request:
    url, headers = split_credentials(url)  # urllib does not take them from the URL
    return urllib.request.Request(url, headers={**headers, "Accept": accept})


def get_json(url: str) -> Any:
    # Without this Accept CouchDB answers ?attachments=true as multipart/related.
    with urllib.request.urlopen(_get(url, "application/json"), timeout=15) as answer:
        return json.loads(answer.read())


def get_raw(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(_get(url), timeout=15) as answer:
        return answer.headers["Content-Type"], answer.read()


@pytest.mark.integration
def test_push_to_a_server(couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path) -> None:
    config = Config(
        couchdb_url=couch_url, events_db=fresh_db("events"), workers_db=fresh_db("workers")
    )
    event = tmp_path / "email_event.json"
    event.write_text(FIXED_EVENT)
    assert push_path(config, event).startswith(f"event email_event -> {config.events_db} (rev 1-")
    folder = worker_folder(tmp_path, files={"sendmail.js": SENDMAIL_JS, "lib/helper.js": HELPER_JS})
    summary = push_path(config, folder)
    assert summary.startswith(f"worker send_email -> {config.workers_db} (rev 1-")
    assert summary.endswith(", 2 attachments)")

    stored_event = get_json(f"{couch_url}{config.events_db}/email_event")
    assert stored_event["trigger"] == {"/send_email": {"method": "GET"}}
    worker_url = f"{couch_url}{config.workers_db}/send_email"
    doc = get_json(worker_url)
    assert doc["_rev"].startswith("1-")  # document and attachments in one request
    assert (doc["delegate"], doc["type"]) == ("sendmail.js", "node")
    assert sorted(doc["_attachments"]) == ["lib/helper.js", "sendmail.js"]
    for name, text in (("sendmail.js", SENDMAIL_JS), ("lib/helper.js", HELPER_JS)):
        assert doc["_attachments"][name]["content_type"] == "application/javascript"
        content_type, body = get_raw(f"{worker_url}/{name}")
        assert content_type.startswith("application/javascript") and body == text.encode()

    (folder / "lib" / "helper.js").unlink()
    (folder / "sendmail.js").write_text("// v2\n")
    summary = push_path(config, folder)
    assert summary.startswith(f"worker send_email -> {config.workers_db} (rev 2-")
    doc = get_json(f"{worker_url}?attachments=true")
    assert doc["_rev"].startswith("2-") and list(doc["_attachments"]) == ["sendmail.js"]
    assert base64.b64decode(doc["_attachments"]["sendmail.js"]["data"]) == b"// v2\n"
    assert push_path(config, event).startswith(f"event email_event -> {config.events_db} (rev 2-")


@pytest.mark.integration
def test_cli_push_to_a_server(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> None:
    events_db = fresh_db("events")
    event = tmp_path / "email_event.json"
    event.write_text(FIXED_EVENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUCHDB_EVENTS")}
    args = ["push", "--couchdb-url", couch_url, "--events-db", events_db, str(event)]
    result = subprocess.run(
        [sys.executable, "-m", "couchdb_events", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"event email_event -> {events_db} (rev 1-")
    assert get_json(f"{couch_url}{events_db}/email_event")["workers"]["send_email"]
