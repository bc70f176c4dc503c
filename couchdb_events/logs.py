"""Logging set-up: to CouchDB's log through the os_daemon channel, or to stderr.

Nothing is ever printed to the daemon's stdout: in daemon mode that is CouchDB's protocol channel.
"""

from __future__ import annotations

import logging
import sys

from .osdaemon import DaemonChannel

LOGGER_NAME = "couchdb_events"
_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


class ChannelHandler(logging.Handler):
    """Sends log records to CouchDB as ``["log", message, {"level": ...}]``."""

    def __init__(self, channel: DaemonChannel) -> None:
        super().__init__()
        self.channel = channel
        self.setFormatter(logging.Formatter("couchdb-events: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            level = record.levelname.lower()
            self.channel.log(message, level)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup(level: str, channel: DaemonChannel | None = None) -> logging.Logger:
    """Configure the package logger once: channel when hosted by CouchDB, stderr otherwise."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(level.upper())
    handler: logging.Handler
    if channel is not None:
        handler = ChannelHandler(channel)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    # aiohttp's access log is noise at this rate; its errors still reach us via our middleware.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logger


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}")
