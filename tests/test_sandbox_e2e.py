"""End to end, with the real bwrap: a sandboxed worker is refused what the same worker
unsandboxed may do (another worker's data, the daemon's config file, /etc/shadow, writing
outside its data directory, CouchDB's port); a sandboxed run that times out is killed with its
tree; a SIGKILLed daemon leaves no sandboxed process behind; a missing bwrap and an unknown
user fail the worker with the reason. Skipped, saying why, where bwrap cannot make its
namespaces on this machine."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from couchdb_events.couch.embedded import free_port
from tests.daemon_host import http
from tests.docs import put_doc, put_worker
from tests.test_daemon_e2e import Daemon, daemons, outbox, push_demo, stop_and_check, wait_for
from tests.test_supervision_e2e import alive, wait_gone

pytestmark = pytest.mark.e2e

BWRAP = shutil.which("bwrap")
# The worker's user must be able to run the interpreter: not one under root's home (a pyenv).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
INTERPRETERS = {"python": f"{PYTHON} -u"}


def _bwrap_works() -> str | None:
    if BWRAP is None:
        return "bwrap is not installed (Debian: apt-get install bubblewrap)"
    probe = subprocess.run(
        [BWRAP, "--ro-bind", "/", "/", "--proc", "/proc", "--unshare-pid", "--unshare-net",
         "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--cap-drop", "ALL", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"bwrap cannot make namespaces on this machine: {probe.stderr.strip()}"
    return None


WHY_NOT = _bwrap_works()
needs_bwrap = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

StartDaemon = Callable[..., Daemon]


@pytest.fixture
def start_daemon(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> Iterator[StartDaemon]:
    """``couchdb-events daemon`` as CouchDB starts it (as in test_daemon_e2e), with an
    interpreter the sandboxed worker's user can run."""
    yield from daemons(couch_url, fresh_db, tmp_path, INTERPRETERS)


def tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


# -- what a sandboxed worker is refused -------------------------------------------------------
PROBER_PY = """
import json, os, socket, sys

def attempt(act):
    try:
        act()
        return "ok"
    except OSError as exc:
        return type(exc).__name__

def read(path):
    with open(path, "rb") as handle:
        handle.read()

def write(path, remove=False):
    with open(path, "w") as handle:
        handle.write("written")
    if remove:
        os.remove(path)

def connect(port):
    socket.create_connection(("127.0.0.1", port), 3).close()

for line in sys.stdin:
    a = json.loads(line)["arguments"]
    data = os.environ["COUCHDB_EVENTS_DATA_DIR"]
    tmp = "/tmp/couchdb-events-sandbox-%d" % os.getpid()
    print(json.dumps({
        "neighbour": attempt(lambda: read(a["neighbour"])),
        "config": attempt(lambda: read(a["config"])),
        "shadow": attempt(lambda: read("/etc/shadow")),
        "code": attempt(lambda: write(os.path.join(os.getcwd(), "written"))),
        "work_dir": attempt(lambda: write(os.path.join(a["work_dir"], "written-" + a["me"]))),
        "etc": attempt(lambda: write("/etc/couchdb-events-sandbox")) if a["etc"] else None,
        "couchdb": attempt(lambda: connect(a["port"])),
        "data": attempt(lambda: write(os.path.join(data, "written"))),
        "tmp": attempt(lambda: write(tmp, remove=True)),
    }), flush=True)
"""


def serve(config: Path, url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "couchdb_events", "serve", "--config", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not answer")


@needs_bwrap
def test_sandboxed_worker_is_refused_what_it_may_do_unsandboxed(
    couch_url: str, fresh_db: Callable[[str], str], tmp_path: Path
) -> None:
    events, workers, port = fresh_db("events"), fresh_db("workers"), free_port()
    work_dir = tmp_path / "work"
    config = tmp_path / "etc" / "couchdb-events" / "local.ini"  # like /opt/couchdb/etc/local.ini
    config.parent.mkdir(parents=True)
    config.write_text(
        f"[couchdb_events]\ncouchdb_url = {couch_url}\nport = {port}\nevents_db = {events}\n"
        f"workers_db = {workers}\nwork_dir = {work_dir}\n\n"
        f"[couchdb_events_interpreters]\npython = {INTERPRETERS['python']}\n"
    )
    neighbour = work_dir / "data" / "neighbour" / "secret.txt"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_text("the neighbour's")
    couch_port = urlsplit(couch_url).port
    as_root = os.geteuid() == 0
    for name, sandbox in (("fenced", True), ("open", False)):
        put_worker(couch_url, workers, name, {"w.py": PROBER_PY}, type="python",
                   delegate="w.py", mode="reply", sandbox=sandbox)  # fmt: skip
        arguments = {"neighbour": str(neighbour), "config": str(config), "me": name,
                     "work_dir": str(work_dir), "port": couch_port, "etc": sandbox}  # fmt: skip
        put_doc(couch_url, events, {"_id": name, "workers": {name: arguments}})
    url = f"http://127.0.0.1:{port}/_events/"
    proc = serve(config, url)
    try:
        answers: dict[str, Any] = {}
        for name in ("fenced", "open"):
            status, _h, body = wait_for(functools.partial(fire_when_loaded, url, name), 20)
            assert status == 200 and body["runs"][0]["state"] == "succeeded", body
            answers[name] = body["runs"][0]["answer"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    fenced, open_ = answers["fenced"], answers["open"]
    assert fenced["neighbour"] == "FileNotFoundError", (fenced, err.decode())  # hidden
    assert fenced["config"] == "FileNotFoundError", fenced  # hidden with its folder
    assert fenced["shadow"] in ("PermissionError", "FileNotFoundError"), fenced
    assert fenced["code"] == "OSError", fenced  # read-only file system
    assert fenced["work_dir"] in ("PermissionError", "OSError"), fenced
    assert not (work_dir / "written-fenced").exists()
    assert fenced["etc"] == "OSError", fenced
    assert fenced["couchdb"] == "ConnectionRefusedError", fenced  # no network: nothing there
    assert (fenced["data"], fenced["tmp"]) == ("ok", "ok"), fenced
    assert (work_dir / "data" / "fenced" / "written").read_text() == "written"
    # The same worker, unsandboxed (run as root here, it may even read /etc/shadow).
    assert open_["shadow"] == ("ok" if as_root else "PermissionError"), open_
    del open_["shadow"], open_["etc"]
    assert set(open_.values()) == {"ok"}, open_
    assert (work_dir / "written-open").read_text() == "written"


def fire_when_loaded(url: str, name: str) -> tuple[int, dict[str, str], Any] | None:
    answer = http("GET", f"{url}{name}?wait=20", timeout=30)
    return None if answer[0] == 404 else answer


# -- timeouts, SIGKILL of the daemon ----------------------------------------------------------
HANGS_PY = """
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
message = json.loads(sys.stdin.readline())
if os.fork() == 0:  # a grandchild, ignoring SIGTERM too
    while True:
        time.sleep(1)
open(os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "forked"), "w").close()
while True:
    time.sleep(1)
"""


@needs_bwrap
def test_sandboxed_run_that_times_out_is_killed_with_its_tree(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(sandbox="true", stop_timeout="0.5")
    daemon.worker("stuck", {"w.py": HANGS_PY}, type="python", delegate="w.py", mode="once",
                  timeout=3)  # fmt: skip
    daemon.event({"_id": "stuck", "workers": {"stuck": {}}})
    daemon.wait_loaded("stuck")
    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/stuck?wait=20")))
    caller.start()
    wait_for((daemon.work_dir / "data" / "stuck" / "forked").exists)
    procs = tree(daemon.host.proc.pid)
    names = [p.name() for p in procs]
    assert "bwrap" in names and len(procs) >= 4, names  # bwrap, its pid 1, worker, grandchild
    caller.join(20)
    [(status, _h, body)] = answers
    assert status == 200 and body["runs"][0]["state"] == "timeout", body
    wait_gone(procs, timeout=3)
    stop_and_check(daemon)


STREAM_PY = """
import os, sys
for line in sys.stdin:
    with open(os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "seen"), "a") as handle:
        handle.write(line)
"""

REPLY_PY = """
import json, sys
held = bytearray(30 * 1024 * 1024)  # resident: the memory sample must find it through bwrap
for line in sys.stdin:
    print(json.dumps({"ok": True}), flush=True)
"""


@needs_bwrap
def test_sigkilled_daemon_leaves_no_sandboxed_process(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(sandbox="true")
    daemon.worker("replier", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    daemon.worker("seed", {"w.py": STREAM_PY}, type="python", delegate="w.py")
    daemon.event({"_id": "both", "workers": {"replier": {}, "seed": {}}})
    daemon.wait_loaded("both")
    status, _h, body = daemon.fire("/both?wait=10")
    assert status == 200, body
    assert sorted(r["state"] for r in body["runs"]) == ["delivered", "succeeded"]
    wait_for((daemon.work_dir / "data" / "seed" / "seen").exists)
    [replier] = daemon.status()["workers"]["replier"]["processes"]
    assert replier["rss"] > 30 * 1024 * 1024, replier  # the whole tree inside bwrap
    procs = tree(daemon.host.proc.pid)
    assert len(procs) >= 6, [p.name() for p in procs]  # two times bwrap, pid 1, worker
    os.kill(daemon.host.proc.pid, signal.SIGKILL)
    took = wait_gone(procs, timeout=3)
    assert daemon.host.wait(5) == -signal.SIGKILL
    assert not any(alive(p) for p in procs)
    print(f"sandboxed workers exited {took:.2f} s after the daemon was killed")


# -- what fails a sandboxed worker ------------------------------------------------------------
def failed_with(daemon: Daemon, name: str) -> str:
    daemon.event({"_id": name, "workers": {name: {}}})
    daemon.wait_loaded(name)
    status, _h, body = daemon.fire(f"/{name}?wait=10")
    assert status in (200, 503), body
    info = daemon.wait_status(lambda s: s["workers"][name]["state"] == "failed")
    error = info["workers"][name]["last_error"]
    assert isinstance(error, str)
    return error


@needs_bwrap
def test_unknown_user_and_missing_bwrap_fail_the_worker(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon()
    daemon.worker("stranger", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply",
                  sandbox={"user": "no-such-user-x"})  # fmt: skip
    assert "sandbox user 'no-such-user-x'" in failed_with(daemon, "stranger")
    stop_and_check(daemon)

    daemon = start_daemon(bwrap=str(tmp_path / "no-bwrap"))
    daemon.worker("fenced", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply",
                  sandbox=True)  # fmt: skip
    daemon.worker("free", {"w.py": REPLY_PY}, type="python", delegate="w.py", mode="reply")
    error = failed_with(daemon, "fenced")
    assert "asks for a sandbox, but bwrap" in error and "not run unfenced" in error
    assert not (daemon.work_dir / "data" / "fenced").exists() or not any(
        (daemon.work_dir / "data" / "fenced").iterdir()
    )
    daemon.event({"_id": "free", "workers": {"free": {}}})
    daemon.wait_loaded("free")
    status, _h, body = daemon.fire("/free?wait=10")  # an unsandboxed worker still runs
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    stop_and_check(daemon)
    assert json.dumps(error)  # the reason is plain text for status and logs


# -- hot reload and recycling inside the sandbox ----------------------------------------------
VERSION_PY = """
import json, os, sys
held = []
for line in sys.stdin:
    held.append(b"x" * json.loads(line)["arguments"].get("hold", 0) * 1024 * 1024)
    revisions = os.path.dirname(os.getcwd())
    print(json.dumps({"version": VERSION, "pid": os.getpid(), "cwd": os.getcwd(),
                      "revisions": sorted(os.listdir(revisions))}), flush=True)
"""


@needs_bwrap
def test_hot_reload_and_memory_recycling_hold_in_the_sandbox(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(sandbox="true")
    fields: dict[str, Any] = {"type": "python", "delegate": "w.py", "mode": "reply"}
    daemon.worker("v", {"w.py": "VERSION = 1" + VERSION_PY}, **fields)
    daemon.event({"_id": "v", "workers": {"v": {}}})
    daemon.wait_loaded("v")
    status, _h, body = daemon.fire("/v?wait=10")
    first = body["runs"][0]["answer"]
    assert status == 200 and first["version"] == 1, body
    assert first["revisions"] == [Path(first["cwd"]).name]  # its own revision only
    [old] = tree(daemon.host.proc.pid)[:1]
    daemon.worker("v", {"w.py": "VERSION = 2" + VERSION_PY}, **fields)
    second = wait_for(lambda: version_answer(daemon, 2), timeout=15)
    assert second["cwd"] != first["cwd"] and second["revisions"] == [Path(second["cwd"]).name]
    wait_gone([old], timeout=5)  # the old revision's sandbox is gone, its tree with it

    # A memory_limit counts the tree inside bwrap: over it, the process is recycled.
    daemon.worker("v", {"w.py": "VERSION = 3" + VERSION_PY}, **fields, memory_limit="20M")
    daemon.event({"_id": "hold", "workers": {"v": {"hold": 40}}})
    wait_for(lambda: version_answer(daemon, 3, "/hold?wait=10"), timeout=15)
    big = outer_pids(daemon)  # the pid inside its PID namespace is the same in every sandbox
    wait_for(lambda: version_answer(daemon, 3) and outer_pids(daemon) not in ([], big), 15)
    assert "over memory_limit" in daemon.host.log_text()
    stop_and_check(daemon)


def outer_pids(daemon: Daemon) -> list[int]:
    return [p["pid"] for p in daemon.status()["workers"]["v"]["processes"]]


def version_answer(daemon: Daemon, version: int, path: str = "/v?wait=10") -> dict[str, Any] | None:
    status, _h, body = daemon.fire(path)
    answer = body["runs"][0].get("answer") if status == 200 else None
    return answer if answer and answer["version"] == version else None


@needs_bwrap
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_seed_node_worker_runs_sandboxed_by_the_setting(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(sandbox="true")
    push_demo(daemon)
    daemon.wait_loaded("email_event")
    status, _h, body = daemon.fire("/email_event")
    assert status == 202, body
    [mail] = wait_for(lambda: outbox(daemon))  # written into its data directory
    assert "To: support@yourcompany.com" in mail.read_text()
    [proc] = daemon.status()["workers"]["send_email"]["processes"]
    assert psutil.Process(proc["pid"]).name() == "bwrap"
    stop_and_check(daemon)


SPINS_PY = """
import json, sys
for line in sys.stdin:
    while True:
        pass
"""


@needs_bwrap
def test_limits_hold_in_the_sandbox_and_a_signal_is_told_as_such(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(sandbox="true")
    daemon.worker("spinner", {"w.py": SPINS_PY}, type="python", delegate="w.py", mode="reply",
                  limits={"cpu": 1})  # fmt: skip
    daemon.event({"_id": "spin", "workers": {"spinner": {}}})
    daemon.wait_loaded("spin")
    status, _h, body = daemon.fire("/spin?wait=20", timeout=30)
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "failed", run
    # Not bwrap's "exit status 152": the signal that ended the worker inside.
    assert "killed by SIGXCPU" in run["error"] or "killed by SIGKILL" in run["error"], run
    stop_and_check(daemon)


@needs_bwrap
@pytest.mark.registry
def test_sandboxed_workers_use_their_environments(start_daemon: StartDaemon) -> None:
    """A worker's environment (``envs/`` under work_dir, hidden with the rest of it) is visible
    to it, read-only, inside its sandbox: the venv's interpreter, the node_modules link."""
    from tests.test_environments_e2e import BUILD_WAIT, IS_NUMBER_JS, PACKAGE_JSON, SIX_PY

    daemon = start_daemon()
    python = {"w.py": SIX_PY, "requirements.txt": "six==1.16.0\n"}
    daemon.worker("py", python, type="python", delegate="w.py", mode="reply", sandbox=True)
    node = {"w.js": IS_NUMBER_JS, "package.json": PACKAGE_JSON}
    daemon.worker("js", node, type="node", delegate="w.js", mode="reply", sandbox=True,
                  arguments={"value": "7"})  # fmt: skip
    daemon.event({"_id": "both", "workers": {"py": {}, "js": {}}})
    daemon.wait_loaded("both")
    status, _h, body = daemon.fire(f"/both?wait={BUILD_WAIT}")
    assert status == 200, (body, daemon.host.log_text())
    answers = {run["worker"]: run for run in body["runs"]}
    assert answers["py"]["state"] == "succeeded", answers["py"]
    assert answers["py"]["answer"]["six"] == "1.16.0"
    assert answers["js"]["state"] == "succeeded" and answers["js"]["answer"] == {"number": True}
    stop_and_check(daemon)
