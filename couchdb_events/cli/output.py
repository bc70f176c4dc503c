"""How the commands for runs print: the API's JSON as it is (``--json``), or tables and views made
with ``rich`` for people, coloured only on a terminal and never with ``NO_COLOR`` set.

Imported only by those commands (rich takes a while to import; ``--help`` must not wait for it).
"""

from __future__ import annotations

import calendar
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "scheduled": "cyan",
    "accepted": "blue",
    "running": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "timeout": "red",
    "lost": "magenta",
    "rejected": "red",
    "cancelled": "dim",
    "cancelling": "dim",
}
FINAL = frozenset({"succeeded", "failed", "timeout", "lost", "rejected", "cancelled"})


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr): colours on a terminal only, none with ``NO_COLOR``; off
    a terminal, lines as wide as ``$COLUMNS`` or 160 characters, so that tables are not cramped."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else 160
    return Console(
        file=stream,
        highlight=False,
        width=width,
        no_color=bool(os.environ.get("NO_COLOR")),
        color_system="auto" if terminal else None,
        emoji=False,
    )


def print_json(value: Any, lines: bool = False) -> None:
    """The API's JSON: indented, or one line per value (``lines``, for a stream of records)."""
    if lines:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def compact(value: Any, limit: int = 0) -> str:
    """``value`` as one line of JSON (a plain string as it is), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if limit and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def seconds(iso: Any) -> float | None:
    """The time of a record's ``2026-11-28T23:59:59.123Z``, or None."""
    if not isinstance(iso, str) or len(iso) < 19:
        return None
    try:
        whole = calendar.timegm(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    fraction = iso[19:].rstrip("Z")
    if fraction.startswith(".") and fraction[1:].isdigit():
        return whole + float(fraction)
    return float(whole)


def span(start: Any, end: Any) -> float | None:
    first, last = seconds(start), seconds(end)
    return None if first is None or last is None else max(0.0, last - first)


def duration(value: float | None) -> str:
    """``350 ms``, ``1.25 s``, ``2m 03s``, ``1h 05m``; ``-`` for none."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours < 48 else f"{hours // 24}d {hours % 24:02d}h"


def when(iso: Any) -> str:
    """``2026-11-28 23:59:59`` (UTC, as recorded); ``-`` for none."""
    if not isinstance(iso, str) or not iso:
        return "-"
    return iso[:19].replace("T", " ")


def state(name: Any) -> Text:
    text = str(name) if name is not None else "-"
    return Text(text, style=STATE_STYLES.get(text, ""))


def outcome(record: Mapping[str, Any], limit: int = 60) -> str:
    """A short word on how a run ended: its error, else its answer."""
    error = record.get("error")
    if error:
        return compact(error, limit)
    answer = record.get("answer")
    return "" if answer is None else compact(answer, limit)


def runs_table(records: Iterable[Mapping[str, Any]], width: int = 160) -> Table:
    """The runs, one a row, fitted to ``width``: the last column (error or answer) is cut to
    what the others leave."""
    records = list(records)
    heads = ("ID", "EVENT", "WORKER", "STATE", "TRY", "ACCEPTED (UTC)", "WAITED", "RAN")
    rows = [
        [
            str(record.get("_id", record.get("id", "?"))),
            str(record.get("event", "")),
            str(record.get("worker", "")),
            str(record.get("state", "-")),
            str(record.get("attempt", "")),
            when(record.get("accepted")),
            duration(span(record.get("accepted"), record.get("started"))),
            duration(span(record.get("started"), record.get("ended"))),
        ]
        for record in records
    ]
    used = sum(max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(heads))
    room = max(10, width - used - 1)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for head in heads:
        right = head in ("TRY", "WAITED", "RAN")
        # An id is what one copies from the table: never cut (the others give way).
        least = max(len(r[0]) for r in rows) if head == "ID" and rows else None
        table.add_column(head, no_wrap=True, justify="right" if right else "left", min_width=least)
    table.add_column("ERROR / ANSWER", no_wrap=True, overflow="ellipsis")
    for record, row in zip(records, rows, strict=True):
        said = Text(outcome(record, room), style="red" if record.get("error") else "")
        table.add_row(*map(Text, row[:3]), state(row[3]), *row[4:], said)
    return table


def run_line(record: Mapping[str, Any]) -> Text:
    """One run as one line, for ``runs --follow``."""
    line = Text()
    line.append(when(record.get("accepted")) + "  ", style="dim")
    line.append(str(record.get("_id", "?")) + "  ")
    line.append(f"{record.get('event', '')} → {record.get('worker', '')}  ")
    line.append_text(state(record.get("state")))
    if record.get("state") in FINAL:
        line.append("  " + duration(span(record.get("started"), record.get("ended"))))
        said = outcome(record, 80)
        if said:
            line.append("  " + said, style="red" if record.get("error") else "")
    return line
