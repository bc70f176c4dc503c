"""What the commands share: settings from an ini file, the command line and the environment;
CouchDB's address from the os_daemon channel; running the service until it is told to stop."""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil

from .. import logs
from ..config import INTERPRETERS_SECTION, SECTION, SETTINGS, Config
from ..core.service import Service
from ..errors import ConfigError, EventsError
from ..hosts.http import HttpListener
from ..hosts.osdaemon import DaemonChannel

log = logs.get("cli")


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
    config = Config.from_settings(settings, interpreters, overrides)
    # Hidden from sandboxed workers: the file named, and CouchDB's own when CouchDB started us.
    named = (Path(args.config).resolve(),) if getattr(args, "config", None) else ()
    return dataclasses.replace(config, config_files=(*named, *couch_ini_files()))


def couch_ini_files() -> tuple[Path, ...]:
    """CouchDB's ini files (hidden from sandboxed workers): CouchDB names them after
    ``-couch_ini`` on the command line of its VM, one of the daemon's ancestors (the daemon is
    started through a shell, and by ``erl_child_setup`` on newer Erlang); CouchDB 2.x reads
    them from the ``etc`` folder of the release the VM's ``-root`` names."""
    with contextlib.suppress(psutil.Error):
        for ancestor in psutil.Process().parents()[:4]:
            argv = ancestor.cmdline()
            if "-couch_ini" in argv:
                files = argv[argv.index("-couch_ini") + 1 :]
                return tuple(Path(a) for a in _until_flag(files) if os.path.isabs(a))
            if "-root" in argv:  # CouchDB 2.x: its release's etc/ holds the ini files
                etc = Path(argv[argv.index("-root") + 1]) / "etc"
                found = (etc / "default.ini", etc / "local.ini")
                return tuple(path for path in found if path.is_file())
    return ()


def _until_flag(words: list[str]) -> list[str]:
    taken: list[str] = []
    for word in words:
        if word.startswith("-"):
            break
        taken.append(word)
    return taken


def couchdb_url_from(channel: DaemonChannel) -> str:
    """CouchDB's own address, asked over the os_daemon channel (chttpd in 2.x, httpd in 1.x)."""
    port = channel.get("chttpd", "port") or channel.get("httpd", "port") or "5984"
    bind = channel.get("chttpd", "bind_address") or channel.get("httpd", "bind_address")
    if not bind or bind in ("0.0.0.0", "::", "any"):
        bind = "127.0.0.1"
    host = f"[{bind}]" if ":" in bind else bind
    return f"http://{host}:{port}/"


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
        service = Service(config, host, listen=HttpListener if listen else None)
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
