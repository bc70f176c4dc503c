"""``couchdb-events cancel ID``: a scheduled or queued run is never started, a running one is
stopped; its state becomes ``cancelled`` (``POST /_activations/<id>/cancel``)."""

from __future__ import annotations

import argparse
import urllib.parse

from .client import guarded, request, target


@guarded
def cmd_cancel(args: argparse.Namespace) -> int:
    where = target(args)
    path = f"_activations/{urllib.parse.quote(args.id, safe='')}/cancel"
    _code, answer = request(where, "POST", path)
    if args.json:
        from .output import print_json

        print_json(answer)
        return 0
    from rich.text import Text

    from .output import console, state

    body = answer if isinstance(answer, dict) else {}
    line = Text(f"{body.get('id') or args.id}: ")
    line.append_text(state(body.get("state", "cancelled")))
    if body.get("was"):
        line.append(f" (was {body['was']})")
    if body.get("state") == "cancelling":
        line.append("; another daemon runs it and stops it soon")
    console().print(line)
    return 0
