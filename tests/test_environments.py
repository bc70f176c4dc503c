"""Worker environments without a registry: which workers get one, the build tools' environment,
one build per content, a build killed with its process group, and the sweep of old ones."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from couchdb_events.config import Config
from couchdb_events.model.workers import WorkerSpec
from couchdb_events.workers import environments as envs
from couchdb_events.workers.building import BuildError, build_environment, run_tool
from couchdb_events.workers.environments import Environments, kind_of
from couchdb_events.workers.supervisor import worker_environment


def spec(name: str, argv: tuple[str, ...], *attachments: str) -> WorkerSpec:
    return WorkerSpec(name, "1-a", delegate="w", argv=argv, attachments=attachments)


def test_which_workers_get_an_environment() -> None:
    assert kind_of(spec("p", ("python3", "-u", "w.py"), "w.py", "requirements.txt")) == "python"
    assert kind_of(spec("p", ("/opt/py/bin/python3.12", "w.py"), "requirements.txt")) == "python"
    assert kind_of(spec("n", ("node", "w.js"), "w.js", "package.json")) == "node"
    assert kind_of(spec("n", ("node", "w.js"), "w.js", "requirements.txt")) is None
    assert kind_of(spec("p", ("python3", "w.py"), "w.py", "package.json")) is None
    assert kind_of(spec("s", ("sh", "w.sh"), "w.sh", "requirements.txt")) is None
    assert kind_of(spec("x", ("python3", "w.py"), "w.py")) is None


def test_build_tools_get_the_workers_base_environment_not_the_daemons(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COUCHDB_EVENTS_COUCHDB_URL", "http://admin:secret@127.0.0.1:5984/")
    monkeypatch.setenv("COUCHDB_PASSWORD", "secret")
    base = worker_environment("http://127.0.0.1:5985/_events/", "i", tmp_path)
    for kind, cache in (("python", "PIP_CACHE_DIR"), ("node", "npm_config_cache")):
        env = build_environment(base, tmp_path / "cache", kind)
        assert "secret" not in "".join(env.values())
        assert set(env) - set(base) <= {
            cache,
            "PIP_NO_INPUT",
            "npm_config_update_notifier",
            "npm_config_fund",
            "npm_config_audit",
        }
        assert env[cache].startswith(str(tmp_path / "cache"))
        assert env["PATH"] == base["PATH"]


def test_a_build_past_its_timeout_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids}; echo working; sleep 60"

    async def main() -> str:
        with pytest.raises(BuildError) as failed:
            await run_tool(("sh", "-c", script), tmp_path, dict(os.environ), 0.5, "pip install")
        return str(failed.value)

    message = asyncio.run(main())
    assert message.startswith("pip install failed (killed after build_timeout 0.5 s)")
    assert "working" in message
    child = int(pids.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the tool's child survived"
        time.sleep(0.05)


def test_a_failed_tool_says_its_exit_status_and_last_lines(tmp_path: Path) -> None:
    script = "for i in $(seq 1 50); do echo line $i; done; echo 'ERROR: no such package' >&2"
    script += "; exit 1"

    async def main() -> str:
        with pytest.raises(BuildError) as failed:
            await run_tool(("sh", "-c", script), tmp_path, dict(os.environ), 30, "pip install")
        return str(failed.value)

    message = asyncio.run(main())
    assert message.startswith("pip install failed (exit status 1); its last lines:\n")
    assert "ERROR: no such package" in message
    assert "line 50" in message and "line 10\n" not in message  # the last lines only


def fake_builds(monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """Builds that run ``script`` in the environment's directory instead of venv and pip."""

    def steps(
        self: Environments, kind: str, interpreter: str, path: Path
    ) -> list[tuple[str, tuple[str, ...], Path]]:
        return [("pip install", ("sh", "-c", script), path)]

    monkeypatch.setattr(Environments, "_steps", steps)


def test_one_build_per_content_shared_by_workers_and_reused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_builds(monkeypatch, "sleep 0.3; echo built >> ../../builds.log")
    config = Config(work_dir=tmp_path)
    base = {"PATH": os.environ["PATH"]}
    cwd = tmp_path / "rev"
    cwd.mkdir()
    (cwd / "requirements.txt").write_text("six==1.16.0\n")
    argv = (sys.executable, "-u", "w.py")
    one = spec("one", argv, "w.py", "requirements.txt")
    two = spec("two", argv, "w.py", "requirements.txt")

    async def main(environments: Environments) -> list[WorkerSpec]:
        return list(
            await asyncio.gather(environments.ensure(one, cwd), environments.ensure(two, cwd))
        )

    environments = Environments(config, base)
    ran = asyncio.run(main(environments))
    [env_dir] = (tmp_path / "envs").iterdir()
    assert env_dir.name.startswith("python-")
    assert [s.argv for s in ran] == [(str(env_dir / "bin" / "python"), "-u", "w.py")] * 2
    assert environments.builds == 1
    status = environments.describe(one)
    assert status is not None
    assert (status["kind"], status["state"], status["error"]) == ("python", "ready", None)
    assert status["hash"] == env_dir.name.removeprefix("python-")[:12]
    assert status["size_bytes"] > 0 and status["build_seconds"] >= 0.3
    # A restarted daemon finds it ready; a half-built one is built again.
    again = Environments(config, base)
    asyncio.run(main(again))
    assert again.builds == 0
    (env_dir / envs.READY).unlink()
    third = Environments(config, base)
    asyncio.run(main(third))
    assert third.builds == 1
    assert (tmp_path / "builds.log").read_text().count("built") == 2


def test_a_failed_build_is_a_build_error_and_shows_in_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_builds(monkeypatch, "echo 'No matching distribution found'; exit 1")
    cwd = tmp_path / "rev"
    cwd.mkdir()
    (cwd / "requirements.txt").write_text("nothing==1\n")
    worker = spec("bad", (sys.executable, "w.py"), "w.py", "requirements.txt")
    environments = Environments(Config(work_dir=tmp_path), {"PATH": os.environ["PATH"]})
    with pytest.raises(BuildError) as failed:
        asyncio.run(environments.ensure(worker, cwd))
    assert "pip install failed (exit status 1)" in str(failed.value)
    assert "No matching distribution found" in str(failed.value)
    status = environments.describe(worker)
    assert status is not None and status["state"] == "failed"
    assert status["error"] == str(failed.value)


def test_sweep_removes_environments_unused_for_a_day(tmp_path: Path) -> None:
    environments = Environments(Config(work_dir=tmp_path), {})
    old, recent, current = (tmp_path / "envs" / f"python-{h * 64}" for h in "abc")
    for folder in (old, recent, current):
        folder.mkdir(parents=True)
        (folder / envs.USED).touch()
    day_ago = time.time() - envs.MAX_AGE - 60
    for folder in (old, current):
        for path in (folder / envs.USED, folder):
            os.utime(path, (day_ago, day_ago))
    environments._current["worker"] = "c" * 64  # a current revision's
    assert environments.sweep() == [old.name]
    assert sorted(p.name for p in (tmp_path / "envs").iterdir()) == [recent.name, current.name]


def test_settings() -> None:
    config = Config.from_settings(
        {
            "build_timeout": "30",
            "pip_args": "--index-url 'http://mirror.example/simple' --no-cache-dir",
            "npm_args": "--registry=http://npm.example/",
            "build_cache_dir": "/srv/cache",
        }
    )
    assert config.build_timeout == 30.0
    assert config.pip_args == ("--index-url", "http://mirror.example/simple", "--no-cache-dir")
    assert config.npm_args == ("--registry=http://npm.example/",)
    assert config.build_cache_dir == Path("/srv/cache")
    default = Config(work_dir=Path("/w"))
    assert (default.build_timeout, default.pip_args, default.npm_args) == (300.0, (), ())
    assert Environments(default, {}).cache_dir == Path("/w/cache")


def test_closing_stops_a_build_under_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    fake_builds(monkeypatch, f"sleep 60 & echo $! > {pids}; wait")
    cwd = tmp_path / "rev"
    cwd.mkdir()
    (cwd / "requirements.txt").write_text("six\n")
    worker = spec("slow", (sys.executable, "w.py"), "w.py", "requirements.txt")
    environments = Environments(Config(work_dir=tmp_path), {"PATH": os.environ["PATH"]})

    async def main() -> BaseException | WorkerSpec:
        started = asyncio.ensure_future(environments.ensure(worker, cwd))
        while not pids.exists() and not started.done():
            await asyncio.sleep(0.05)
        await environments.close()
        [result] = await asyncio.gather(started, return_exceptions=True)
        return result

    result = asyncio.run(main())
    assert isinstance(result, BuildError) and "couchdb-events is stopping" in str(result)
    child = int(pids.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the build's child survived"
        time.sleep(0.05)
