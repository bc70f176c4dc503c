"""The Celery side of ``versus_celery.py``: the same no-op work through Celery and Redis.

``run_celery`` starts a Redis server of its own and a Celery worker, runs the load generator
(``celery_load.py``) and returns its figures in the shape of the couchdb-events side's. Celery
runs in a virtualenv of its own (``ensure_celery_venv``), with pinned versions; ``redis-server``
comes from Debian's package (``ensure_redis``). Everything started here is stopped on return,
on an error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

if __package__ in (None, ""):  # run as a script: python bench/celery_side.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile_ms
from couchdb_events.couch.embedded import free_port

BENCH = Path(__file__).resolve().parent
PROJECT = BENCH.parent
CELERY_VERSION = "5.7.0"  # the newest Celery 5 on PyPI when this was written
# What ``pip install "celery[redis]==5.7.0"`` resolved to then: the broker transport and the
# Redis client, pinned too so that reruns measure the same code.
PINS = (f"celery[redis]=={CELERY_VERSION}", "kombu==5.7.0", "redis==8.1.0")
VENV = Path(".bench-venv") / "celery"  # under the project
MARKER = "bench-pins.txt"  # in the virtualenv: the pins it was made with
# Redis 7's built-in snapshot points, which are also those of Debian's /etc/redis/redis.conf.
REDIS_SAVE = "3600 1 300 100 60 10000"
READY_TIMEOUT = 60.0  # seconds for Redis, the worker and the warm-up
SETTLE_TIMEOUT = 120.0  # seconds for the results after the last submission
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL


def interrupt_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: what was started is stopped on the way out."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def progress(line: str) -> None:
    """Set-up news, on standard error (standard output may be a JSON summary)."""
    print(line, file=sys.stderr, flush=True)


# -- set-up ---------------------------------------------------------------------------------
def ensure_redis() -> str:
    """The path of ``redis-server``, installed from Debian's package when missing (as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    how = "install it (Debian/Ubuntu: apt-get install redis-server) and run again"
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"redis-server is not on PATH: {how}")
    progress("redis-server is not on PATH: installing Debian's redis-server package ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "redis-server",
    ]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # Most likely the package lists are missing or stale: update them and try once more.
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"apt-get install redis-server failed ({tail[0]}): {how}")
    stop_system_redis()
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
    )
    if not found:
        raise RuntimeError(f"redis-server is still not found after installing it: {how}")
    return found


def stop_system_redis() -> None:
    """Stop and disable the system service the package may have started: the benchmark runs a
    Redis of its own and does not depend on it. Where services cannot start (a container with
    a policy-rc.d that forbids it) there is nothing to stop, and these fail quietly."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        commands = [["systemctl", "disable", "--now", "redis-server"]]
    else:
        commands = [["service", "redis-server", "stop"], ["update-rc.d", "redis-server", "disable"]]
    for command in commands:
        if shutil.which(command[0]):
            subprocess.run(command, capture_output=True, check=False)


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_celery_venv(root: Path = PROJECT) -> Path:
    """The Python of ``<root>/.bench-venv/celery``, a virtualenv with Celery and the Redis
    client at ``PINS``; made (again) when it is missing or was made with other pins."""
    venv = root / VENV
    python = venv_python(venv)
    marker = venv / MARKER
    wanted = "\n".join(PINS) + "\n"
    with contextlib.suppress(OSError):
        if python.exists() and marker.read_text() == wanted:
            return python
    progress(f"installing Celery {CELERY_VERSION} into {VENV} ...")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(
                f"could not make {VENV} ({' '.join(step[1:4])}: {tail[0]}); "
                f"remove {venv} and run again, or install {' '.join(PINS)} there by hand"
            )
    marker.write_text(wanted)
    progress(f"installed {', '.join(PINS)} into {VENV}")
    return python


# -- processes ----------------------------------------------------------------------------------
class Group:
    """A subprocess in a session of its own; ``stop`` ends its whole process group."""

    def __init__(self, name: str, argv: list[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.proc: subprocess.Popen[Any] = subprocess.Popen(
                argv,
                stdout=popen.pop("stdout", out),
                stderr=out,
                stdin=popen.pop("stdin", subprocess.DEVNULL),
                start_new_session=True,
                **popen,
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """SIGTERM to the group, wait; SIGKILL to the group if the process does not go."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader is gone; pool children it left behind go with the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def redis_ping(port: int) -> bool:
    """Whether a Redis server answers PING on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


def process_cpu(pid: int, tree: bool = False, reaped: bool = False) -> float:
    """CPU seconds (user + system) of a process; ``tree``: with its children running now;
    ``reaped``: with its children that ended and were waited for (Redis's snapshot forks)."""
    try:
        process = psutil.Process(pid)
        members = [process, *(process.children(recursive=True) if tree else [])]
        total = 0.0
        for member in members:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system
                if reaped and member is process:
                    total += times.children_user + times.children_system
        return total
    except psutil.Error:
        return math.nan


def lines_of(stream: IO[str]) -> queue.Queue[str | None]:
    """The lines of ``stream``, read by a thread; None at its end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="celery-load-reader", daemon=True).start()
    return lines


def next_message(
    lines: queue.Queue[str | None], timeout: float, watch: list[Group], what: str
) -> dict[str, Any]:
    """The next JSON object the load generator prints, within ``timeout`` seconds; raises
    RuntimeError when it ends or errs, or one of the processes of ``watch`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        for group in watch:
            if not group.alive():
                raise RuntimeError(
                    f"{group.name} exited (status {group.proc.returncode}) while waiting for "
                    f"{what}:\n{group.log_tail()}"
                )
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no {what} within {timeout:g} s")
        try:
            line = lines.get(timeout=min(left, 0.5))
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"the Celery load generator ended before {what}")
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict):
                if "error" in message:
                    raise RuntimeError(str(message["error"]))
                return message


def cpu_snapshot(redis: Group, worker: Group, load: Group) -> dict[str, float]:
    """CPU seconds so far of each process taking part (``_worker main``: of the worker's main
    process alone, which is also in ``celery worker``)."""
    return {
        "redis": process_cpu(redis.pid, reaped=True),
        "celery worker": process_cpu(worker.pid, tree=True),  # main process + pool children
        "client": process_cpu(load.pid),
        "_worker main": process_cpu(worker.pid),
    }


@contextlib.contextmanager
def started(groups: list[Group]) -> Iterator[list[Group]]:
    """Stops every group added to ``groups``, last first, however the block ends."""
    try:
        yield groups
    finally:
        for group in reversed(groups):
            group.stop()


# -- the run --------------------------------------------------------------------------------------
def run_celery(
    tasks: int, clients: int, processes: int, scratch: Path, fsync: bool = False
) -> dict[str, Any]:
    """``tasks`` no-op tasks submitted by ``clients`` threads to a Celery worker with
    ``processes`` prefork processes, broker and result backend on a Redis of its own; the
    figures in the shape of ``measure_couchdb_events``'s. Logs and Redis's files go into
    ``scratch``. ``fsync``: Redis with an append-only file synced on every write
    (``appendfsync always``), so that a task is on disk when ``apply_async`` returns, as an
    activation record is when couchdb-events answers 202."""
    redis_server = ensure_redis()
    python = ensure_celery_venv(PROJECT)
    port = free_port()
    env = {
        **os.environ,
        "BENCH_CELERY_REDIS": f"redis://127.0.0.1:{port}/0",
        "PYTHONPATH": str(BENCH),  # celery_tasks.py for the worker and the load generator
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with started([]) as groups:
        # Redis as a Celery user gets it from Debian: no config file here, but its settings that
        # matter are Redis's defaults, so they are the same: RDB snapshots at the default save
        # points (spelled out below; 10000 changes in 60 s is reached in a run, so a snapshot
        # fork may fall into it), no append-only file. Only where the dump file goes differs:
        # ``--dir`` is the scratch folder, never the project (nor /var/lib/redis).
        redis_argv = [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--dir",
            str(scratch),
            "--logfile",
            str(scratch / "redis.log"),
            "--save",
            REDIS_SAVE,
            *(
                ["--appendonly", "yes", "--appendfsync", "always"]
                if fsync
                else ["--appendonly", "no"]
            ),
        ]
        redis = Group("redis-server", redis_argv, scratch / "redis.log", cwd=scratch)
        groups.append(redis)
        deadline = time.monotonic() + READY_TIMEOUT
        while not redis_ping(port):
            if not redis.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{redis.log_tail()}")
            time.sleep(0.05)

        worker_argv = [
            str(python),
            "-m",
            "celery",
            "-A",
            "celery_tasks",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(processes),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-O",
            "fair",
            "--loglevel",
            "WARNING",
        ]
        log = scratch / "celery-worker.log"
        worker = Group("the Celery worker", worker_argv, log, cwd=scratch, env=env)
        groups.append(worker)

        load_argv = [
            str(python),
            str(BENCH / "celery_load.py"),
            "--tasks",
            str(tasks),
            "--clients",
            str(clients),
            "--warm-up",
            str(max(4 * processes, clients)),
            "--ready-timeout",
            str(READY_TIMEOUT),
            "--settle-timeout",
            str(SETTLE_TIMEOUT),
        ]
        load = Group(
            "the Celery load generator",
            load_argv,
            scratch / "celery-load.log",
            cwd=scratch,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        groups.append(load)
        assert load.proc.stdin is not None and load.proc.stdout is not None
        lines = lines_of(load.proc.stdout)
        ready = next_message(lines, 2 * READY_TIMEOUT, [redis, worker], "the worker's readiness")

        cpu0 = cpu_snapshot(redis, worker, load)
        load.proc.stdin.write("go\n")
        load.proc.stdin.flush()
        budget = SETTLE_TIMEOUT + READY_TIMEOUT + tasks * 0.05  # generous: 20 tasks/s at worst
        message = next_message(lines, budget, [redis, worker, load], "the run's figures")
        cpu1 = cpu_snapshot(redis, worker, load)
        load.proc.stdin.close()  # the load generator exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            load.proc.wait(timeout=STOP_TIMEOUT)
        problems = [line for line in worker.log_tail(50).splitlines() if "ERROR" in line]
    figures = summary(ready, message["result"], cpu0, cpu1, problems)
    if fsync:
        figures["system"] += ", appendfsync always"
    return figures


def summary(
    ready: dict[str, Any],
    result: dict[str, Any],
    cpu0: dict[str, float],
    cpu1: dict[str, float],
    problems: list[str],
) -> dict[str, Any]:
    """The figures of one run, in the shape of ``measure_couchdb_events``'s."""

    def num(value: float, digits: int = 2) -> float | None:
        return round(value, digits) if math.isfinite(value) else None

    latencies: list[float] = result["latencies_s"]
    accepted, wall = int(result["accepted"]), float(result["wall_s"])
    finished = int(result["succeeded"]) + int(result["failed"])
    done = math.nan if result["done_s"] is None else float(result["done_s"])
    errors: dict[str, int] = result["errors"]
    # CPU from the first submission until every result was seen in Redis, per task finished.
    cpu_ms = {
        name: num((cpu1[name] - cpu0[name]) * 1000 / finished if finished else math.nan)
        for name in cpu0
    }
    main_ms = cpu_ms.pop("_worker main")
    return {
        "system": f"Celery {ready['celery']} + Redis {ready['redis']}",
        "clients": int(result["clients"]),
        "tasks": int(result["tasks"]),
        "errors": sum(errors.values()),  # failed submissions, wrong or missing results
        "error_kinds": errors,
        "accepted_per_s": num(accepted / wall if wall > 0 else math.nan, 1),
        "done_per_s": num(finished / done if done > 0 else math.nan, 1),
        "p50_ms": num(percentile_ms(latencies, 50)),
        "p99_ms": num(percentile_ms(latencies, 99)),
        "cpu_ms_per_run": cpu_ms,
        "wall_s": num(wall, 3),
        "done_s": num(done, 3),
        # The worker's main process (consuming from Redis, handing tasks to the pool, acks)
        # and its pool processes (running the task, storing its result).
        "celery_worker_cpu_ms_per_run": {
            "main": main_ms,
            "pool": num(cpu_ms["celery worker"] - main_ms)
            if cpu_ms["celery worker"] is not None and main_ms is not None
            else None,
        },
        # The load generator's own count (time.process_time): while firing, and until done
        # (with the polling of the results).
        "client_cpu_ms_per_run_own": {
            "firing": num(
                float(result["cpu_firing_s"]) * 1000 / accepted if accepted else math.nan
            ),
            "until done": num(float(result["cpu_s"]) * 1000 / finished if finished else math.nan),
        },
        "redis_snapshots": int(result["redis_forks"]),
        "versions": {key: ready[key] for key in ("celery", "kombu", "redis_py", "redis")},
        "worker_log_errors": problems[:10],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.celery_side``: the Celery side alone, as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.celery_side", description="The Celery side of versus_celery alone."
    )
    parser.add_argument("--tasks", type=int, default=3000, metavar="N")
    parser.add_argument("--clients", type=int, default=8, metavar="C")
    parser.add_argument("--processes", type=int, default=2, metavar="P")
    args = parser.parse_args(argv)
    if min(args.tasks, args.clients, args.processes) < 1:
        parser.error("--tasks, --clients and --processes must be at least 1")
    interrupt_on_sigterm()
    try:
        with tempfile.TemporaryDirectory(prefix="couchdb-events-celery-") as scratch:
            figures = run_celery(args.tasks, args.clients, args.processes, Path(scratch))
    except KeyboardInterrupt:
        print("bench.celery_side: interrupted; Redis and Celery stopped", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        print(f"bench.celery_side: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
