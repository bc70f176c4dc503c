"""couchdb-events against Celery + Redis: the same no-op work, on the same machine, in one run.

For each system, ``--clients`` concurrent clients submit ``--tasks`` no-op jobs, each client
waiting for its job to be accepted before it submits the next: couchdb-events durable (the 202
comes after the activation record is stored; ``bench.durable.measure_couchdb_events``) with a
``reply`` worker of ``--processes`` processes, then Celery with a prefork worker of
``--processes`` processes, broker and result backend on a Redis of its own
(``bench.celery_side.run_celery``). It prints a table of both and, last, the ratio of runs
finished per second, couchdb-events / Celery + Redis.

    python -m bench.versus_celery [--couchdb-url URL] [--tasks 3000] [--clients 8]
                                  [--processes 2] [--json]

It reports; it does not assert. It exits 1 only when setting up failed (a one-line reason on
standard error). Everything it starts is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import urllib.error
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/versus_celery.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.celery_side import (
    PROJECT,
    ensure_celery_venv,
    ensure_redis,
    interrupt_on_sigterm,
    run_celery,
)
from bench.common import add_couchdb_url
from bench.durable import measure_couchdb_events
from couchdb_events.errors import EventsError

TARGET_RATIO = 2.0  # couchdb-events / Celery + Redis, runs finished per second


def ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """Runs finished per second, couchdb-events / Celery + Redis (NaN when either is missing)."""
    mine, other = ours.get("done_per_s"), theirs.get("done_per_s")
    if not isinstance(mine, int | float) or not isinstance(other, int | float) or other <= 0:
        return math.nan
    return float(mine) / float(other)


def verdict(value: float) -> str:
    return "met" if value >= TARGET_RATIO else "MISSED"


def figure(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "-"


def cpu_text(cpu: dict[str, Any]) -> str:
    return ", ".join(f"{name} {figure(ms, 2)}" for name, ms in cpu.items())


def print_report(
    results: list[dict[str, Any]],
    clients: int,
    value: float,
    synced: dict[str, Any] | None = None,
) -> None:
    """The table, and the ratio against Celery + Redis as it comes last; with ``synced`` (Redis
    syncing every write) a row for it and its ratio before that."""
    if synced is not None:
        results = [*results, synced]
    width = max(len("system"), *(len(str(r["system"])) for r in results))
    header = (
        f"{'system':<{width}} {'clients':>7} {'tasks':>6} {'errors':>6} {'accepted/s':>10} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'done/s':>7}  CPU ms per run"
    )
    rows = []
    for r in results:
        tasks = r.get("tasks", r.get("events", "-"))
        rows.append(
            f"{r['system']:<{width}} {r['clients']:>7} {tasks:>6} {r['errors']:>6} "
            f"{figure(r['accepted_per_s']):>10} {figure(r['p50_ms']):>7} "
            f"{figure(r['p99_ms']):>7} {figure(r['done_per_s']):>7}  "
            f"{cpu_text(r.get('cpu_ms_per_run', {}))}"
        )
    print(header)
    print("-" * max(len(line) for line in [header, *rows]))
    for row in rows:
        print(row)
    print()
    if synced is not None:
        matched = ratio(results[0], synced)
        print(
            f"couchdb-events / Celery + Redis with appendfsync always, runs finished per "
            f"second, {clients} clients: {matched:.2f}x"
        )
    print(
        f"couchdb-events / Celery + Redis, runs finished per second, {clients} clients: "
        f"{f'{value:.2f}x' if math.isfinite(value) else 'n/a'} "
        f"(target >= {TARGET_RATIO:g}x: {verdict(value)})"
    )


def finite(value: Any) -> Any:
    """``value`` with NaN and infinite numbers as None, in dicts and lists too: JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def one_line(exc: BaseException) -> str:
    """An error as one line: its first line and, when it has more (a log's tail), its last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.versus_celery", description=__doc__.split("\n")[0]
    )
    add_couchdb_url(parser)
    parser.add_argument(
        "--tasks", type=int, default=3000, metavar="N", help="jobs per system (default 3000)"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=8,
        metavar="C",
        help="concurrent clients, each submitting one job at a time (default 8)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        metavar="P",
        help="worker processes: of the couchdb-events worker and Celery's prefork pool (default 2)",
    )
    parser.add_argument(
        "--fsync",
        action="store_true",
        help="also run Celery with Redis syncing every write to its append-only file "
        "(appendfsync always): a task on disk when apply_async returns, as a record is when "
        "couchdb-events answers 202",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of a table"
    )
    args = parser.parse_args(argv)
    if min(args.tasks, args.clients, args.processes) < 1:
        parser.error("--tasks, --clients and --processes must be at least 1")

    interrupt_on_sigterm()
    try:
        # Set up first, so that a missing piece fails before anything is measured, and
        # installing does not overlap a measurement.
        ensure_redis()
        ensure_celery_venv(PROJECT)
        ours = measure_couchdb_events(
            args.couchdb_url, args.tasks, args.clients, args.processes, durable=True
        )
        with tempfile.TemporaryDirectory(prefix="couchdb-events-celery-") as scratch:
            theirs = run_celery(args.tasks, args.clients, args.processes, Path(scratch))
        synced = None
        if args.fsync:
            with tempfile.TemporaryDirectory(prefix="couchdb-events-celery-") as scratch:
                synced = run_celery(
                    args.tasks, args.clients, args.processes, Path(scratch), fsync=True
                )
    except KeyboardInterrupt:
        print("bench.versus_celery: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except (
        OSError,
        RuntimeError,
        EventsError,
        subprocess.SubprocessError,
        urllib.error.URLError,
    ) as exc:
        print(f"bench.versus_celery: {one_line(exc)}", file=sys.stderr)
        return 1

    value = ratio(ours, theirs)
    if args.json:
        summary = {
            "clients": args.clients,
            "tasks": args.tasks,
            "processes": args.processes,
            "results": [ours, theirs] + ([synced] if synced else []),
            "ratio_done_per_s_fsync": round(ratio(ours, synced), 3) if synced else None,
            "ratio_done_per_s": round(value, 3) if math.isfinite(value) else None,
            "target_ratio": TARGET_RATIO,
            "target_met": value >= TARGET_RATIO,
        }
        print(json.dumps(finite(summary), indent=2))
    else:
        print_report([ours, theirs], args.clients, value, synced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
