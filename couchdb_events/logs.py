"""Logging set-up: to the handler a host gives (CouchDB's log, through the os_daemon channel), or
to stderr.

Nothing is ever printed to the daemon's stdout: in daemon mode that is CouchDB's protocol channel.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "couchdb_events"
_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def setup(level: str, handler: logging.Handler | None = None) -> logging.Logger:
    """Configure the package logger once: ``handler`` (CouchDB's log through the os_daemon
    channel, ``hosts.osdaemon.ChannelHandler``), or stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level.upper())
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    # aiohttp's access log is noise at this rate; its errors still reach us via our middleware.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logger


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
