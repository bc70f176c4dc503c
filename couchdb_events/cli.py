"""The ``couchdb-events`` command.

::

    couchdb-events daemon                     hosted by CouchDB as an [os_daemons] entry
    couchdb-events serve [--config FILE]      standalone (behind a reverse proxy, or to try out)
    couchdb-events external [--config FILE]   hosted by CouchDB 0.11 - 1.7 as an [external]
                                              (/<db>/_events/; not 2.x, see README)
    couchdb-events push PATH [...]            deploy an event (JSON file) or a worker (folder)
    couchdb-events demo                       the seed's e-mail example, end to end
    couchdb-events setup [--config FILE]      create the databases, writable by server admins only
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from . import __version__, external, logs
from .config import INTERPRETERS_SECTION, SECTION, SETTINGS, Config
from .errors import ConfigError, EventsError
from .osdaemon import ChannelClosed, DaemonChannel
from .service import Service

log = logs.get("cli")

# CouchDB gives an external no configuration channel: the file is named on its command line,
# or else by this environment variable.
CONFIG_ENV = "COUCHDB_EVENTS_CONFIG"


# -- configuration sources -----------------------------------------------------------------
def read_ini(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The ``[couchdb_events]`` and interpreter sections of an ini file.

    CouchDB's own local.ini works: other sections are ignored.
    """
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, comment_prefixes=(";", "#")
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    section = dict(parser[SECTION]) if parser.has_section(SECTION) else {}
    interpreters = (
        dict(parser[INTERPRETERS_SECTION]) if parser.has_section(INTERPRETERS_SECTION) else {}
    )
    return section, interpreters


def config_from_args(args: argparse.Namespace) -> Config:
    settings: dict[str, str] = {}
    interpreters: dict[str, str] = {}
    if getattr(args, "config", None):
        settings, interpreters = read_ini(Path(args.config))
    env_url = os.environ.get("COUCHDB_EVENTS_COUCHDB_URL")
    if env_url and "couchdb_url" not in settings:
        settings["couchdb_url"] = env_url
    overrides = {key: getattr(args, key, None) for key in SETTINGS}
    return Config.from_settings(settings, interpreters, overrides)


def couchdb_url_from(channel: DaemonChannel) -> str:
    """CouchDB's own address, asked over the os_daemon channel (chttpd in 2.x, httpd in 1.x)."""
    port = channel.get("chttpd", "port") or channel.get("httpd", "port") or "5984"
    bind = channel.get("chttpd", "bind_address") or channel.get("httpd", "bind_address")
    if not bind or bind in ("0.0.0.0", "::", "any"):
        bind = "127.0.0.1"
    host = f"[{bind}]" if ":" in bind else bind
    return f"http://{host}:{port}/"


# -- running ---------------------------------------------------------------------------------
# Runs next to the service from the start: alongside(service, started), where ``started`` is
# set once the service is up. Its end means "stop".
Alongside = Callable[[Service, asyncio.Event], Coroutine[Any, Any, None]]


async def _ended_well(task: asyncio.Task[None]) -> bool:
    """Cancel ``task`` unless it has ended; False when it failed."""
    task.cancel()  # a no-op when it has ended (and so asked for the stop)
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        log.exception("couchdb-events failed")
        return False
    return True


def run_service(
    config: Config,
    host: str,
    wait_for_eof: Callable[[], None] | None = None,
    alongside: Alongside | None = None,
    listen: bool = True,
) -> int:
    """Run until SIGTERM/SIGINT (or stdin EOF when hosted by CouchDB, or the end of
    ``alongside``); the exit status. ``listen``: serve HTTP (not for the external host)."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)  # the handler only records; the loop acts
        if wait_for_eof is not None:

            def watch() -> None:
                wait_for_eof()
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stop.set)

            threading.Thread(target=watch, name="stdin-eof", daemon=True).start()
        service = Service(config, host, listen=listen)
        started = asyncio.Event()
        side: asyncio.Task[None] | None = None
        if alongside is not None:
            side = asyncio.create_task(alongside(service, started))
            side.add_done_callback(lambda _task: stop.set())
        starting = asyncio.create_task(service.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if starting.done():
            error = starting.exception()
            if error is not None:
                code = 1
                message = str(error) if isinstance(error, EventsError) else repr(error)
                log.error("couchdb-events cannot start: %s", message)
                stop.set()
            else:
                started.set()
            await stopping
        else:
            log.info("asked to stop while starting")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        await service.stop()
        if side is not None and not await _ended_well(side):
            code = code or 1
        return code

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        # Blocking CouchDB calls may still sit in executor threads (bounded by their socket
        # timeout); they must not hold up the exit. The caller ends the process with os._exit.
        with contextlib.suppress(Exception):
            loop.close()


def cmd_daemon(args: argparse.Namespace) -> int:
    # stdout is CouchDB's protocol channel: keep it to ourselves and point fd 1 at stderr so that
    # nothing else (a stray print, a library) can ever write to it.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = DaemonChannel(sys.stdin.buffer, protocol_out)
    try:
        settings: dict[str, Any] = channel.get(SECTION)
        interpreters: dict[str, Any] = channel.get(INTERPRETERS_SECTION)
        if not settings.get("couchdb_url"):
            settings = {**settings, "couchdb_url": couchdb_url_from(channel)}
        channel.register(SECTION)
        channel.register(INTERPRETERS_SECTION)
    except ChannelClosed as exc:
        print(f"couchdb-events: {exc}", file=sys.stderr)
        return 1
    try:
        config = Config.from_settings(settings, interpreters)
    except ConfigError as exc:
        channel.log(f"couchdb-events cannot start: {exc}", "error")
        return 1
    logs.setup(config.log_level, channel)
    return run_service(config, "os_daemon", channel.wait_for_eof)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"couchdb-events: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    return run_service(config, "standalone")


def cmd_external(args: argparse.Namespace) -> int:
    # As for the daemon: stdout is CouchDB's protocol channel, one answer line per request line.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if not args.config:
        args.config = os.environ.get(CONFIG_ENV) or None
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"couchdb-events: {exc}", file=sys.stderr)
        return 1
    logs.setup(config.log_level)  # to stderr, which CouchDB leaves to its own stderr

    async def answer_couchdb(service: Service, started: asyncio.Event) -> None:
        await external.serve_lines(
            service.router,
            external.read_in_thread(sys.stdin.buffer),
            external.line_writer(protocol_out),
            ready=started,
            max_body=config.max_body,
        )
        log.info("CouchDB closed stdin")

    return run_service(config, "external", alongside=answer_couchdb, listen=False)


def cmd_push(args: argparse.Namespace) -> int:
    from .push import push_path

    logs.setup("warning")
    try:
        config = config_from_args(args)
        for path in args.paths:
            print(push_path(config, Path(path)))
    except EventsError as exc:
        print(f"couchdb-events push: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from .security import setup

    logs.setup("warning")
    try:
        config = config_from_args(args)
        setup(config, args.reader_roles, report=lambda line: print(line, flush=True))
    except ConfigError as exc:
        print(f"couchdb-events setup: {exc}", file=sys.stderr)
        return 2
    except EventsError as exc:
        print(f"couchdb-events setup: error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


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
    return top


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "daemon": cmd_daemon,
    "serve": cmd_serve,
    "external": cmd_external,
    "push": cmd_push,
    "demo": cmd_demo,
    "setup": cmd_setup,
}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    code = COMMANDS[args.command](args)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    if args.command in ("daemon", "serve", "external"):
        os._exit(code)  # do not wait for executor threads blocked on CouchDB (see run_service)
    sys.exit(code)
