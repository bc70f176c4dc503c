"""``couchdb-events external``: hosted by CouchDB 0.11 - 1.7 as an ``[external]`` process,
one answer line on stdout per request line on stdin."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from .. import logs
from ..config import CONFIG_ENV
from ..core.service import Service
from ..errors import ConfigError
from ..hosts import external
from .common import config_from_args, log, run_service


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
