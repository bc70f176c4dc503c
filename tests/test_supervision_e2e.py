"""End to end: how the daemon supervises its worker processes.

Per-message timeouts, recycling by memory and by message count, resource limits, the worker's
environment, hot reload under load, the daemon dying by SIGKILL (and a new one cleaning up
after it), a graceful stop and the global queue cap, each against ``couchdb-events daemon``
started as CouchDB starts it. Processes are identified with psutil by pid *and* start time, so
a recycled pid never passes for a survivor.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.couch import CouchServer, server_with_admin
from tests.docs import delete_doc, put_doc, put_worker
from tests.test_daemon_e2e import (
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e


def process(pid: int) -> psutil.Process:
    """A handle on ``pid`` that remembers its start time (``is_running`` checks both)."""
    return psutil.Process(pid)


def alive(proc: psutil.Process) -> bool:
    """Still running: the same process (not a reused pid) and not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> float:
    """Seconds until every process in ``procs`` has exited; fails after ``timeout``."""
    started = time.monotonic()
    deadline = started + timeout
    while any(alive(p) for p in procs):
        if time.monotonic() > deadline:
            left = [p.pid for p in procs if alive(p)]
            raise AssertionError(f"processes {left} still alive after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def read_json_file(path: Path, timeout: float = 10) -> Any:
    wait_for(path.exists, timeout)
    return json.loads(path.read_text())


def worker_info(daemon: Daemon, name: str) -> dict[str, Any]:
    info = daemon.status()["workers"][name]
    assert isinstance(info, dict)
    return info


def only_pid(daemon: Daemon, name: str) -> int:
    [proc] = worker_info(daemon, name)["processes"]
    return int(proc["pid"])


# -- timeouts ---------------------------------------------------------------------------------
# On {"hang": true} it forks a grandchild that ignores SIGTERM, writes both pids to its data
# directory, and sleeps forever; otherwise it answers with its pid.
HANGS_WITH_GRANDCHILD_PY = """
import json, os, signal, sys, time
DATA = os.environ["COUCHDB_EVENTS_DATA_DIR"]
for line in sys.stdin:
    message = json.loads(line)
    if message["arguments"].get("hang"):
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(ready_w, b"x")
            while True:
                time.sleep(1)
        os.read(ready_r, 1)  # the grandchild ignores SIGTERM from here on
        path = os.path.join(DATA, "pids.json")
        with open(path + ".tmp", "w") as handle:
            json.dump({"worker": os.getpid(), "grandchild": child}, handle)
        os.replace(path + ".tmp", path)
        while True:
            time.sleep(1)
    print(json.dumps({"pid": os.getpid()}), flush=True)
"""


def test_reply_timeout_kills_the_process_group(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon(stop_timeout="1")
    daemon.worker(
        "hanger",
        {"w.py": HANGS_WITH_GRANDCHILD_PY},
        type="python",
        delegate="w.py",
        mode="reply",
        timeout=1,
    )
    daemon.event({"_id": "hang", "workers": {"hanger": {"hang": True}}})
    daemon.event({"_id": "ok", "workers": {"hanger": {}}})
    daemon.wait_loaded("hang")
    daemon.wait_loaded("ok")

    # A first message starts the process: the timeout then measures the hang, not start-up.
    status, _h, body = daemon.fire("/ok?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    first = body["runs"][0]["answer"]["pid"]

    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/hang?wait=20")))
    started = time.monotonic()
    caller.start()
    pids = read_json_file(daemon.work_dir / "data" / "hanger" / "pids.json")
    worker, grandchild = process(pids["worker"]), process(pids["grandchild"])
    assert worker.pid == first and alive(grandchild)
    assert os.getpgid(grandchild.pid) == worker.pid
    caller.join(20)
    took = time.monotonic() - started
    [(status, _h, body)] = answers
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "timeout", run
    assert "within 1 s (timeout); killed" in run["error"], run
    assert took < 8, f"the timeout of 1 s took {took:.1f} s to answer"
    wait_gone([worker, grandchild], timeout=5)

    info = worker_info(daemon, "hanger")
    assert (info["timeouts"], info["failed"], info["succeeded"]) == (1, 0, 1)
    assert info["restarts"] == 0  # killed on purpose: not a crash
    assert "timeout" in info["last_error"]

    status, _h, body = daemon.fire("/ok?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    assert body["runs"][0]["answer"]["pid"] not in (worker.pid, grandchild.pid)
    assert worker_info(daemon, "hanger")["succeeded"] == 2
    stop_and_check(daemon)


ONCE_HANGS_PY = """
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL ends it
message = json.loads(sys.stdin.readline())
path = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "pid")
with open(path + ".tmp", "w") as handle:
    handle.write(str(os.getpid()))
os.replace(path + ".tmp", path)
while True:
    time.sleep(1)
"""


def test_once_timeout_kills_a_hanging_run(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon(stop_timeout="0.5")
    daemon.worker(
        "stuck", {"w.py": ONCE_HANGS_PY}, type="python", delegate="w.py", mode="once", timeout=2
    )
    daemon.event({"_id": "stuck", "workers": {"stuck": {}}})
    daemon.wait_loaded("stuck")
    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/stuck?wait=20")))
    caller.start()
    pid_file = daemon.work_dir / "data" / "stuck" / "pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    run_process = process(int(pid_file.read_text()))
    caller.join(20)
    [(status, _h, body)] = answers
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "timeout" and "within 2 s (timeout); killed" in run["error"], run
    wait_gone([run_process], timeout=3)
    info = worker_info(daemon, "stuck")
    assert (info["timeouts"], info["failed"], info["restarts"]) == (1, 0, 0)
    assert info["processes"] == []
    stop_and_check(daemon)


# -- recycling --------------------------------------------------------------------------------
# {"grow": true} makes it hold 80 MB more (written, so resident); {"sleep": s} before answering.
GROWS_PY = """
import json, os, sys, time
held = []
for line in sys.stdin:
    arguments = json.loads(line)["arguments"]
    if arguments.get("grow"):
        held.append(b"x" * (80 * 1024 * 1024))
    time.sleep(arguments.get("sleep", 0))
    print(json.dumps({"pid": os.getpid()}), flush=True)
"""


def test_memory_limit_recycles_after_the_current_message(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()
    daemon.worker(
        "grower",
        {"w.py": GROWS_PY},
        type="python",
        delegate="w.py",
        mode="reply",
        memory_limit="40M",
    )
    daemon.event({"_id": "grow_busy", "workers": {"grower": {"grow": True, "sleep": 6}}})
    daemon.event({"_id": "grow_idle", "workers": {"grower": {"grow": True}}})
    daemon.event({"_id": "small", "workers": {"grower": {}}})
    for event in ("grow_busy", "grow_idle", "small"):
        daemon.wait_loaded(event)

    # Over the limit while busy: marked (the process says why), finishes its message, then goes.
    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/grow_busy?wait=30")))
    caller.start()
    marked = daemon.wait_status(
        lambda s: any(p["recycle"] for p in s["workers"]["grower"]["processes"]), timeout=10
    )
    [proc] = marked["workers"]["grower"]["processes"]
    assert "memory_limit" in proc["recycle"] and proc["state"] == "busy", proc
    assert proc["rss"] > 40 * 1024 * 1024
    caller.join(30)
    [(status, _h, body)] = answers
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    first = body["runs"][0]["answer"]["pid"]
    daemon.wait_status(lambda s: s["workers"]["grower"]["recycled"] == 1)

    # Over the limit while idle: stopped without waiting for a message.
    status, _h, body = daemon.fire("/grow_idle?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    second = body["runs"][0]["answer"]["pid"]
    assert second != first
    daemon.wait_status(
        lambda s: (
            s["workers"]["grower"]["recycled"] == 2 and not s["workers"]["grower"]["processes"]
        )
    )
    status, _h, body = daemon.fire("/small?wait=10")
    assert status == 200 and body["runs"][0]["answer"]["pid"] not in (first, second), body

    info = worker_info(daemon, "grower")
    assert (info["succeeded"], info["failed"], info["restarts"]) == (3, 0, 0)
    assert "over memory_limit" in daemon.host.log_text()
    stop_and_check(daemon)


PID_PY = """
import json, os, sys
for line in sys.stdin:
    print(json.dumps({"pid": os.getpid()}), flush=True)
"""


def test_max_messages_recycles(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker(
        "counted", {"w.py": PID_PY}, type="python", delegate="w.py", mode="reply", max_messages=3
    )
    daemon.event({"_id": "count", "workers": {"counted": {}}})
    daemon.wait_loaded("count")
    pids = []
    for _ in range(7):
        status, _h, body = daemon.fire("/count?wait=10")
        assert status == 200 and body["runs"][0]["state"] == "succeeded", body
        pids.append(body["runs"][0]["answer"]["pid"])
    # max_messages 3 with up to 10 % jitter (0 of 3): exactly three messages per process.
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6], pids
    info = worker_info(daemon, "counted")
    assert (info["recycled"], info["succeeded"], info["restarts"]) == (2, 7, 0)
    assert [p["pid"] for p in info["processes"]] == [pids[6]]
    stop_and_check(daemon)


# -- resource limits --------------------------------------------------------------------------
LIMITS_PY = """
import json, resource, sys
for line in sys.stdin:
    print(json.dumps({
        "files": resource.getrlimit(resource.RLIMIT_NOFILE),
        "address_space": resource.getrlimit(resource.RLIMIT_AS),
    }), flush=True)
"""

BUSY_LOOP_PY = """
import sys
for line in sys.stdin:
    while True:
        pass
"""


def test_resource_limits(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker(
        "limited",
        {"w.py": LIMITS_PY},
        type="python",
        delegate="w.py",
        mode="reply",
        limits={"files": 16, "address_space": "1G"},
    )
    daemon.worker(
        "spinner",
        {"w.py": BUSY_LOOP_PY},
        type="python",
        delegate="w.py",
        mode="reply",
        limits={"cpu": 1},
    )
    daemon.event({"_id": "limits", "workers": {"limited": {}}})
    daemon.event({"_id": "spin", "workers": {"spinner": {}}})
    daemon.wait_loaded("limits")
    daemon.wait_loaded("spin")

    status, _h, body = daemon.fire("/limits?wait=10")
    assert status == 200, body
    assert body["runs"][0]["answer"] == {"files": [16, 16], "address_space": [2**30, 2**30]}

    status, _h, body = daemon.fire("/spin?wait=20", timeout=30)
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "failed", run
    assert "killed by SIGXCPU" in run["error"] or "killed by SIGKILL" in run["error"], run
    info = worker_info(daemon, "spinner")
    assert (info["failed"], info["restarts"]) == (1, 1)
    assert "SIGXCPU" in info["last_error"] or "SIGKILL" in info["last_error"]
    stop_and_check(daemon)


# -- environment ------------------------------------------------------------------------------
ENVIRON_PY = """
import json, os, sys
for line in sys.stdin:
    print(json.dumps({"environ": dict(os.environ), "cwd": os.getcwd()}), flush=True)
"""

WORKER_ENV = {
    "PATH",
    "LANG",
    "HOME",
    "TMPDIR",
    "PYTHONUNBUFFERED",
    "PYTHONPATH",
    "NODE_PATH",
    "LC_CTYPE",  # Python's own locale coercion may add it
}


def launcher_variables(cwd: Path) -> set[str]:
    """Names the ``python3`` found on PATH adds to a minimal environment by itself (a pyenv
    shim adds several): they come from the interpreter's launcher, not from the daemon."""
    given = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    probe = subprocess.run(
        ["python3", "-c", "import json, os; print(json.dumps(sorted(os.environ)))"],
        env=given, cwd=cwd, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    return set(json.loads(probe.stdout)) - set(given)


def test_worker_environment_is_minimal_and_cwd_is_its_revision(
    couch: CouchServer,
    start_daemon: StartDaemon,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Secrets in the daemon's own environment must not reach workers either.
    monkeypatch.setenv("COUCHDB_PASSWORD", "daemon-env-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "daemon-env-secret")
    # A server with an admin, whose credentials are in couchdb_url as in production (PouchDB
    # Server refuses unknown users, and hangs a user's long-polled _changes in admin party).
    with server_with_admin(couch) as server:
        assert server.admin is not None
        user, password = server.admin
        with_credentials = server.url
        ev, wk = server.create_db("ev"), server.create_db("wk")
        rev = put_worker(
            with_credentials,
            wk,
            "nosy",
            {"w.py": ENVIRON_PY},
            type="python",
            delegate="w.py",
            mode="reply",
            env={"SMTP_HOST": "mx.example.org", "GREETING": "grüß dich"},
        )
        put_doc(with_credentials, ev, {"_id": "look", "workers": {"nosy": {}}})
        daemon = start_daemon(
            couchdb_url=with_credentials,
            events_db=ev,
            workers_db=wk,
            status_access="public",
        )
        daemon.wait_loaded("look")
        status, _h, body = daemon.fire("/look?wait=10")
        assert status == 200, body
        answer = body["runs"][0]["answer"]
        environ: dict[str, str] = answer["environ"]

        everything = json.dumps(environ)
        for secret in (password, f"{user}:", "daemon-env-secret"):
            assert secret not in everything, f"{secret!r} reached the worker: {environ}"
        assert not [k for k in environ if "COUCHDB_URL" in k or "PASSWORD" in k or "SECRET" in k]
        assert environ["SMTP_HOST"] == "mx.example.org" and environ["GREETING"] == "grüß dich"
        assert environ["COUCHDB_EVENTS_WORKER"] == "nosy"
        assert environ["COUCHDB_EVENTS_WORK_DIR"] == str(daemon.work_dir)
        assert Path(environ["COUCHDB_EVENTS_DATA_DIR"]) == daemon.work_dir / "data" / "nosy"
        assert environ["COUCHDB_EVENTS_URL"] == daemon.url + "_events/"
        revision_dir = daemon.work_dir / "workers" / "nosy" / rev
        assert Path(answer["cwd"]).resolve() == revision_dir.resolve()
        assert (revision_dir / "w.py").read_text() == ENVIRON_PY

        expected = WORKER_ENV | {"SMTP_HOST", "GREETING"} | launcher_variables(tmp_path)
        unexpected = {
            k for k in environ if not k.startswith("COUCHDB_EVENTS_") and k not in expected
        }
        assert not unexpected, f"unexpected variables in a worker's environment: {unexpected}"
        stop_and_check(daemon)


# -- hot reload -------------------------------------------------------------------------------
VERSIONED_PY = """
import json, os, sys, time
VERSION = {version}
for line in sys.stdin:
    started = time.time()
    time.sleep(json.loads(line)["arguments"].get("sleep", 0))
    print(json.dumps({{"version": VERSION, "pid": os.getpid(), "started": started}}), flush=True)
"""


@pytest.mark.slow
def test_hot_reload_under_load(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()

    def push(version: int) -> str:
        return daemon.worker(
            "reload",
            {"w.py": VERSIONED_PY.format(version=version)},
            type="python",
            delegate="w.py",
            mode="reply",
            processes=2,
        )

    old_rev = push(1)
    daemon.event({"_id": "load", "workers": {"reload": {"sleep": 0.15}}})
    daemon.event({"_id": "slow", "workers": {"reload": {"sleep": 2}}})
    daemon.wait_loaded("load")
    daemon.wait_loaded("slow")

    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def fire(path: str) -> None:
        sent = time.time()
        status, _h, body = daemon.fire(path, timeout=40)
        with lock:
            results.append({"sent": sent, "status": status, "body": body})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = [pool.submit(fire, "/load?wait=30") for _ in range(30)]
        wait_for(lambda: len(results) >= 5)
        new_rev = push(2)
        last_old_poll = time.time()
        deadline = time.monotonic() + 10
        while True:
            polled = time.time()
            if worker_info(daemon, "reload")["rev"] == new_rev:
                seen = time.time()
                break
            last_old_poll = polled
            assert time.monotonic() < deadline, "the new revision never showed in the status"
            time.sleep(0.02)
        answered_before = len(results)
        second = [pool.submit(fire, "/load?wait=30") for _ in range(20)]
        for future in first + second:
            future.result()

    assert len(results) == 50
    assert all(r["status"] == 200 for r in results), [r for r in results if r["status"] != 200]
    runs = [r["body"]["runs"][0] | {"sent": r["sent"]} for r in results]
    assert [r for r in runs if r["state"] != "succeeded"] == [], "messages were lost"
    old = [r for r in runs if r["answer"]["version"] == 1]
    new = [r for r in runs if r["answer"]["version"] == 2]
    assert len(old) >= 5 and len(new) >= 20, (len(old), len(new), answered_before)
    print(f"{len(old)} answers from the old code, {len(new)} from the new")
    # Old processes got no message once the daemon had the new revision; new ones none before.
    assert max(r["answer"]["started"] for r in old) < seen
    assert min(r["answer"]["started"] for r in new) > last_old_poll
    assert all(r["answer"]["version"] == 2 for r in runs if r["sent"] > seen)

    old_procs = []
    for pid in {r["answer"]["pid"] for r in old}:
        try:
            old_procs.append(process(pid))
        except psutil.NoSuchProcess:
            pass
    wait_gone(old_procs, timeout=5)
    info = daemon.wait_status(
        lambda s: all(p["rev"] == new_rev for p in s["workers"]["reload"]["processes"])
    )["workers"]["reload"]
    assert (info["succeeded"], info["failed"], info["restarts"]) == (50, 0, 0)
    wait_for(lambda: not (daemon.work_dir / "workers" / "reload" / old_rev).exists())
    assert (daemon.work_dir / "workers" / "reload" / new_rev).is_dir()

    # Deleting the worker: what is being handled finishes, what waits fails, clearly.
    results.clear()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(fire, "/slow?wait=30") for _ in range(6)]
        daemon.wait_status(lambda s: s["workers"]["reload"]["queued"] == 4)
        delete_doc(daemon.couch_url, daemon.workers_db, "reload")
        for future in slow:
            future.result()
    runs = [r["body"]["runs"][0] for r in results]
    assert all(r["status"] == 200 for r in results), results
    assert sorted(r["state"] for r in runs) == ["failed"] * 4 + ["succeeded"] * 2, runs
    for run in runs:
        if run["state"] == "failed":
            assert run["error"] == "worker 'reload' was deleted", run
    status, _h, body = daemon.fire("/load")
    assert (status, body["error"]) == (404, "worker_not_found"), body
    stop_and_check(daemon)


# -- the daemon killed ------------------------------------------------------------------------
STUBBORN_NO_FORK_PY = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for line in sys.stdin:
    print('{"ok": true}', flush=True)
while True:  # ignores stdin EOF too
    time.sleep(1)
"""

SEED_STREAM_PY = """
import os, sys
out = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "seen.jsonl")
for line in sys.stdin:
    with open(out, "a") as handle:
        handle.write(line)
"""


def test_workers_die_with_a_sigkilled_daemon(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon()
    daemon.worker(
        "stubborn", {"w.py": STUBBORN_NO_FORK_PY}, type="python", delegate="w.py", mode="reply"
    )
    daemon.worker("seed", {"w.py": SEED_STREAM_PY}, type="python", delegate="w.py")
    daemon.event({"_id": "both", "workers": {"stubborn": {}, "seed": {}}})
    daemon.wait_loaded("both")
    status, _h, body = daemon.fire("/both?wait=10")
    assert status == 200, body
    assert sorted(r["state"] for r in body["runs"]) == ["delivered", "succeeded"]
    workers = [process(only_pid(daemon, "stubborn")), process(only_pid(daemon, "seed"))]
    daemon_proc = process(daemon.host.proc.pid)
    assert {c.pid for c in daemon_proc.children()} == {w.pid for w in workers}

    os.kill(daemon.host.proc.pid, signal.SIGKILL)
    took = wait_gone(workers, timeout=2)
    assert daemon.host.wait(5) == -signal.SIGKILL
    print(f"workers exited {took:.2f} s after the daemon was killed")


# Forks a child that is not covered by the parent-death signal (it is not the worker itself)
# and ignores SIGHUP and SIGTERM; it stays in the worker's process group.
ESCAPES_PY = """
import json, os, signal, sys, time
for line in sys.stdin:
    ready_r, ready_w = os.pipe()
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.write(ready_w, b"x")
        while True:
            time.sleep(1)
    os.read(ready_r, 1)
    print(json.dumps({"pid": os.getpid(), "child": child}), flush=True)
"""


def test_new_daemon_kills_leftovers_of_a_sigkilled_one(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    first = start_daemon()
    first.worker("escaper", {"w.py": ESCAPES_PY}, type="python", delegate="w.py", mode="reply")
    first.event({"_id": "spawn", "workers": {"escaper": {}}})
    first.wait_loaded("spawn")
    status, _h, body = first.fire("/spawn?wait=10")
    assert status == 200, body
    answer = body["runs"][0]["answer"]
    worker, grandchild = process(answer["pid"]), process(answer["child"])
    try:
        assert os.getpgid(grandchild.pid) == worker.pid  # in the worker's group
        os.kill(first.host.proc.pid, signal.SIGKILL)
        # Not reaped yet (CouchDB may not have noticed): a zombie daemon is a dead one too.
        wait_for(lambda: process(first.host.proc.pid).status() == psutil.STATUS_ZOMBIE, 2)
        wait_gone([worker], timeout=2)
        time.sleep(0.3)  # long enough for a signal sent along with the worker's death to land
        assert alive(grandchild), "the grandchild was expected to outlive the daemon"

        second = start_daemon(
            events_db=first.events_db, workers_db=first.workers_db, work_dir=str(first.work_dir)
        )
        wait_gone([grandchild], timeout=5)
        log = second.host.wait_for_log(f"killed leftover process {grandchild.pid}")
        assert "of worker 'escaper' from an earlier run" in log
        # The new daemon's own workers are not leftovers.
        status, _h, body = second.fire("/spawn?wait=10")
        assert status == 200, body
        fresh = process(body["runs"][0]["answer"]["child"])
        stop_and_check(second)
        assert not alive(fresh)
    finally:
        if alive(grandchild):
            grandchild.kill()


# -- crash loops ------------------------------------------------------------------------------
CRASHES_PY = """
import json, os, sys
for line in sys.stdin:
    if json.loads(line)["arguments"].get("crash"):
        sys.exit(1)
    print(json.dumps({"pid": os.getpid()}), flush=True)
"""


def test_one_young_death_backs_off_then_is_ok_again(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()
    daemon.worker("crasher", {"w.py": CRASHES_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "crash", "workers": {"crasher": {"crash": True}}})
    daemon.wait_loaded("crash")
    status, _h, body = daemon.fire("/crash?wait=10")
    assert status == 200 and body["runs"][0]["state"] == "failed", body
    assert "exit status 1 before answering" in body["runs"][0]["error"]
    # It died within a second of starting: the next start waits 0.5 s. Nothing is queued, so
    # no start waits for that delay; the status must not say "backoff" for ever after.
    assert worker_info(daemon, "crasher")["state"] in ("backoff", "ok")
    info = daemon.wait_status(lambda s: s["workers"]["crasher"]["state"] == "ok", timeout=3)
    assert (info["workers"]["crasher"]["restarts"], info["workers"]["crasher"]["failed"]) == (1, 1)
    stop_and_check(daemon)


# -- stopping ---------------------------------------------------------------------------------
SLEEPS_PY = """
import json, os, sys, time
for line in sys.stdin:
    time.sleep(json.loads(line)["arguments"].get("sleep", 0))
    print(json.dumps({"pid": os.getpid(), "slept": True}), flush=True)
"""


def test_graceful_stop_lets_the_current_message_finish(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()  # stop_timeout 1.5 s: time enough for a 1 s message
    daemon.worker("napper", {"w.py": SLEEPS_PY}, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "nap", "workers": {"napper": {"sleep": 1}}})
    daemon.wait_loaded("nap")
    answers: list[tuple[int, dict[str, str], Any]] = []
    caller = threading.Thread(target=lambda: answers.append(daemon.fire("/nap?wait=30")))
    caller.start()
    daemon.wait_status(
        lambda s: any(p["current"] for p in s["workers"]["napper"]["processes"]), timeout=10
    )
    stop_and_check(daemon, limit=5.0)
    caller.join(10)
    [(status, _h, body)] = answers
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "succeeded" and run["answer"]["slept"] is True, run


def test_global_max_queued_answers_busy(start_daemon: StartDaemon) -> None:  # noqa: F811
    daemon = start_daemon(max_queued="5", stop_timeout="0.5")
    for name in ("slow_a", "slow_b"):
        daemon.worker(name, {"w.py": SLEEPS_PY}, type="python", delegate="w.py", mode="reply")
        daemon.event({"_id": name, "workers": {name: {"sleep": 30}}})
        daemon.wait_loaded(name)

    def busy_and_queued(status: dict[str, Any], queued: tuple[int, int]) -> bool:
        workers = status["workers"]
        return all(
            any(p["current"] for p in workers[name]["processes"])
            and workers[name]["queued"] == count
            for name, count in zip(("slow_a", "slow_b"), queued, strict=True)
        )

    # One message each keeps both processes busy; the next five wait.
    assert daemon.fire("/slow_a")[0] == 202
    assert daemon.fire("/slow_b")[0] == 202
    daemon.wait_status(lambda s: busy_and_queued(s, (0, 0)))
    for path in ("/slow_a", "/slow_b", "/slow_a", "/slow_b", "/slow_a"):
        status, _h, body = daemon.fire(path)
        assert status == 202, body
    daemon.wait_status(lambda s: busy_and_queued(s, (3, 2)))

    for path in ("/slow_b", "/slow_a"):
        status, headers, body = daemon.fire(path)
        assert (status, body["error"]) == (503, "busy"), body
        assert "max_queued" in body["reason"] and headers["Retry-After"] == "1"
    info = daemon.status()["workers"]
    assert (info["slow_a"]["fired"], info["slow_b"]["fired"]) == (4, 3)
    assert (info["slow_a"]["queued"], info["slow_b"]["queued"]) == (3, 2)
    stop_and_check(daemon)
