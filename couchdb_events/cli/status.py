"""``couchdb-events status``: the running service's ``/_status``, as tables or its JSON."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from .client import guarded, request, target


def _e(value: Any) -> str:
    """``value`` as text that rich prints as it is (no markup in names or messages)."""
    from rich.markup import escape

    return escape(str(value))


def _yes(flag: Any) -> str:
    return "[green]yes[/]" if flag else "[bold red]no[/]"


def _service(status: Mapping[str, Any], url: str) -> Any:
    from rich.table import Table

    from .output import duration

    me = status.get("couchdb_events") or {}
    records = status.get("activations") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("service", _e(f"{url}  (couchdb-events {me.get('version', '?')})"))
    table.add_row("host", _e(f"{me.get('host', '?')}, pid {me.get('pid', '?')}"))
    table.add_row("up", _e(f"{duration(me.get('uptime'))} since {me.get('started', '?')}"))
    connected = _yes(me.get("couchdb_connected"))
    table.add_row("couchdb", f"{_e(me.get('couchdb', '?'))}  connected: {connected}")
    if records.get("durable"):
        table.add_row(
            "records",
            _e(
                f"{records.get('db', '')}  backlog {records.get('backlog', 0)}, "
                f"written {records.get('written', 0)}, resumed {records.get('resumed', 0)}"
            ),
        )
    else:
        table.add_row("records", "not kept (durable = false)")
    latency = (status.get("recent") or {}).get("latency_ms") or {}
    for name, figures in latency.items():
        if isinstance(figures, dict) and figures.get("count"):
            table.add_row(
                f"{name.replace('_', ' ')} latency",
                f"p50 {figures.get('p50')} ms, p99 {figures.get('p99')} ms "
                f"({figures.get('count')} in the last minute)",
            )
    last = status.get("last_error")
    if isinstance(last, dict):
        text = _e(f"{last.get('time', '')} {last.get('message', '')}")
        table.add_row("last error", f"[red]{text}[/]")
    return table


def _workers(workers: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="workers", title_justify="left", box=None, header_style="bold")
    for name in ("WORKER", "STATE", "MODE", "PROCS", "QUEUED", "FIRED", "OK", "FAILED"):
        table.add_column(name, justify="left" if name in ("WORKER", "STATE", "MODE") else "right")
    table.add_column("RESTARTS", justify="right")
    table.add_column("LAST ERROR", overflow="ellipsis", no_wrap=True, max_width=60)
    for name, worker in sorted(workers.items()):
        state = str(worker.get("state", "?"))
        table.add_row(
            _e(name),
            f"[green]{_e(state)}[/]" if state == "ok" else f"[bold red]{_e(state)}[/]",
            _e(worker.get("mode", "")),
            str(len(worker.get("processes") or [])),
            str(worker.get("queued", 0)),
            str(worker.get("fired", 0)),
            str(worker.get("succeeded", 0)),
            str(worker.get("failed", 0)),
            str(worker.get("restarts", 0)),
            _e(worker.get("last_error") or ""),
        )
    return table


def _events(events: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="events", title_justify="left", box=None, header_style="bold")
    for name in ("EVENT", "TRIGGERS", "WORKERS", "STATE"):
        table.add_column(name)
    for name, event in sorted(events.items()):
        triggers = []
        for trigger in event.get("triggers") or []:
            methods = trigger.get("methods")
            triggers.append(f"{' '.join(methods) + ' ' if methods else ''}{trigger.get('path')}")
        if event.get("schedule"):
            triggers.append("schedule")
        if event.get("changes"):
            triggers.append(f"changes of {event['changes']}")
        if event.get("error"):
            state = f"[bold red]invalid: {_e(event['error'])}[/]"
        else:
            state = "[dim]disabled[/]" if event.get("disabled") else "[green]ok[/]"
        table.add_row(
            _e(name),
            _e(", ".join(triggers) or "-"),
            _e(", ".join(event.get("workers") or [])),
            state,
        )
    return table


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    where = target(args)
    _code, status = request(where, "GET", "_status")
    if args.json:
        from .output import print_json

        print_json(status)
        return 0
    from .output import console

    out = console()
    out.print(_service(status, where.url))
    if status.get("workers"):
        out.print()
        out.print(_workers(status["workers"]))
    if status.get("events"):
        out.print()
        out.print(_events(status["events"]))
    return 0
