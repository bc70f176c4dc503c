"""End to end: workers with dependencies, built by the real daemon with the real pip and npm.

Tests marked ``registry`` install from PyPI or the npm registry (CI reaches both).
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.cli.push import push_path
from couchdb_events.config import Config
from tests.test_daemon_e2e import (
    DEMO,
    Daemon,
    StartDaemon,
    start_daemon,  # noqa: F401 - the fixture, used by name
    stop_and_check,
    wait_for,
)

pytestmark = pytest.mark.e2e

SIX_PY = """
import json, sys
import six
for line in sys.stdin:
    print(json.dumps({"six": six.__version__, "python": sys.executable}), flush=True)
"""

IS_NUMBER_JS = """
const isNumber = require('is-number');
const readline = require('readline');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const message = JSON.parse(line);
  console.log(JSON.stringify({ number: isNumber(message.arguments.value) }));
});
"""

PACKAGE_JSON = json.dumps(
    {"name": "isnum-worker", "version": "1.0.0", "private": True,
     "dependencies": {"is-number": "7.0.0"}}
)  # fmt: skip

PACKAGE_LOCK = json.dumps(
    {
        "name": "isnum-worker",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": True,
        "packages": {
            "": {"name": "isnum-worker", "version": "1.0.0",
                 "dependencies": {"is-number": "7.0.0"}},
            "node_modules/is-number": {
                "version": "7.0.0",
                "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43"
                "QKPDlK9cGvNp6NZWZUBlbGXYxxng==",
                "license": "MIT",
                "engines": {"node": ">=0.12.0"},
            },
        },
    }
)  # fmt: skip

BUILD_WAIT = 240  # seconds a test waits for a build from the registry


def environment(daemon: Daemon, worker: str) -> dict[str, Any]:
    env = daemon.status()["workers"][worker]["environment"]
    assert env is not None
    return dict(env)


def env_dirs(daemon: Daemon) -> list[Path]:
    root = daemon.work_dir / "envs"
    return sorted(root.iterdir()) if root.is_dir() else []


@pytest.mark.registry
def test_python_worker_imports_a_package_from_its_requirements(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()
    files = {"w.py": SIX_PY, "requirements.txt": "six==1.16.0\n"}
    daemon.worker("uses_six", files, type="python", delegate="w.py", mode="reply")
    daemon.worker("also_six", files, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "six", "workers": {"uses_six": {}}})
    daemon.event({"_id": "six_too", "workers": {"also_six": {}}})
    daemon.wait_loaded("six")
    daemon.wait_loaded("six_too")
    status, _h, body = daemon.fire(f"/six?wait={BUILD_WAIT}")
    assert status == 200, (body, daemon.host.log_text())
    [run] = body["runs"]
    assert run["state"] == "succeeded", run
    assert run["answer"]["six"] == "1.16.0"
    [env_dir] = env_dirs(daemon)
    assert run["answer"]["python"] == str(env_dir / "bin" / "python")
    env = environment(daemon, "uses_six")
    assert (env["kind"], env["state"], env["error"]) == ("python", "ready", None)
    assert env_dir.name == f"python-{env['hash']}" or env_dir.name.startswith(
        f"python-{env['hash']}"
    )
    assert env["size_bytes"] > 0 and env["build_seconds"] > 0
    # Another worker and a new revision with the same requirements share the environment.
    status, _h, body = daemon.fire("/six_too?wait=60")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    daemon.worker("uses_six", {**files, "w.py": SIX_PY + "\n# rev 2\n"}, type="python",
                  delegate="w.py", mode="reply")  # fmt: skip
    daemon.wait_status(lambda s: s["workers"]["uses_six"]["rev"].startswith("2-"))
    status, _h, body = daemon.fire("/six?wait=60")
    assert status == 200 and body["runs"][0]["answer"]["six"] == "1.16.0", body
    assert env_dirs(daemon) == [env_dir]
    assert daemon.host.log_text().count("building python environment") == 1
    stop_and_check(daemon)


@pytest.mark.registry
@pytest.mark.parametrize("lock", [True, False], ids=["npm-ci", "npm-install"])
def test_node_worker_requires_a_package_from_its_package_json(
    start_daemon: StartDaemon,  # noqa: F811
    lock: bool,
) -> None:
    daemon = start_daemon()
    files = {"w.js": IS_NUMBER_JS, "package.json": PACKAGE_JSON}
    if lock:
        files["package-lock.json"] = PACKAGE_LOCK
    daemon.worker("isnum", files, type="node", delegate="w.js", mode="reply",
                  arguments={"value": "42"})  # fmt: skip
    daemon.event({"_id": "isnum", "workers": {"isnum": {}}})
    daemon.wait_loaded("isnum")
    status, _h, body = daemon.fire(f"/isnum?wait={BUILD_WAIT}")
    assert status == 200, (body, daemon.host.log_text())
    [run] = body["runs"]
    assert run["state"] == "succeeded" and run["answer"] == {"number": True}, run
    [env_dir] = env_dirs(daemon)
    assert (env_dir / "node_modules" / "is-number" / "package.json").is_file()
    assert not (env_dir / "package-lock.json").exists() or lock
    env = environment(daemon, "isnum")
    assert (env["kind"], env["state"]) == ("node", "ready")
    [rev_dir] = (daemon.work_dir / "workers" / "isnum").iterdir()
    assert (rev_dir / "node_modules").resolve() == env_dir / "node_modules"
    assert "npm ci" in daemon.host.log_text() or not lock
    stop_and_check(daemon)


@pytest.mark.registry
def test_a_bad_requirement_fails_the_worker_until_a_new_revision(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()
    bad = {"w.py": SIX_PY, "requirements.txt": "this-package-does-not-exist-couchdb-events==1.0\n"}
    daemon.worker("bad", bad, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "bad", "workers": {"bad": {}}})
    daemon.wait_loaded("bad")
    status, _h, body = daemon.fire(f"/bad?wait={BUILD_WAIT}")
    assert status == 200, body
    [run] = body["runs"]
    assert run["state"] == "failed", run
    assert "pip install failed (exit status 1)" in run["error"], run
    info = daemon.wait_status(lambda s: s["workers"]["bad"]["state"] == "failed")["workers"]["bad"]
    assert "pip install failed (exit status 1)" in info["last_error"]
    assert "this-package-does-not-exist-couchdb-events" in info["last_error"]
    assert "No matching distribution" in info["last_error"], info["last_error"]
    env = info["environment"]
    assert env["state"] == "failed" and "exit status 1" in env["error"]
    status, _h, body = daemon.fire("/bad")
    assert (status, body["error"]) == (503, "worker_failed"), body
    assert "pip install failed" in body["reason"]
    # A new revision (here without requirements) clears the failure.
    daemon.worker("bad", {"w.py": "import json, sys\nfor l in sys.stdin: print('{}', flush=True)"},
                  type="python", delegate="w.py", mode="reply")  # fmt: skip
    info = daemon.wait_status(lambda s: s["workers"]["bad"]["state"] == "ok")["workers"]["bad"]
    assert info["environment"] is None
    status, _h, body = daemon.fire("/bad?wait=30")
    assert status == 200 and body["runs"][0]["state"] == "succeeded", body
    stop_and_check(daemon)


@pytest.fixture
def silent_index() -> Iterator[int]:
    """A port that accepts connections and never answers (an index that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_build_past_build_timeout_is_killed_and_fails_the_worker(
    start_daemon: StartDaemon,  # noqa: F811
    silent_index: int,
) -> None:
    daemon = start_daemon(
        build_timeout="3",
        pip_args=f"--index-url http://127.0.0.1:{silent_index}/simple --timeout 60",
    )
    files = {"w.py": SIX_PY, "requirements.txt": "six==1.16.0\n"}
    daemon.worker("hangs", files, type="python", delegate="w.py", mode="reply")
    daemon.event({"_id": "hangs", "workers": {"hangs": {}}})
    daemon.wait_loaded("hangs")
    status, _h, body = daemon.fire("/hangs")
    assert status == 202, body
    [run] = body["runs"]

    def env_state(status: dict[str, Any]) -> Any:
        env = status["workers"].get("hangs", {}).get("environment")
        return env and env["state"]

    # While pip waits for the index the worker's environment is building, its message queued.
    building = daemon.wait_status(lambda s: env_state(s) == "building")["workers"]["hangs"]
    assert building["queued"] == 1 and building["state"] == "ok"
    info = daemon.wait_status(lambda s: s["workers"]["hangs"]["state"] == "failed", timeout=30)
    wait_for(lambda: daemon.fire(f"/_activations/{run['id']}")[2].get("state") == "failed")
    error = info["workers"]["hangs"]["last_error"]
    # Creating the virtualenv may take most of the 3 s on a busy machine: either step is cut.
    assert re.search(
        r"(pip install|python -m venv) failed \(killed after build_timeout 3 s\)", error
    )
    assert info["workers"]["hangs"]["environment"]["state"] == "failed"
    stop_and_check(daemon)  # nothing of the build survives


@pytest.mark.registry
def test_the_nodemailer_email_example_pushed_and_run(
    start_daemon: StartDaemon,  # noqa: F811
) -> None:
    daemon = start_daemon()
    daemon.event(json.loads((DEMO / "email_event.json").read_text()))
    config = Config(couchdb_url=daemon.couch_url, workers_db=daemon.workers_db)
    folder = DEMO / "send_email_nodemailer"
    summary = push_path(config, folder)
    assert summary.startswith("worker send_email -> ") and "2 attachments" in summary
    daemon.wait_loaded("email_event")
    status, _h, body = daemon.fire("/email_event")
    assert status == 202, body
    [run] = body["runs"]
    outbox = daemon.work_dir / "data" / "send_email" / "outbox"
    mail = outbox / f"{run['id']}.json"
    wait_for(mail.is_file, timeout=BUILD_WAIT)
    sent = json.loads(mail.read_text())
    assert sent["to"] == [{"address": "support@yourcompany.com", "name": ""}]
    assert sent["headers"]["X-Event-Id"] == run["id"]
    assert sent["messageId"]
    env = environment(daemon, "send_email")
    assert (env["kind"], env["state"]) == ("node", "ready")
    stop_and_check(daemon)
