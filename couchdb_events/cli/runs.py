"""``couchdb-events runs``: the activation records, newest first, filtered; with ``--follow``,
then every new run and every run that ends, as they happen (polling), until Ctrl-C."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .client import CliError, Target, Unreachable, guarded, request, target

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FOLLOW_LIMIT = 1000  # records per poll while following (the API's most)
FINAL = frozenset({"succeeded", "failed", "timeout", "lost", "rejected", "cancelled"})


def since_iso(text: str, now: float | None = None) -> str:
    """An ISO 8601 time (UTC unless it has an offset) or a time ago (``30s``, ``10m``, ``2h``,
    ``1d``, ``1w``), as the records' ``2026-11-28T23:59:59.123Z`` (they are compared as text)."""
    ago = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if ago:
        moment = (time.time() if now is None else now) - float(ago[1]) * UNITS[ago[2]]
        when = datetime.fromtimestamp(moment, timezone.utc)
    else:
        written = text.strip()
        if written[-1:] in ("Z", "z"):
            written = written[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(written)
        except ValueError:
            raise CliError(
                f"--since {text!r}: neither an ISO 8601 time (2026-11-28T09:00:00Z) "
                "nor a time ago (30s, 10m, 2h, 1d, 1w)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def filters(args: argparse.Namespace) -> dict[str, str]:
    query = {key: getattr(args, key) for key in ("event", "worker", "state")}
    out = {key: value for key, value in query.items() if value}
    if args.since:
        out["since"] = since_iso(args.since)
    return out


def listing(where: Target, query: dict[str, str]) -> list[dict[str, Any]]:
    _code, body = request(where, "GET", "_activations", query)
    return listing_of(body, where)


class Follower:
    """Prints each run once when it is first seen and again when its state changes."""

    def __init__(self, where: Target, query: dict[str, str], show: Callable[[Any], None]):
        self.where, self.query, self.show = where, query, show
        self.seen: dict[str, Any] = {}  # id -> state last shown, of the last answer's records
        self.newest = ""  # the newest ``accepted`` seen
        self.window = query.get("since", "")

    def take(self, records: list[dict[str, Any]]) -> None:
        seen: dict[str, Any] = {}
        opened: list[str] = []
        for record in reversed(records):  # oldest first, as a log reads
            key, state, accepted = record.get("_id"), record.get("state"), record.get("accepted")
            if not isinstance(key, str):
                continue
            if key not in self.seen or self.seen[key] != state:
                self.show(record)
            seen[key] = state
            if isinstance(accepted, str):
                self.newest = max(self.newest, accepted)
                if state not in FINAL:
                    opened.append(accepted)
        self.seen = seen
        # The next poll asks from the oldest run still open on (its end is news too), else from
        # the newest seen (asked again: times are not unique; the seen ids are skipped).
        if self.newest:
            self.window = min([self.newest, *opened])

    def poll(self, limit: int) -> None:
        query = dict(self.query)
        if self.window:
            query["since"] = self.window
            limit = FOLLOW_LIMIT
        query["limit"] = str(limit)
        self.take(listing(self.where, query))


def _follow(where: Target, query: dict[str, str], args: argparse.Namespace) -> int:
    if args.json:
        from .output import print_json

        def show(record: Any) -> None:
            print_json(record, lines=True)
    else:
        from .output import console, run_line

        out = console()

        def show(record: Any) -> None:
            out.print(run_line(record))

    follower = Follower(where, query, show)
    limit = args.limit or 10
    try:
        follower.poll(limit)
        away = False
        while True:
            time.sleep(args.interval)
            try:
                follower.poll(limit)
            except Unreachable as exc:
                if not away:
                    print(f"couchdb-events: {exc} (trying on)", file=sys.stderr, flush=True)
                away = True
                continue
            if away:
                print("couchdb-events: reached the service again", file=sys.stderr, flush=True)
                away = False
    except KeyboardInterrupt:
        return 0


@guarded
def cmd_runs(args: argparse.Namespace) -> int:
    query = filters(args)
    where = target(args)
    if args.follow:
        return _follow(where, query, args)
    if args.limit:
        query["limit"] = str(args.limit)
    _code, body = request(where, "GET", "_activations", query)
    if args.json:
        from .output import print_json

        print_json(body)
        return 0
    records = listing_of(body, where)
    from .output import console, runs_table

    out = console()
    if not records:
        out.print("no runs", style="dim")
        return 0
    out.print(runs_table(records, out.width))
    shown = len(records)
    if isinstance(body, dict) and shown >= int(body.get("limit") or 0) > 0:
        out.print(f"the newest {shown}; --limit N for more", style="dim")
    return 0


def listing_of(body: Any, where: Target) -> list[dict[str, Any]]:
    records = body.get("activations") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise CliError(f"{where.url}_activations: the answer has no list of activations")
    return [record for record in records if isinstance(record, dict)]
