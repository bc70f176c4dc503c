"""``couchdb-events fire EVENT``: fire an event over HTTP, as any caller would, and show its runs
(with ``--wait``, their answers)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from .client import TIMEOUT, CliError, guarded, request, target


def body(data: str | None) -> bytes | None:
    """The request body of ``--data``: JSON text, or ``@FILE`` (``@-``: stdin), checked."""
    if data is None:
        return None
    origin = "--data"
    if data.startswith("@"):
        name = data[1:]
        origin = f"--data @{name}"
        try:
            if name == "-":
                data = sys.stdin.read()
            else:
                with open(name, encoding="utf-8") as handle:
                    data = handle.read()
        except OSError as exc:
            raise CliError(f"cannot read {origin}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise CliError(f"{origin} is not UTF-8 text") from None
    try:
        json.loads(data)
    except ValueError as exc:
        raise CliError(f"{origin} is not JSON: {exc}") from None
    return data.encode("utf-8")


def event_path(event: str) -> str:
    """``/send_email`` or ``send_email`` → ``send_email``, quoted for a URL."""
    path = event.strip().lstrip("/")
    if not path or path.startswith("_"):
        raise CliError(f"{event!r} is not an event's path (a path below the service's root)")
    return urllib.parse.quote(path, safe="/:@!$&'()*+,;=-._~")


def _query(args: argparse.Namespace) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = list(args.query)
    for name in ("wait", "delay"):
        value = getattr(args, name)
        if value is not None:
            query.append((name, f"{value:g}"))
    if args.at:
        query.append(("at", args.at))
    return query


def _show(answer: dict[str, Any], waited: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    from .output import compact, console, state

    out = console()
    runs = answer.get("runs") or []
    if not runs:
        out.print("fired; no worker runs for it", highlight=False)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "EVENT", "WORKER"):
        table.add_column(name, no_wrap=True)
    if waited:
        table.add_column("STATE", no_wrap=True)
        table.add_column("ERROR / ANSWER")
    for run in runs:
        cells: list[Any] = [Text(str(run.get(key, ""))) for key in ("id", "event", "worker")]
        if waited:
            error = run.get("error")
            said = compact(error if error else run.get("answer", ""))
            cells += [state(run.get("state", "running")), Text(said, "red" if error else "")]
        table.add_row(*cells)
    out.print(table)


@guarded
def cmd_fire(args: argparse.Namespace) -> int:
    payload = body(args.data)
    path = event_path(args.event)
    where = target(args)
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    timeout = TIMEOUT + (args.wait or 0)
    method = args.method.upper()
    _code, answer = request(where, method, path, _query(args), payload, headers, timeout)
    if not isinstance(answer, dict):
        raise CliError(f"{where.url}{path}: the answer is not a JSON object")
    runs = [run for run in answer.get("runs") or [] if isinstance(run, dict)]
    waited = args.wait is not None and all("state" in run for run in runs)
    if args.json:
        from .output import print_json

        print_json(answer)
    else:
        _show(answer, waited)
    if args.wait is not None and not waited:
        print(f"couchdb-events: no answer within {args.wait:g} s: still running", file=sys.stderr)
    bad = [run for run in runs if run.get("state", "succeeded") not in ("succeeded", "delivered")]
    if waited and bad:
        first = bad[0]
        said = f": {compact_error(first.get('error'))}" if first.get("error") else ""
        print(f"couchdb-events: run {first.get('id')} {first.get('state')}{said}", file=sys.stderr)
        return 1
    return 0


def compact_error(error: Any) -> str:
    if isinstance(error, dict):
        text = str(error.get("reason") or error.get("error") or json.dumps(error))
    else:
        text = str(error)
    return text.splitlines()[0][:200] if text else ""
