"""The one owner of the worker table: a pool per worker name, created on first use.

Everything runs on the event loop; other parts call these methods from that loop only, so no
lock is needed and only this module (through its pools) changes process state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

from ..config import Config
from ..errors import HTTPError
from ..model.message import Message
from ..model.workers import WorkerSpec
from .deploy import Deployer
from .environments import Environments
from .pool import Pool

HELPERS = Path(__file__).resolve().parents[1] / "helpers"


def worker_environment(
    service_url: str, instance: str, work_dir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A minimal environment for workers: no credentials of the daemon's leak into it.

    ``COUCHDB_EVENTS_INSTANCE`` and ``COUCHDB_EVENTS_WORK_DIR`` mark every process a worker
    starts, so that a restarted daemon can find what a killed one left behind.
    """
    base = os.environ if base is None else base
    return {
        "PATH": base.get("PATH", os.defpath),
        "LANG": base.get("LANG", "C.UTF-8"),
        "HOME": base.get("HOME", "/"),
        "TMPDIR": base.get("TMPDIR", "/tmp"),  # noqa: S108 - the system default, not a file we make
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(HELPERS),
        "NODE_PATH": str(HELPERS),
        "COUCHDB_EVENTS_URL": service_url,
        "COUCHDB_EVENTS_PYTHON": sys.executable,
        "COUCHDB_EVENTS_INSTANCE": instance,
        "COUCHDB_EVENTS_DAEMON": daemon_mark(),
        "COUCHDB_EVENTS_WORK_DIR": str(work_dir),
    }


def daemon_mark() -> str:
    """``pid:start-time`` of this process, to tell a live daemon from a reused pid."""
    me = psutil.Process()
    return f"{me.pid}:{me.create_time():.3f}"


def _daemon_alive(mark: str) -> bool:
    pid, _, started = mark.partition(":")
    try:
        daemon = psutil.Process(int(pid))
        # Killed but not reaped yet (a zombie) is dead: what it left behind is ours to kill.
        return f"{daemon.create_time():.3f}" == started and daemon.status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.Error):
        return False


def kill_leftovers(work_dir: Path, instance: str) -> list[str]:
    """Kill the process groups of workers an earlier daemon on ``work_dir`` left behind.

    Workers die with their daemon (parent-death signal, stdin EOF), but what they forked may
    not. Those processes still carry the earlier daemon's marks in their environment.
    """
    killed: list[str] = []
    groups: set[int] = set()
    for proc in psutil.process_iter(["pid", "environ"]):
        env = proc.info.get("environ") or {}
        if env.get("COUCHDB_EVENTS_WORK_DIR") != str(work_dir):
            continue
        if env.get("COUCHDB_EVENTS_INSTANCE") in (None, instance):
            continue
        if _daemon_alive(env.get("COUCHDB_EVENTS_DAEMON", "")):
            continue  # another daemon on the same work_dir is still running: not ours to kill
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(proc.pid))
            killed.append(
                f"killed leftover process {proc.pid} of worker "
                f"{env.get('COUCHDB_EVENTS_WORKER')!r} from an earlier run"
            )
    for group in groups:
        if group != os.getpgid(0):
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
    return killed


class Supervisor:
    def __init__(self, config: Config, deployer: Deployer, env: Mapping[str, str]) -> None:
        self._config = config
        self._deployer = deployer
        self._env = dict(env)
        if deployer.environments is None:
            deployer.environments = Environments(config, self._env)
        self.environments = deployer.environments
        self.pools: dict[str, Pool] = {}
        self._closed = False

    def _pool(self, spec: WorkerSpec) -> Pool:
        if self._closed:
            raise HTTPError(
                503, "shutting_down", "couchdb-events is stopping", {"Retry-After": "5"}
            )
        pool = self.pools.get(spec.name)
        if pool is None:
            pool = Pool(spec, self._deployer, self._env, self._config.stop_timeout)
            self.pools[spec.name] = pool
        else:
            pool.update(spec)
        return pool

    def check(self, spec: WorkerSpec) -> None:
        """Raise the ``HTTPError`` a message for this worker would get now."""
        self._pool(spec).check()
        queued = sum(len(pool.queue) for pool in self.pools.values())
        if queued >= self._config.max_queued:
            raise HTTPError(
                503,
                "busy",
                f"{queued} messages are waiting across all workers (max_queued)",
                {"Retry-After": "1"},
            )

    def submit(self, spec: WorkerSpec, message: Message, force: bool = False) -> None:
        self._pool(spec).submit(message, force)

    def cancel(self, message: Message) -> str | None:
        """Cancel ``message`` where it is: ``queued`` (taken out), ``running`` (its process
        group killed), or None (not in this daemon's queues or processes)."""
        pool = self.pools.get(message.worker)
        return pool.cancel(message.id) if pool is not None else None

    def worker_changed(self, name: str, spec: WorkerSpec | None) -> None:
        """The registry saw a new revision (or, with None, the deletion) of a worker document."""
        pool = self.pools.get(name)
        if pool is None:
            return
        if spec is None:
            pool.remove()
        else:
            pool.update(spec)

    async def watch(self, interval: float = 1.0) -> None:
        """Sample memory every ``interval`` seconds and forget pools of deleted workers; remove
        environments unused for a day, now and every few hours."""
        await self.environments.maybe_sweep()
        while True:
            await asyncio.sleep(interval)
            for pool in list(self.pools.values()):
                pool.sample()
            self.sweep()
            await self.environments.maybe_sweep()

    def sweep(self) -> None:
        """Forget pools of deleted workers once their last process is gone."""
        for name, pool in list(self.pools.items()):
            if pool.spec.rev == "deleted" and pool.idle:
                del self.pools[name]

    def snapshot(self) -> dict[str, Any]:
        self.sweep()
        return {
            name: {**pool.snapshot(), "environment": self.environments.describe(pool.spec)}
            for name, pool in sorted(self.pools.items())
        }

    async def close(self) -> None:
        self._closed = True
        pools = (pool.close() for pool in self.pools.values())
        await asyncio.gather(self.environments.close(), *pools)
