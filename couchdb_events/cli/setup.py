"""``couchdb-events setup``: create the databases and make them writable (and readable) by
CouchDB server admins only."""

from __future__ import annotations

import argparse
import sys

from .. import logs
from ..couch.security import setup
from ..errors import ConfigError, EventsError
from .common import config_from_args


def cmd_setup(args: argparse.Namespace) -> int:
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
