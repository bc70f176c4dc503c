"""The command line for runs (status, fire, runs, run, retry, cancel) against a fake service: its
options, where it finds the service and its credentials, what it prints (tables, --json, colour
only on a terminal) and how it fails (one line, a non-zero status, never a traceback)."""

from __future__ import annotations

import argparse
import base64
import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.cli import main
from couchdb_events.cli.client import CliError, target
from couchdb_events.cli.runs import Follower, since_iso
from couchdb_events.couch.embedded import free_port
from tests.fake_service import FakeService, Seen, serve

ENV = ("COUCHDB_EVENTS_URL", "COUCHDB_EVENTS_PASSWORD", "COUCHDB_EVENTS_CONFIG", "NO_COLOR")


def record(run_id: str, state: str = "succeeded", **fields: Any) -> dict[str, Any]:
    return {
        "_id": run_id,
        "type": "activation",
        "event": "send_email",
        "worker": "mailer",
        "worker_rev": "1-abc",
        "arguments": {"to": "ann@example.org"},
        "request": {"method": "POST", "path": "/send_email", "query": {}, "body": {"x": 1},
                    "peer": "127.0.0.1", "user": None},
        "state": state,
        "attempt": 1,
        "chain": {"depth": 0, "parent": None},
        "accepted": "2026-11-28T10:00:00.000Z",
        "started": "2026-11-28T10:00:00.250Z",
        "ended": "2026-11-28T10:00:01.750Z",
        "error": None,
        "answer": {"sent": True},
        "stdout": ["progress"],
        "stderr": ["warning: slow smtp"],
        **fields,
    }  # fmt: skip


STATUS = {
    "couchdb_events": {"version": "0.1.0", "host": "daemon", "pid": 42, "uptime": 12.5,
                       "started": "2026-11-28T10:00:00Z", "couchdb": "http://127.0.0.1:5984/",
                       "couchdb_connected": True},
    "events": {"send_email": {"triggers": [{"path": "/send_email", "methods": None}],
                              "workers": ["mailer"], "disabled": False, "error": None}},
    "workers": {"mailer": {"state": "ok", "mode": "reply", "processes": [{"pid": 7}],
                           "queued": 0, "fired": 3, "succeeded": 2, "failed": 1, "restarts": 0,
                           "last_error": "[boom] bad"}},
    "activations": {"durable": True, "db": "events_activations_YYYY_MM", "backlog": 0},
    "last_error": None,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> Iterator[FakeService]:
    yield from serve(FakeService())


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"url": None, "user": None, "config": None, **given})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fire", "x", "--query", "novalue"], "'novalue' is not KEY=VALUE"),
        (["fire", "x", "--wait", "soon"], "'soon' is not a number of seconds"),
        (["fire", "x", "--wait", "-1"], "seconds are 0 or more"),
        (["runs", "--limit", "0"], "not a whole number of at least 1"),
        (["run"], "the following arguments are required: ID"),
        (["cancel"], "the following arguments are required: ID"),
    ],
)
def test_bad_options_are_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _out, err = cli(capsys, *argv)
    assert code == 2
    assert message in err


def test_since_takes_iso_times_and_times_ago() -> None:
    now = 1_800_000_000.5  # 2027-01-15T08:00:00.500Z
    assert since_iso("10m", now) == "2027-01-15T07:50:00.500Z"
    assert since_iso("2h", now) == "2027-01-15T06:00:00.500Z"
    assert since_iso("1d", now) == "2027-01-14T08:00:00.500Z"
    assert since_iso("30s", now) == "2027-01-15T07:59:30.500Z"
    assert since_iso("2026-11-28T09:00:00Z") == "2026-11-28T09:00:00.000Z"
    assert since_iso("2026-11-28T10:00:00.123+01:00") == "2026-11-28T09:00:00.123Z"
    assert since_iso("2026-11-28 09:00") == "2026-11-28T09:00:00.000Z"  # UTC without an offset
    assert since_iso("2026-11-28") == "2026-11-28T00:00:00.000Z"
    with pytest.raises(CliError, match="neither an ISO 8601 time"):
        since_iso("yesterday")


# -- where the service is, who calls it ---------------------------------------------------------
def test_url_from_flag_then_environment_then_config_then_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ini = tmp_path / "local.ini"
    ini.write_text("[couchdb_events]\nbind_address = 0.0.0.0\nport = 6001\n")
    assert target(args()).url == "http://127.0.0.1:5985/"
    assert target(args(config=str(ini))).url == "http://127.0.0.1:6001/"
    monkeypatch.setenv("COUCHDB_EVENTS_CONFIG", str(ini))
    assert target(args()).url == "http://127.0.0.1:6001/"
    monkeypatch.setenv("COUCHDB_EVENTS_URL", "http://couch:5984/_events")
    assert target(args()).url == "http://couch:5984/_events/"
    assert target(args(url="https://proxy/x/_events/")).url == "https://proxy/x/_events/"
    ini.write_text("[couchdb_events]\nbind_address = ::\nport = 6002\n")
    monkeypatch.delenv("COUCHDB_EVENTS_URL")
    assert target(args()).url == "http://[::1]:6002/"


def test_credentials_user_flag_then_url_then_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ini = tmp_path / "local.ini"
    ini.write_text("[couchdb_events]\ncouchdb_url = http://admin:s%40cret@127.0.0.1:5984/\n")
    conf = str(ini)
    assert target(args(config=conf)).headers == {"Authorization": basic("admin", "s@cret")}
    by_url = target(args(config=conf, url="http://ann:pw@host:5984/_events/"))
    assert by_url.url == "http://host:5984/_events/"  # no credentials left in the URL
    assert by_url.headers == {"Authorization": basic("ann", "pw")}
    monkeypatch.setenv("COUCHDB_EVENTS_PASSWORD", "envpw")
    by_flag = target(args(config=conf, url="http://ann:pw@host/", user="bob"))
    assert by_flag.headers == {"Authorization": basic("bob", "envpw")}
    no_password = target(args(url="http://carl@host/"))
    assert no_password.headers == {"Authorization": basic("carl", "envpw")}
    assert target(args(url="http://host/")).headers == {}


def test_no_password_and_no_terminal_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status", "--url", "http://127.0.0.1:9/", "--user", "bob")
    assert code == 1 and out == ""
    assert err == "couchdb-events: no password for 'bob': set COUCHDB_EVENTS_PASSWORD\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "ftp://host/"], "--url 'ftp://host/': not an http(s) URL"),
        (["--url", "http://host:99999/"], "--url 'http://host:99999/': bad port"),
        (["--config", "/no/such.ini"], "cannot read config file /no/such.ini: No such file"),
    ],
)
def test_bad_url_or_config_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _out, err = cli(capsys, "status", *argv)
    assert code == 1
    assert err.startswith(f"couchdb-events: {message}") and err.count("\n") == 1


# -- failures -----------------------------------------------------------------------------------
def test_unreachable_service_names_it_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    code, out, err = cli(capsys, "status", "--url", f"http://ann:secret@127.0.0.1:{port}/")
    assert (code, out) == (1, "")
    assert (
        err == f"couchdb-events: cannot reach http://127.0.0.1:{port}/_status: connection refused\n"
    )


def test_error_answers_are_status_error_and_reason(
    capsys: pytest.CaptureFixture[str], fake: FakeService
) -> None:
    fake.on(
        "GET",
        "/_status",
        (401, {"error": "unauthorized", "reason": "Name or password is incorrect."}),
    )
    code, _out, err = cli(capsys, "status", "--url", fake.url)
    assert code == 1
    assert err == "couchdb-events: 401 unauthorized: Name or password is incorrect.\n"
    code, _out, err = cli(capsys, "run", "x", "--url", fake.url)
    assert code == 1
    assert err == "couchdb-events: 404 not_found: /_activations/x unknown\n"
    fake.on("GET", "/_status", (502, b"<html>Bad Gateway</html>"))
    code, _out, err = cli(capsys, "status", "--url", fake.url)
    assert err == "couchdb-events: 502 Bad Gateway: <html>Bad Gateway</html>\n"
    fake.on("GET", "/_status", (200, b"not json"))
    code, _out, err = cli(capsys, "status", "--url", fake.url)
    assert code == 1
    assert err == f"couchdb-events: {fake.url}_status: the answer (200) is not JSON\n"
    assert "Traceback" not in err


# -- status ---------------------------------------------------------------------------------------
def test_status_table_and_json(capsys: pytest.CaptureFixture[str], fake: FakeService) -> None:
    fake.on("GET", "/_status", (200, STATUS))
    code, out, err = cli(capsys, "status", "--url", fake.url)
    assert (code, err) == (0, "")
    assert "\x1b[" not in out  # not a terminal: no colour, no styles
    assert "couchdb-events 0.1.0" in out and "connected: yes" in out
    assert "mailer" in out and "reply" in out and "[boom] bad" in out  # names are not markup
    assert "send_email" in out and "/send_email" in out
    code, out, err = cli(capsys, "status", "--url", fake.url, "--json")
    assert code == 0 and json.loads(out) == STATUS


# -- fire -----------------------------------------------------------------------------------------
def answered(state: str, **more: Any) -> Any:
    def reply(seen: Seen) -> tuple[int, Any]:
        run = {"id": "r1", "event": "send_email", "worker": "mailer"}
        if "wait" in seen.query:
            run.update(state=state, **more)
        return (200 if "wait" in seen.query else 202), {
            "ok": True,
            "events": ["send_email"],
            "runs": [run],
        }

    return reply


def test_fire_sends_body_query_and_wait_and_shows_the_answer(
    capsys: pytest.CaptureFixture[str], fake: FakeService
) -> None:
    fake.on("POST", "/_events/send_email", answered("succeeded", answer={"sent": 3}))
    code, out, err = cli(capsys, "fire", "/send_email", "--url", fake.url + "_events/",
                         "--data", '{"to": "ann"}', "--query", "a=1", "--query", "b=x y",
                         "--wait", "5", "--idempotency-key", "k-1")  # fmt: skip
    assert (code, err) == (0, "")
    seen = fake.last()
    assert json.loads(seen.body) == {"to": "ann"}
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["idempotency-key"] == "k-1"
    assert seen.query == {"a": ["1"], "b": ["x y"], "wait": ["5"]}
    assert "r1" in out and "succeeded" in out and '{"sent": 3}' in out
    code, out, _err = cli(capsys, "fire", "send_email", "--url", fake.url + "_events/", "--json")
    assert code == 0 and json.loads(out)["runs"] == [
        {"id": "r1", "event": "send_email", "worker": "mailer"}
    ]
    assert fake.last().body == b"" and fake.last().method == "POST"


def test_fire_exits_1_when_a_run_failed(
    capsys: pytest.CaptureFixture[str], fake: FakeService
) -> None:
    fake.on("GET", "/go", answered("failed", error="broken: told to fail"))
    code, out, err = cli(capsys, "fire", "go", "--method", "get", "--url", fake.url, "--wait", "2")
    assert code == 1
    assert "broken: told to fail" in out
    assert err == "couchdb-events: run r1 failed: broken: told to fail\n"


def test_fire_data_from_a_file_and_bad_data(
    capsys: pytest.CaptureFixture[str], fake: FakeService, tmp_path: Path
) -> None:
    fake.on("POST", "/go", answered("succeeded"))
    data = tmp_path / "data.json"
    data.write_text('{"from": "file"}')
    code, _out, _err = cli(capsys, "fire", "go", "--url", fake.url, "--data", f"@{data}")
    assert code == 0 and json.loads(fake.last().body) == {"from": "file"}
    requests = len(fake.seen)
    code, _out, err = cli(capsys, "fire", "go", "--url", fake.url, "--data", "{to: ann}")
    assert code == 1
    assert err.startswith("couchdb-events: --data is not JSON: Expecting property name")
    code, _out, err = cli(capsys, "fire", "go", "--url", fake.url, "--data", "@/no/such.json")
    assert code == 1
    assert err == "couchdb-events: cannot read --data @/no/such.json: No such file or directory\n"
    data.write_text("[1,")
    code, _out, err = cli(capsys, "fire", "go", "--url", fake.url, "--data", f"@{data}")
    assert code == 1 and err.startswith(f"couchdb-events: --data @{data} is not JSON")
    assert len(fake.seen) == requests  # nothing was fired


# -- runs, run, retry, cancel -------------------------------------------------------------------
def test_runs_passes_filters_and_prints_a_table_or_the_json(
    capsys: pytest.CaptureFixture[str], fake: FakeService
) -> None:
    listing = {"activations": [record("r2", "failed", error="boom"), record("r1")], "limit": 5,
               "skip": 0, "count": 2}  # fmt: skip
    fake.on("GET", "/_activations", (200, listing))
    code, out, err = cli(capsys, "runs", "--url", fake.url, "--event", "send_email", "--worker",
                         "mailer", "--state", "failed", "--since", "2026-11-28T09:00:00Z",
                         "--limit", "5")  # fmt: skip
    assert (code, err) == (0, "")
    assert fake.last().query == {"event": ["send_email"], "worker": ["mailer"], "state": ["failed"],
                                 "since": ["2026-11-28T09:00:00.000Z"], "limit": ["5"]}  # fmt: skip
    lines = out.splitlines()
    assert "ID" in lines[0] and "STATE" in lines[0]
    assert "r2" in lines[1] and "failed" in lines[1] and "boom" in lines[1]
    assert "r1" in lines[2] and "succeeded" in lines[2] and "1.50 s" in lines[2]
    code, out, _err = cli(capsys, "runs", "--url", fake.url, "--json")
    assert code == 0 and json.loads(out) == listing


def test_run_shows_the_record_and_its_logs(
    capsys: pytest.CaptureFixture[str], fake: FakeService
) -> None:
    doc = record("a/b", "failed", error="broken: no smtp", attempt=2, retry_of="a0")
    fake.on("GET", "/_activations/a%2Fb", (200, doc))
    code, out, _err = cli(capsys, "run", "a/b", "--url", fake.url)
    assert code == 0
    for text in ("a/b", "send_email", "mailer", "failed", "attempt 2", "a retry of a0",
                 "POST /send_email", "ann@example.org", "broken: no smtp", "waited 250 ms",
                 "ran 1.50 s", "1 stderr lines"):  # fmt: skip
        assert text in out, text
    assert "warning: slow smtp" not in out
    code, out, _err = cli(capsys, "run", "a/b", "--url", fake.url, "--logs")
    assert "warning: slow smtp" in out and "progress" in out
    code, out, _err = cli(capsys, "run", "a/b", "--url", fake.url, "--json")
    assert json.loads(out) == doc


def test_retry_and_cancel(capsys: pytest.CaptureFixture[str], fake: FakeService) -> None:
    fake.on("POST", "/_activations/r1/retry", (202, {"ok": True, "retry_of": "r1", "events": ["go"],
            "runs": [{"id": "r9", "event": "go", "worker": "w"}]}))  # fmt: skip
    code, out, _err = cli(capsys, "retry", "r1", "--url", fake.url)
    assert code == 0 and "retried r1 as r9" in out
    fake.on("POST", "/_activations/r2/cancel", (200, {"ok": True, "id": "r2", "state": "cancelled",
            "was": "accepted"}))  # fmt: skip
    code, out, _err = cli(capsys, "cancel", "r2", "--url", fake.url)
    assert code == 0 and "r2: cancelled (was accepted)" in out
    fake.on(
        "POST", "/_activations/r3/cancel", (409, {"error": "conflict", "reason": "r3 is succeeded"})
    )
    code, out, err = cli(capsys, "cancel", "r3", "--url", fake.url, "--json")
    assert (code, out) == (1, "")
    assert err == "couchdb-events: 409 conflict: r3 is succeeded\n"


def test_follower_shows_each_run_once_and_again_when_it_ends() -> None:
    shown: list[tuple[str, str]] = []
    follower = Follower(None, {}, lambda r: shown.append((r["_id"], r["state"])))  # type: ignore[arg-type]
    t1, t2 = "2026-11-28T10:00:01.000Z", "2026-11-28T10:00:02.000Z"
    follower.take([record("b", "running", accepted=t2), record("a", accepted=t1)])
    assert shown == [("a", "succeeded"), ("b", "running")]  # oldest first
    assert follower.window == t2
    follower.take([record("b", "running", accepted=t2)])
    assert shown == [("a", "succeeded"), ("b", "running")]
    follower.take([record("c", "accepted", accepted="2026-11-28T10:00:03.000Z"),
                   record("b", "failed", accepted=t2)])  # fmt: skip
    assert shown[2:] == [("b", "failed"), ("c", "accepted")]
    assert follower.window == "2026-11-28T10:00:03.000Z"  # from the open c on


# -- in a terminal, in a pipe; following ------------------------------------------------------
def command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "couchdb_events", *argv]


def in_terminal(argv: list[str], env: dict[str, str]) -> str:
    """What ``argv`` prints on a pseudo-terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE,
                            env=env)  # fmt: skip
    os.close(follower)
    out = b""
    try:
        while True:
            ready, _w, _x = select.select([leader], [], [], 20)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        _none, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out.decode("utf-8", "replace")


def test_colour_on_a_terminal_only_and_never_with_no_color(fake: FakeService) -> None:
    fake.on("GET", "/_activations", (200, {"activations": [record("r1", "failed")], "limit": 50}))
    env = {k: v for k, v in os.environ.items() if k not in (*ENV, "FORCE_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    env["COLUMNS"] = "200"  # the pseudo-terminal has no size of its own
    argv = command("runs", "--url", fake.url)
    coloured = in_terminal(argv, env)
    assert "r1" in coloured and "\x1b[" in coloured and "\x1b[1;31m" in coloured  # failed: red
    plain = in_terminal(argv, {**env, "NO_COLOR": "1"})
    assert "r1" in plain and "31m" not in plain  # no colour (bold may stay: it is no colour)
    piped = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=20, check=True)
    assert "r1" in piped.stdout and "\x1b[" not in piped.stdout


def test_follow_prints_new_runs_until_ctrl_c(fake: FakeService) -> None:
    records = [record("old", accepted="2026-11-28T10:00:00.000Z")]

    def listing(seen: Seen) -> tuple[int, Any]:
        since = seen.query.get("since", [""])[0]
        return 200, {"activations": [r for r in records if r["accepted"] >= since], "limit": 10}

    fake.on("GET", "/_activations", listing)
    proc = subprocess.Popen(command("runs", "--follow", "--interval", "0.05", "--url", fake.url),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "old" in proc.stdout.readline()
        records.insert(0, record("new", "running", accepted="2026-11-28T10:00:05.000Z"))
        line = read_line(proc, 15)
        assert "new" in line and "running" in line
        records[0] = record("new", "failed", accepted="2026-11-28T10:00:05.000Z", error="boom")
        line = read_line(proc, 15)
        assert "new" in line and "failed" in line and "boom" in line
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert err == ""
    # From the newest seen on (new is open, and the newest): not the whole listing again.
    assert fake.seen[-1].query == {"since": ["2026-11-28T10:00:05.000Z"], "limit": ["1000"]}


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _w, _x = select.select([proc.stdout], [], [], timeout)
    assert ready, "no line in time"
    return proc.stdout.readline()
