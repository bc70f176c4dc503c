"""The options of the commands that talk to a running service over its HTTP API (status, fire,
runs, run, retry, cancel). Only argparse here: building ``--help`` imports no command."""

from __future__ import annotations

import argparse
import textwrap

from ..config import CONFIG_ENV

WHERE = f"""\
where the service is: --url, else $COUCHDB_EVENTS_URL, else the bind_address and port
of the config file (--config FILE, else the file ${CONFIG_ENV} names), else
http://127.0.0.1:5985/. The URL is the service's root as you reach it:
http://HOST:5984/_events/ through CouchDB or a proxy, http://127.0.0.1:PORT/ standalone.

who calls it (the first given wins): --user NAME with its password from
$COUCHDB_EVENTS_PASSWORD (else asked for on a terminal), then the URL's user:password@,
then the credentials in the config file's couchdb_url.

Exit status: 0 on success, 1 on a failure (one line on stderr), 2 for bad usage."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("service")
    group.add_argument("--url", metavar="URL", help="the service's root (see below)")
    group.add_argument("--user", metavar="NAME", help="log in as NAME (see below)")
    group.add_argument("--config", metavar="FILE", help="ini file with a [couchdb_events] section")
    group.add_argument(
        "--json", action="store_true", help="print the API's JSON as it is (for scripts)"
    )
    return common


def _query(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds are 0 or more")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = [_common()]
    raw = argparse.RawDescriptionHelpFormatter

    def add(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        text = f"{textwrap.fill(description, 88)}\n\n{WHERE}" if description else WHERE
        return sub.add_parser(
            name, help=help, description=text, parents=common, formatter_class=raw
        )

    add("status", "the running service: its workers, events, records, last error")

    fire = add(
        "fire",
        "fire an event over HTTP, optionally waiting for its answers",
        "With --wait, the exit status is 1 also when a run ended other than succeeded (or "
        "delivered, for a stream worker).",
    )
    fire.add_argument("event", metavar="EVENT", help="an event's path: /send_email or send_email")
    fire.add_argument(
        "--data",
        metavar="JSON",
        help="the request body: JSON text, or @FILE to read it from FILE (@- for stdin)",
    )
    fire.add_argument(
        "--query",
        action="append",
        default=[],
        type=_query,
        metavar="KEY=VALUE",
        help="a query parameter; repeatable",
    )
    fire.add_argument("--method", default="POST", metavar="M", help="HTTP method (default POST)")
    fire.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="wait up to SECONDS for the runs' answers (the service allows up to 300)",
    )
    fire.add_argument("--delay", type=_seconds, metavar="SECONDS", help="run it SECONDS from now")
    fire.add_argument("--at", metavar="TIME", help="run it at TIME (ISO 8601, with Z or offset)")
    fire.add_argument(
        "--idempotency-key",
        dest="idempotency_key",
        metavar="KEY",
        help="fire once per KEY: the same key within 24 hours answers the first fire again",
    )

    runs = add(
        "runs",
        "list the runs (activation records), newest first, or follow them",
        "TIME is an ISO 8601 time (2026-11-28T09:00:00Z; UTC unless it has an offset) or a "
        "time ago: 30s, 10m, 2h, 1d, 1w.",
    )
    runs.add_argument("--event", metavar="E", help="only runs of event E")
    runs.add_argument("--worker", metavar="W", help="only runs of worker W")
    runs.add_argument("--state", metavar="S", help="only runs in state S (failed, running...)")
    runs.add_argument("--since", metavar="TIME", help="only runs accepted since TIME")
    runs.add_argument(
        "--limit", type=_count, default=None, metavar="N", help="at most N runs (default 50)"
    )
    runs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then print new runs, and runs as they end, until Ctrl-C (--json: one per line)",
    )
    runs.add_argument(
        "--interval",
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="how often --follow asks (default 1)",
    )

    run = add("run", "one run: its state, times, request, arguments, answer, error, attempts")
    run.add_argument("id", metavar="ID", help="the run's id (from fire or runs)")
    run.add_argument("--logs", action="store_true", help="also its stdout and stderr tails")

    retry = add("retry", "run a failed, timed-out or cancelled run again, as a new attempt")
    retry.add_argument("id", metavar="ID")
    cancel = add("cancel", "cancel a scheduled, queued or running run")
    cancel.add_argument("id", metavar="ID")
