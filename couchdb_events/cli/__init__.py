"""The ``couchdb-events`` command.

::

    couchdb-events daemon                     hosted by CouchDB as an [os_daemons] entry
    couchdb-events serve [--config FILE]      standalone (behind a reverse proxy, or to try out)
    couchdb-events external [--config FILE]   hosted by CouchDB 0.11 - 1.7 as an [external]
                                              (/<db>/_events/; not 2.x, see README)
    couchdb-events push PATH [...]            deploy an event (JSON file) or a worker (folder)
    couchdb-events demo                       the seed's e-mail example, end to end
    couchdb-events setup [--config FILE]      create the databases, writable by server admins only

    couchdb-events status                     a running service, over its HTTP API
    couchdb-events fire EVENT [--wait S]      fire an event
    couchdb-events runs [--follow]            its runs (activation records), newest first
    couchdb-events run ID [--logs]            one run
    couchdb-events retry ID | cancel ID       run controls

One module per command; ``common`` holds what they share (settings, running the service); the
commands for runs share ``remote`` (their options), ``client`` (HTTP) and ``output`` (rich). A
command's module is imported when it runs, so that ``--help`` and ``--version`` import nothing
of the service (aiohttp, python-couchdb).

May import: every layer below (base to hosts).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..config import CONFIG_ENV
from .remote import add_commands


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="ini file with a [couchdb_events] section")
    group = parser.add_argument_group("settings (override the config file)")
    group.add_argument("--couchdb-url", dest="couchdb_url", metavar="URL")
    group.add_argument("--bind-address", dest="bind_address", metavar="ADDRESS")
    group.add_argument("--port", metavar="PORT")
    group.add_argument("--events-db", dest="events_db", metavar="NAME")
    group.add_argument("--workers-db", dest="workers_db", metavar="NAME")
    group.add_argument("--work-dir", dest="work_dir", metavar="DIR")
    group.add_argument("--log-level", dest="log_level", metavar="LEVEL")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="couchdb-events", description=__doc__.split("\n")[0])
    top.add_argument("--version", action="version", version=f"couchdb-events {__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("daemon", help="run as CouchDB's os_daemon (settings come from CouchDB)")
    serve = sub.add_parser("serve", help="run standalone")
    _add_settings(serve)
    ext = sub.add_parser(
        "external",
        help="run as CouchDB's [external] process behind /<db>/_events/ (CouchDB 0.11 - 1.7; "
        "2.x breaks externals: use the daemon there)",
        description=f"Settings come from --config FILE, else from the file ${CONFIG_ENV} names.",
    )
    _add_settings(ext)
    push = sub.add_parser("push", help="deploy an event (a .json file) or a worker (a folder)")
    push.add_argument("paths", nargs="+", metavar="PATH")
    _add_settings(push)
    demo = sub.add_parser("demo", help="run the e-mail example end to end")
    _add_settings(demo)
    demo.add_argument(
        "--keep-running", action="store_true", help="keep the service up after the example"
    )
    secure = sub.add_parser(
        "setup",
        help="create the events and workers databases and make them writable (and readable) "
        "by CouchDB server admins only",
        description="Needs a server admin's credentials in couchdb_url. Puts a validate_doc_update "
        "design document (_design/couchdb_events) and a _security object into both databases; "
        "running it again changes nothing that is in place.",
    )
    _add_settings(secure)
    secure.add_argument(
        "--reader-role",
        dest="reader_roles",
        action="append",
        default=[],
        metavar="ROLE",
        help="also let users with this role read (never write) the databases; repeatable",
    )
    add_commands(sub)
    return top


# module cli.<name>; the last six talk to a running service over its HTTP API
COMMANDS = (
    *("daemon", "serve", "external", "push", "demo", "setup"),
    *("status", "fire", "runs", "run", "retry", "cancel"),
)


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function of command ``name``: ``cmd_<name>`` of its module, imported now."""
    module = importlib.import_module(f"{__name__}.{name}")
    run: Callable[[argparse.Namespace], int] = getattr(module, f"cmd_{name}")
    return run


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    code = command(args.command)(args)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    if args.command in ("daemon", "serve", "external"):
        os._exit(code)  # do not wait for executor threads blocked on CouchDB (see run_service)
    sys.exit(code)
