"""``couchdb-events serve``: standalone, behind a reverse proxy (CouchDB 2.3 and later) or to
try out."""

from __future__ import annotations

import argparse
import sys

from .. import logs
from ..errors import ConfigError
from .common import config_from_args, run_service


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"couchdb-events: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_level)
    return run_service(config, "standalone")
