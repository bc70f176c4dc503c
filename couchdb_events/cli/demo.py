"""``couchdb-events demo``: the seed's e-mail example, end to end, on one machine.

1. uses the CouchDB in the configuration, or starts an embedded PouchDB Server (data kept in
   ``.couchdb-events/`` of the current folder) when none is configured;
2. runs ``couchdb-events serve`` against it;
3. pushes the seed's documents: the ``email_event`` event and the ``send_email`` worker, a Node
   script that writes the mail it would send into an outbox folder;
4. fires ``GET /_events/email_event`` and shows the answer, the mail and ``/_events/_status``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import Config
from ..couch.embedded import EmbeddedCouch, free_port
from ..errors import EventsError
from .common import config_from_args
from .push import push_path

DEMO = Path(__file__).resolve().parents[1] / "demo"


def say(text: str = "") -> None:
    print(text, flush=True)


def _get(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - our own URL
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _serve(config: Config, log_path: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "couchdb_events", "serve",
        "--couchdb-url", config.couchdb_url,
        "--bind-address", config.bind_address,
        "--port", str(config.port),
        "--events-db", config.events_db,
        "--workers-db", config.workers_db,
        "--work-dir", str(config.work_dir),
        "--log-level", "info",
    ]  # fmt: skip
    log = log_path.open("ab")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()


def _wait_serving(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EventsError(f"the service exited at start; see {log_path}")
        with contextlib.suppress(OSError):
            if _get(url + "_status", timeout=2)[0] == 200:
                return
        time.sleep(0.1)
    raise EventsError(f"the service did not answer on {url} within 30 s; see {log_path}")


def _wait_for(check: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise EventsError(failure)
        time.sleep(0.05)


def _stop(service: subprocess.Popen[bytes]) -> None:
    if service.poll() is not None:
        return
    service.send_signal(signal.SIGTERM)
    try:
        service.wait(timeout=10)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()


def _show_example(config: Config, url: str, log_path: Path) -> None:
    say("==> pushing the seed's documents")
    pushed = [push_path(config, DEMO / "email_event.json"), push_path(config, DEMO / "send_email")]
    for line in pushed:
        say("    " + line)
    event_rev, worker_rev = (re.search(r"rev ([^,)]+)", line).group(1) for line in pushed)  # type: ignore[union-attr]

    def loaded() -> bool:
        status = _get(url + "_status")[1]
        event = status["events"].get("email_event") or {}
        worker = status["workers"].get("send_email") or {}
        return bool(event.get("rev") == event_rev and worker.get("rev") == worker_rev)

    _wait_for(loaded, 10, "the service did not pick up the pushed documents within 10 s")

    say(f"==> GET {url}email_event")
    status, answer = _get(url + "email_event")
    say(f"    {status} {json.dumps(answer)}")
    if status != 202:
        raise EventsError("firing the event failed")
    run_id = answer["runs"][0]["id"]
    mail = config.work_dir / "data" / "send_email" / "outbox" / f"{run_id}.eml"
    _wait_for(mail.exists, 20, f"the worker wrote no mail to {mail} within 20 s; see {log_path}")
    say(f"==> the send_email worker (node) wrote {mail}:")
    for line in mail.read_text().splitlines():
        say(f"    | {line}")

    say(f"==> GET {url}_status")
    _status, body = _get(url + "_status")
    shown = {"couchdb_events": body["couchdb_events"], "workers": body["workers"]}
    say("    " + json.dumps(shown, indent=2).replace("\n", "\n    "))


def run_demo(args: argparse.Namespace) -> int:
    home = Path.cwd() / ".couchdb-events"
    home.mkdir(exist_ok=True)
    log_path = home / "demo.log"
    with contextlib.ExitStack() as cleanup:
        try:
            config = config_from_args(args)
            if args.work_dir is None:
                config = replace(config, work_dir=home / "work")
            configured = args.couchdb_url or args.config
            if not (configured or os.environ.get("COUCHDB_EVENTS_COUCHDB_URL")):
                say("==> no CouchDB configured: starting an embedded PouchDB Server")
                couch = EmbeddedCouch(data_dir=home / "pouchdb", log_path=home / "pouchdb.log")
                cleanup.callback(couch.stop)
                config = replace(config, couchdb_url=couch.start().url)
                say(f"    {couch.url} (data in {home / 'pouchdb'})")
            if args.port is None and not _port_free(config.bind_address, config.port):
                config = replace(config, port=free_port(config.bind_address))
            url = f"http://{config.bind_address}:{config.port}/_events/"

            say(f"==> starting couchdb-events on {url} (log: {log_path})")
            service = _serve(config, log_path)
            cleanup.callback(_stop, service)
            _wait_serving(url, service, log_path)
            _show_example(config, url, log_path)
        except EventsError as exc:
            say(f"couchdb-events demo: {exc}")
            return 1
        if args.keep_running:
            say(f"\n==> running; try: curl {url}email_event   (Ctrl-C stops)")
            say(f"==> watch it: {url}_dashboard/ in a browser,")
            say(f"==>   or .venv/bin/couchdb-events runs --follow --url {url}")
            with contextlib.suppress(KeyboardInterrupt):
                service.wait()
        else:
            say("\n==> done. `couchdb-events demo --keep-running` keeps it up to try it yourself.")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args)
