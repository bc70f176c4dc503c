"""``couchdb-events daemon``: hosted by CouchDB 1.1 - 2.2 as an ``[os_daemons]`` entry; the
settings come over the os_daemon channel, logs go back through it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

from .. import logs
from ..config import INTERPRETERS_SECTION, SECTION, Config
from ..errors import ConfigError
from ..hosts.osdaemon import ChannelClosed, ChannelHandler, DaemonChannel
from .common import couch_ini_files, couchdb_url_from, run_service


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
    config = dataclasses.replace(config, config_files=couch_ini_files())
    logs.setup(config.log_level, ChannelHandler(channel))
    return run_service(config, "os_daemon", channel.wait_for_eof)
