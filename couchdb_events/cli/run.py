"""``couchdb-events run ID``: one activation record, readable: its state, times, request,
arguments, answer, error, attempts and chain; ``--logs``: the tails of its stdout and stderr."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .client import CliError, guarded, request, target


def _json(value: Any) -> Any:
    from rich.text import Text

    if isinstance(value, (dict, list)) and value:
        return Text(json.dumps(value, ensure_ascii=False, indent=2))
    return Text(json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value)


def _request_line(req: Mapping[str, Any]) -> str:
    query = req.get("query") or {}
    line = f"{req.get('method', '?')} {req.get('path', '?')}"
    if isinstance(query, dict) and query:
        line += "?" + urllib.parse.urlencode(query)
    who = [f"by {req['user']}" if req.get("user") else "anonymous"]
    if req.get("peer"):
        who.append(f"from {req['peer']}")
    return f"{line}  ({', '.join(who)})"


def _times(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    from .output import duration, span, when

    accepted, started, ended = (record.get(k) for k in ("accepted", "started", "ended"))
    rows = [("runs at", when(record["run_at"]) + " UTC")] if record.get("run_at") else []
    return [
        *rows,
        ("accepted", when(accepted) + (" UTC" if accepted else "")),
        ("started", f"{when(started)}  (waited {duration(span(accepted, started))})"),
        ("ended", f"{when(ended)}  (ran {duration(span(started, ended))})"),
    ]


def _state(record: Mapping[str, Any]) -> Any:
    """``failed  attempt 2, a retry of X; retried as Y``."""
    from .output import state

    line = state(record.get("state"))
    if record.get("attempt") is not None:
        line.append(f"  attempt {record['attempt']}")
    if record.get("retry_of"):
        line.append(f", a retry of {record['retry_of']}")
    if record.get("retried_as"):
        line.append(f"; retried as {record['retried_as']}")
    return line


def view(record: Mapping[str, Any]) -> Any:
    """The record as a two-column grid."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()

    def row(name: str, value: Any) -> None:
        grid.add_row(name, value if not isinstance(value, str) else Text(value))

    row("id", str(record.get("_id", "?")))
    rev = f" (rev {record['worker_rev']})" if record.get("worker_rev") else ""
    row("event", f"{record.get('event', '?')} → worker {record.get('worker', '?')}{rev}")
    row("state", _state(record))
    for name, value in _times(record):
        row(name, value)
    if isinstance(record.get("request"), dict):
        row("request", _request_line(record["request"]))
        if record["request"].get("body") not in (None, ""):
            row("body", _json(record["request"]["body"]))
    row("arguments", _json(record.get("arguments")))
    if record.get("answer") is not None:
        row("answer", _json(record["answer"]))
    if record.get("error"):
        grid.add_row("error", Text(str(record["error"]), style="red"))
    chain = record.get("chain") or {}
    if isinstance(chain, dict) and (chain.get("depth") or chain.get("parent")):
        parent = f", fired by run {chain['parent']}" if chain.get("parent") else ""
        row("chain", f"depth {chain.get('depth', 0)}{parent}")
    for emitted in record.get("emitted") or []:
        if isinstance(emitted, dict):
            said = emitted.get("error") or ", ".join(map(str, emitted.get("runs") or []))
            row("emitted", f"{emitted.get('event')} → {said}")
    if record.get("idempotency_key"):
        row("idempotency key", str(record["idempotency_key"]))
    if record.get("last_error"):
        grid.add_row("last error", Text(str(record["last_error"]), style="red"))
    return grid


def logs(record: Mapping[str, Any]) -> list[Any]:
    from rich.panel import Panel
    from rich.text import Text

    out = []
    for name in ("stdout", "stderr"):
        lines = [str(line) for line in record.get(name) or []]
        text = Text("\n".join(lines)) if lines else Text("(nothing)", style="dim")
        title = f"{name} (last {len(lines)} lines)" if lines else name
        out.append(Panel(text, title=title, title_align="left", expand=True))
    return out


@guarded
def cmd_run(args: argparse.Namespace) -> int:
    where = target(args)
    _code, record = request(where, "GET", f"_activations/{urllib.parse.quote(args.id, safe='')}")
    if not isinstance(record, dict):
        raise CliError(f"{where.url}_activations/{args.id}: the answer is not a record")
    if args.json:
        from .output import print_json

        print_json(record)
        return 0
    from .output import console

    out = console()
    out.print(view(record))
    if args.logs:
        for panel in logs(record):
            out.print(panel)
    else:
        counts = [f"{len(record.get(n) or [])} {n} lines" for n in ("stdout", "stderr")]
        out.print(f"{', '.join(counts)}: --logs shows them", style="dim", markup=False)
    return 0
