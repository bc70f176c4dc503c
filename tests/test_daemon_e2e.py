"""End to end: ``couchdb-events daemon`` started exactly as CouchDB starts an os_daemon.

Requests arrive in the proxy-stripped form (``/email_event``), as CouchDB's couch_httpd_proxy
sends them. Every test ends by closing the daemon's stdin and checking that it exits and that
no process of its tree survives.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.couch.embedded import free_port
from couchdb_events.workers.states import MAX_YOUNG_DEATHS
from tests.couch import NewUser, OwnCouch, split_credentials
from tests.daemon_host import DaemonHost, http, wait_until_serving
from tests.docs import delete_doc, put_doc, put_worker

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parent.parent / "couchdb_events" / "demo"

REPLY_PY = """
import json, os, sys, time
for line in sys.stdin:
    message = json.loads(line)
    time.sleep(message["arguments"].get("sleep", 0))
    print(json.dumps({"pid": os.getpid(), "arguments": message["arguments"]}), flush=True)
"""

STREAM_PY = """
import json, os, sys
out = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "seen.jsonl")
for line in sys.stdin:
    with open(out, "a") as handle:
        handle.write(line)
"""

ONCE_PY = """
import json, sys
message = json.loads(sys.stdin.readline())
code = message["arguments"].get("exit", 0)
print(json.dumps({"exit": code}), flush=True)
sys.exit(code)
"""

DIES_PY = """
import sys
print("cannot open the mail relay", file=sys.stderr, flush=True)
sys.exit(3)
"""

STUBBORN_PY = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.close(0)
    while True:
        time.sleep(1)
for line in sys.stdin:
    print('{"ok": true}', flush=True)
while True:  # ignores stdin EOF too
    time.sleep(1)
"""


@dataclass
class Daemon:
    host: DaemonHost
    url: str
    events_db: str
    workers_db: str
    couch_url: str
    work_dir: Path

    @property
    def admin(self) -> dict[str, str]:
        """The Authorization of couch_url's admin, if it has one (a real CouchDB): the status
        and the activation records are for admins, which on PouchDB Server's admin party
        everyone is."""
        return split_credentials(self.couch_url)[1]

    def fire(
        self, path: str, method: str = "GET", **kwargs: Any
    ) -> tuple[int, dict[str, str], Any]:
        if path.lstrip("/").startswith(("_status", "_activations")):
            kwargs["headers"] = {**self.admin, **(kwargs.get("headers") or {})}
        return http(method, self.url + path.lstrip("/"), **kwargs)

    def status(self) -> dict[str, Any]:
        status, _h, body = http("GET", self.url + "_status", headers=self.admin)
        assert status == 200
        assert isinstance(body, dict)
        return body

    def event(self, doc: dict[str, Any]) -> str:
        return put_doc(self.couch_url, self.events_db, doc)

    def worker(self, name: str, files: dict[str, str], **fields: Any) -> str:
        return put_worker(self.couch_url, self.workers_db, name, files, **fields)

    def wait_loaded(self, event_id: str, timeout: float = 10) -> None:
        """Until the event and every worker it names are loaded (two feeds: either may lag)."""

        def loaded(status: dict[str, Any]) -> bool:
            event = status["events"].get(event_id)
            return event is not None and all(w in status["workers"] for w in event["workers"])

        self.wait_status(loaded, timeout)

    def wait_status(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.status()
            if check(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched: {body}\nlogs:\n{self.host.log_text()}")
            time.sleep(0.05)


StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> Iterator[StartDaemon]:
    yield from daemons(couch_url, fresh_db, tmp_path)


def daemons(
    couch_url: str,
    fresh_db: Callable[[str], str],
    tmp_path: Path,
    interpreters: dict[str, str] | None = None,
) -> Iterator[StartDaemon]:
    """What ``start_daemon`` yields: starts ``couchdb-events daemon`` as CouchDB does (with
    ``interpreters`` as its ``[couchdb_events_interpreters]``), and stops every one at the end."""
    hosts: list[DaemonHost] = []

    def start(
        wait: bool = True,
        events_db: str | None = None,
        workers_db: str | None = None,
        **settings: str,
    ) -> Daemon:
        events = events_db or fresh_db("events")
        workers = workers_db or fresh_db("workers")
        port = free_port()
        work_dir = tmp_path / f"work{len(hosts)}"
        section = {
            "couchdb_url": couch_url,
            "port": str(port),
            "events_db": events,
            "workers_db": workers,
            "work_dir": str(work_dir),
            "startup_wait": "5",
            "log_level": "debug",
            **settings,
        }
        sections = {"couchdb_events": section}
        if interpreters:
            sections["couchdb_events_interpreters"] = interpreters
        host = DaemonHost(sections)
        hosts.append(host)
        url = section["couchdb_url"]  # the tests' server, or the one a test gives
        daemon = Daemon(host, f"http://127.0.0.1:{port}/", events, workers, url, work_dir)
        if wait:
            wait_until_serving(host, daemon.url, headers=daemon.admin)
        return daemon

    yield start
    for host in hosts:
        host.note_tree()
        host.close_stdin()
        try:
            host.wait(10)
        finally:
            host.kill()
        assert not host.invalid, f"non-protocol lines on the daemon's stdout: {host.invalid}"


def stop_and_check(daemon: Daemon, limit: float = 5.0) -> None:
    """Close stdin as CouchDB does: the daemon exits in time and leaves no process behind."""
    host = daemon.host
    host.note_tree()
    started = time.monotonic()
    host.close_stdin()
    code = host.wait(limit + 2)
    took = time.monotonic() - started
    assert took < limit, f"daemon took {took:.1f} s to exit"
    assert code == 0
    deadline = time.monotonic() + 1
    while host.survivors() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.survivors() == [], "processes of the daemon's tree survived it"


def push_demo(daemon: Daemon) -> None:
    import json

    event = json.loads((DEMO / "email_event.json").read_text())
    worker = json.loads((DEMO / "send_email" / "doc.json").read_text())
    daemon.event(event)
    name = worker.pop("_id")
    daemon.worker(
        name, {"sendmail.js": (DEMO / "send_email" / "sendmail.js").read_text()}, **worker
    )


def outbox(daemon: Daemon, worker: str = "send_email") -> list[Path]:
    folder = daemon.work_dir / "data" / worker / "outbox"
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def wait_for(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- the protocol ---------------------------------------------------------------------------
def test_daemon_asks_couchdb_for_its_section_and_registers(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    assert ["get", "couchdb_events"] in daemon.host.gets
    assert ["register", "couchdb_events"] in daemon.host.registered
    assert "listening on" in daemon.host.wait_for_log("listening on", level="info")
    stop_and_check(daemon)
    assert daemon.host.invalid == []


def test_seed_example_in_real_node_and_clean_exit(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    push_demo(daemon)
    daemon.wait_loaded("email_event")
    status, _h, body = daemon.fire("/email_event")
    assert status == 202, body
    assert body["events"] == ["email_event"]
    [run] = body["runs"]
    assert run["worker"] == "send_email"
    status, _h, body = daemon.fire("/_events/send_email")  # the unstripped form, by trigger path
    assert status == 202, body
    mails = wait_for(lambda: len(outbox(daemon)) == 2 and outbox(daemon))
    text = mails[0].read_text() + mails[1].read_text()
    assert "To: support@yourcompany.com" in text
    assert f"X-Event-Id: {run['id']}" in text
    info = daemon.status()["workers"]["send_email"]
    assert info["delivered"] == 2
    [proc] = info["processes"]
    assert proc["handled"] == 2 and proc["rss"] > 0
    stop_and_check(daemon)


def test_eof_stops_workers_that_ignore_eof_and_sigterm(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(stop_timeout="1")
    daemon.worker("stubborn", {"w.py": STUBBORN_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "go", "workers": {"stubborn": {}}})
    daemon.wait_loaded("go")
    status, _h, body = daemon.fire("/go?wait=10")
    assert status == 200, body
    daemon.host.note_tree()
    assert len(daemon.host.seen_pids) >= 3  # daemon, worker, the worker's own child
    stop_and_check(daemon)


# -- start-up failures ------------------------------------------------------------------------
def test_couchdb_unreachable_at_start_is_logged_precisely(start_daemon: StartDaemon) -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    daemon = start_daemon(wait=False, couchdb_url=dead, startup_wait="1")
    assert daemon.host.wait(15) == 1
    errors = daemon.host.log_text("error")
    assert "cannot start" in errors and dead in errors and "unreachable" in errors


def test_port_taken_is_logged_precisely(start_daemon: StartDaemon) -> None:
    first = start_daemon()
    port = first.url.rsplit(":", 1)[1].strip("/")
    second = start_daemon(wait=False, port=port)
    assert second.host.wait(15) == 1
    assert f":{port}: the port is taken" in second.host.log_text("error")


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("port", "eighty", "port = 'eighty'"),
        ("events_db", "Events", "events_db = 'Events'"),
        ("processes", "0", "processes = '0'"),
        ("colour", "blue", "colour: unknown setting"),
    ],
)
def test_bad_setting_is_named_in_the_log(
    start_daemon: StartDaemon, key: str, value: str, needle: str
) -> None:
    daemon = start_daemon(wait=False, **{key: value})
    assert daemon.host.wait(15) == 1
    assert needle in daemon.host.log_text("error")


# -- bad input --------------------------------------------------------------------------------
def test_bad_requests_get_precise_json_errors(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("echo", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event(
        {
            "_id": "echo_event",
            "trigger": {"/echo": {"method": "POST"}},
            "workers": {"echo": {"who": ":name"}},
        }
    )
    daemon.wait_loaded("echo_event")

    status, _h, body = daemon.fire("/nothing_here")
    assert (status, body["error"]) == (404, "not_found")
    status, headers, body = daemon.fire("/echo", method="DELETE")
    assert (status, body["error"], headers["Allow"]) == (405, "method_not_allowed", "POST")
    status, _h, body = daemon.fire(
        "/echo", method="POST", raw=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert (
        status == 400
        and "not valid JSON" in body["reason"]
        and "line 1 column 10" in body["reason"]
    )
    status, _h, body = daemon.fire(
        "/echo",
        method="POST",
        raw=b"a=%zz&&",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 400 and body["error"] == "bad_request"
    status, _h, body = daemon.fire("/echo", method="POST")
    assert status == 400 and "'name'" in body["reason"]
    status, _h, body = daemon.fire("/echo?wait=5", method="POST", body={"name": "ann"})
    assert status == 200 and body["runs"][0]["answer"]["arguments"] == {"who": "ann"}
    status, _h, body = daemon.fire("/_nonsense")
    assert status == 404
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    status, _h, body = daemon.fire(
        "/echo", method="POST", raw=big, headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]) == (413, "too_large")
    stop_and_check(daemon)


def test_broken_workers_and_events_are_clear_errors(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("no_delegate", {"w.py": REPLY_PY}, type="python")
    daemon.worker("odd_type", {"w.cob": "x"}, type="cobol", delegate="w.cob")
    daemon.worker(
        "escaper", {"../../evil.py": "print(1)", "w.py": REPLY_PY}, type="python", delegate="w.py"
    )
    for name in ("no_delegate", "odd_type", "escaper", "missing"):
        daemon.event({"_id": f"fire_{name}", "workers": {name: {}}})
    wait_for(lambda: len(daemon.status()["events"]) == 4 and len(daemon.status()["workers"]) == 3)

    status, _h, body = daemon.fire("/fire_no_delegate")
    assert (status, body["error"]) == (500, "worker_invalid") and "delegate" in body["reason"]
    status, _h, body = daemon.fire("/fire_odd_type")
    assert status == 500 and "unknown type 'cobol'" in body["reason"] and "node" in body["reason"]
    status, _h, body = daemon.fire("/fire_escaper")
    assert status == 500 and "escape" in body["reason"]
    status, _h, body = daemon.fire("/fire_missing")
    assert (status, body["error"]) == (404, "worker_not_found") and "'missing'" in body["reason"]

    workers = daemon.status()["workers"]
    assert workers["escaper"]["state"] == "invalid" and "escape" in workers["escaper"]["last_error"]
    assert "unknown type" in daemon.host.log_text("error")
    assert (
        not (daemon.work_dir / "evil.py").exists()
        and not (daemon.work_dir.parent / "evil.py").exists()
    )
    stop_and_check(daemon)


def test_worker_that_dies_at_start_backs_off_then_fails(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("dies", {"w.py": DIES_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "doomed", "workers": {"dies": {}}})
    daemon.wait_loaded("doomed")
    # Each run is accepted and fails; after five young deaths in a row (with a growing delay
    # between starts: 0.5, 1, 2, 4 s) the worker is marked failed and refuses further messages.
    for attempt in range(MAX_YOUNG_DEATHS):
        status, _h, body = daemon.fire("/doomed?wait=15")
        assert status == 200, (attempt, body)
        [run] = body["runs"]
        assert run["state"] == "failed" and "exit status 3" in run["error"]
    info = daemon.wait_status(lambda s: s["workers"]["dies"]["state"] == "failed")["workers"][
        "dies"
    ]
    assert (
        "exit status 3" in info["last_error"] and "cannot open the mail relay" in info["last_error"]
    )
    assert (info["failed"], info["restarts"]) == (MAX_YOUNG_DEATHS, MAX_YOUNG_DEATHS)
    status, _h, body = daemon.fire("/doomed")
    assert (status, body["error"]) == (503, "worker_failed")
    assert "exit status 3" in body["reason"]
    # A new revision clears the failure.
    daemon.worker("dies", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    daemon.wait_status(lambda s: s["workers"]["dies"]["state"] == "ok")
    status, _h, body = daemon.fire("/doomed?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "succeeded"
    stop_and_check(daemon)


# -- worker styles ----------------------------------------------------------------------------
def test_reply_messages_go_to_idle_processes(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker(
        "slow", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply", processes=2
    )
    daemon.event({"_id": "slow_event", "workers": {"slow": {"sleep": 0.5}}})
    daemon.wait_loaded("slow_event")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _i: daemon.fire("/slow_event?wait=20"), range(4)))
    pids = {body["runs"][0]["answer"]["pid"] for status, _h, body in answers if status == 200}
    assert len(pids) == 2, answers
    info = daemon.status()["workers"]["slow"]
    assert info["succeeded"] == 4 and sorted(p["handled"] for p in info["processes"]) == [2, 2]
    stop_and_check(daemon)


def test_stream_worker_gets_messages_in_order(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("seen", {"w.py": STREAM_PY}, type="python", delegate="w.py")
    daemon.event({"_id": "tick", "workers": {"seen": {"n": ":n"}}})
    daemon.wait_loaded("tick")
    for n in range(20):  # the first ones arrive while the process is starting
        status, _h, _b = daemon.fire(f"/tick?n={n}")
        assert status == 202
    import json

    seen = daemon.work_dir / "data" / "seen" / "seen.jsonl"
    wait_for(lambda: seen.exists() and len(seen.read_text().splitlines()) == 20)
    numbers = [json.loads(line)["arguments"]["n"] for line in seen.read_text().splitlines()]
    assert numbers == [str(n) for n in range(20)]
    stop_and_check(daemon)


def test_once_worker_exit_status_is_the_outcome(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("once", {"w.py": ONCE_PY}, type="python", delegate="w.py", mode="once")
    daemon.event({"_id": "run_once", "workers": {"once": {"exit": ":code"}}})
    daemon.wait_loaded("run_once")
    status, _h, body = daemon.fire("/run_once?wait=10", method="POST", body={"code": 0})
    assert status == 200 and body["runs"][0]["state"] == "succeeded"
    status, _h, body = daemon.fire("/run_once?wait=10", method="POST", body={"code": 4})
    assert status == 200 and body["runs"][0]["state"] == "failed"
    assert "exit status 4" in body["runs"][0]["error"]
    info = daemon.status()["workers"]["once"]
    assert (info["succeeded"], info["failed"], info["restarts"]) == (1, 1, 0)
    stop_and_check(daemon)


def test_idle_process_is_stopped(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker(
        "idler", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply", idle_timeout=0.5
    )
    daemon.event({"_id": "wake", "workers": {"idler": {}}})
    daemon.wait_loaded("wake")
    status, _h, _b = daemon.fire("/wake?wait=10")
    assert status == 200
    daemon.wait_status(lambda s: s["workers"]["idler"]["processes"] == [])
    assert daemon.status()["workers"]["idler"]["restarts"] == 0
    stop_and_check(daemon)


def test_full_queue_answers_503_with_retry_after(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker(
        "busy", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply", max_queue=2
    )
    daemon.event({"_id": "work", "workers": {"busy": {"sleep": 2}}})
    daemon.wait_loaded("work")
    answers = [daemon.fire("/work") for _ in range(5)]
    codes = [status for status, _h, _b in answers]
    assert codes.count(503) >= 1 and codes[0] == 202
    _status, headers, body = next(a for a in answers if a[0] == 503)
    assert body["error"] == "queue_full" and headers["Retry-After"]
    stop_and_check(daemon)


# -- documents change live -------------------------------------------------------------------
def test_documents_take_effect_within_a_second(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.worker("echo", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    started = time.monotonic()
    daemon.event(
        {"_id": "late", "trigger": {"/late": {"method": "GET"}}, "workers": {"echo": {"v": 1}}}
    )
    wait_for(lambda: daemon.fire("/late")[0] == 202, timeout=1.0)
    assert time.monotonic() - started < 1.0

    status, _h, body = daemon.fire("/late?wait=10")
    first_pid = body["runs"][0]["answer"]["pid"]
    daemon.worker(
        "echo", {"w.py": REPLY_PY + "\n# v2\n"}, type="python", delegate="w.py", mode="reply"
    )
    new_rev = wait_for(
        lambda: (
            daemon.status()["workers"]["echo"]["rev"].startswith("2-")
            and daemon.status()["workers"]["echo"]["rev"]
        ),
        timeout=1.0,
    )
    status, _h, body = daemon.fire("/late?wait=10")
    assert status == 200 and body["runs"][0]["answer"]["pid"] != first_pid
    procs = daemon.wait_status(lambda s: len(s["workers"]["echo"]["processes"]) == 1)["workers"][
        "echo"
    ]["processes"]
    assert procs[0]["rev"] == new_rev

    delete_doc(daemon.couch_url, daemon.events_db, "late")
    wait_for(lambda: daemon.fire("/late")[0] == 404, timeout=1.0)
    stop_and_check(daemon)


# -- CouchDB going away ----------------------------------------------------------------------
@pytest.mark.parametrize("durable", [True, False])
def test_couchdb_going_away_and_coming_back(
    start_daemon: StartDaemon, own_couch: Callable[..., OwnCouch], durable: bool
) -> None:
    couch = own_couch("ev", "wk")
    url = couch.url
    put_worker(url, "wk", "echo", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    put_doc(url, "ev", {"_id": "ping", "workers": {"echo": {}}})
    put_worker(url, "wk", "later", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    put_doc(url, "ev", {"_id": "later", "workers": {"later": {}}})
    daemon = start_daemon(
        couchdb_url=url, events_db="ev", workers_db="wk", durable=str(durable).lower()
    )
    status, _h, body = daemon.fire("/ping?wait=10")
    assert status == 200, body

    couch.stop()
    gone = daemon.wait_status(lambda s: not s["couchdb_events"]["couchdb_connected"], timeout=40)
    assert gone["feeds"]["ev"]["last_error"]
    if durable:
        # Nothing is acknowledged that was not stored: 503, and no run happens.
        for path in ("/ping", "/later"):
            status, headers, body = daemon.fire(path)
            assert (status, body["error"]) == (503, "unavailable"), body
            assert headers["Retry-After"]
    else:
        # Known events still fire: dispatch never waits on CouchDB.
        status, _h, body = daemon.fire("/ping?wait=10")
        assert status == 200 and body["runs"][0]["state"] == "succeeded"
        # A worker whose code was never fetched: the message waits, it is not lost.
        status, _h, body = daemon.fire("/later")
        assert status == 202
        later = daemon.wait_status(
            lambda s: "cannot fetch" in (s["workers"]["later"]["last_error"] or "")
        )
        assert later["workers"]["later"]["queued"] == 1

    couch.start_again()
    try:
        daemon.wait_status(lambda s: s["couchdb_events"]["couchdb_connected"], timeout=40)
    except AssertionError:
        print(daemon.host.log_text())
        print("\n".join(daemon.host.stderr))
        raise
    if durable:
        wait_for(lambda: daemon.fire("/later")[0] == 202, timeout=15)
    done = daemon.wait_status(lambda s: s["workers"]["later"]["succeeded"] == 1, timeout=15)
    assert done["workers"]["later"]["queued"] == 0
    put_doc(url, "ev", {"_id": "pong", "workers": {"echo": {}}})
    wait_for(lambda: daemon.fire("/pong")[0] == 202, timeout=5)
    assert "connected again" in daemon.host.log_text()
    stop_and_check(daemon)


# -- the message ------------------------------------------------------------------------------
HELPER_PY = """
import couchdb_events_worker as w

def handle(message):
    if message["arguments"].get("fail"):
        raise ValueError("asked to fail")
    request = message["request"]
    return {"headers": request["headers"], "arguments": message["arguments"],
            "user": request["user"]}

w.run(handle, mode="reply")
"""

HELPER_JS = """
const { onMessage } = require('couchdb-events-worker');
onMessage(
  async (message) => ({ node: true, body: message.request.body, query: message.request.query }),
  { mode: 'reply' },
);
"""


def test_credentials_never_reach_workers_and_helpers_are_on_the_path(
    start_daemon: StartDaemon, new_user: NewUser
) -> None:
    daemon = start_daemon()
    daemon.worker(
        "py",
        {"w.py": HELPER_PY},
        type="python",
        delegate="w.py",
        mode="reply",
        arguments={"a": 1, "b": 1},
    )
    daemon.worker("js", {"w.js": HELPER_JS}, type="node", delegate="w.js", mode="reply")
    daemon.event(
        {
            "_id": "both",
            "trigger": {"/both": {"method": "POST"}},
            "workers": {"py": {"b": 2}, "js": {}},
        }
    )
    daemon.wait_loaded("both")
    name, password = new_user("u", roles=["r1"])
    basic = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
    secret = {
        "Authorization": basic,
        # Not AuthSession: servers differ on a bad one (POUCHDB_DIFFERENCES.md).
        "Cookie": "sid=abc",
        "X-Trace": "t1",
    }
    status, _h, body = daemon.fire(
        "/both?wait=10&q=1", method="POST", body={"x": [1, 2]}, headers=secret
    )
    assert status == 200, body
    by_worker = {run["worker"]: run for run in body["runs"]}
    py = by_worker["py"]["answer"]
    assert py["arguments"] == {"a": 1, "b": 2}
    headers = {k.lower(): v for k, v in py["headers"].items()}
    assert "authorization" not in headers and "cookie" not in headers
    assert py["user"] == {"name": name, "roles": ["r1"]}
    assert headers["x-trace"] == "t1"
    assert by_worker["js"]["answer"] == {
        "node": True,
        "body": {"x": [1, 2]},
        "query": {"wait": "10", "q": "1"},
    }

    daemon.event({"_id": "fail", "workers": {"py": {"fail": True}}})
    daemon.wait_loaded("fail")
    status, _h, body = daemon.fire("/fail?wait=10")
    assert body["runs"][0]["state"] == "failed" and "asked to fail" in body["runs"][0]["error"]
    stop_and_check(daemon)


def test_worker_output_goes_to_the_log_never_to_stdout(start_daemon: StartDaemon) -> None:
    noisy = (
        "import sys\n"
        "for line in sys.stdin:\n"
        "    print('plain text on stdout', flush=True)\n"
        "    print('a note on stderr', file=sys.stderr, flush=True)\n"
    )
    daemon = start_daemon()
    daemon.worker("noisy", {"w.py": noisy}, type="python", delegate="w.py")
    daemon.event({"_id": "noise", "workers": {"noisy": {}}})
    daemon.wait_loaded("noise")
    assert daemon.fire("/noise")[0] == 202
    daemon.host.wait_for_log("plain text on stdout")
    daemon.host.wait_for_log("a note on stderr")
    stop_and_check(daemon)
    assert daemon.host.invalid == []


def test_stdin_eof_while_a_caller_waits_for_an_answer(start_daemon: StartDaemon) -> None:
    import threading

    daemon = start_daemon()
    daemon.worker("sleepy", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "nap", "workers": {"sleepy": {"sleep": 60}}})
    daemon.wait_loaded("nap")
    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/nap?wait=60")))
    caller.start()
    daemon.wait_status(
        lambda s: (
            s["workers"]["sleepy"]["processes"]
            and s["workers"]["sleepy"]["processes"][0]["current"]
        )
    )
    stop_and_check(daemon)
    caller.join(5)
    [(status, _h, body)] = answers
    assert status == 200 and body["runs"][0]["state"] == "failed"


def test_an_answer_over_one_mib_fails_the_run_instead_of_hanging(start_daemon: StartDaemon) -> None:
    huge = (
        "import sys\n"
        "for line in sys.stdin:\n"
        "    print('{\"blob\": \"' + 'x' * 2_000_000 + '\"}', flush=True)\n"
    )
    daemon = start_daemon()
    daemon.worker("huge", {"w.py": huge}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "big", "workers": {"huge": {}}})
    daemon.wait_loaded("big")
    for _ in range(2):  # and the process takes the next message
        status, _h, body = daemon.fire("/big?wait=10")
        assert status == 200, body
        [run] = body["runs"]
        assert run["state"] == "failed" and "longer than" in run["error"]
    stop_and_check(daemon)
