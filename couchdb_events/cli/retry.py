"""``couchdb-events retry ID``: a new attempt of a failed, timed-out or cancelled run, with the
same arguments and request (``POST /_activations/<id>/retry``)."""

from __future__ import annotations

import argparse
import urllib.parse

from .client import guarded, request, target


@guarded
def cmd_retry(args: argparse.Namespace) -> int:
    where = target(args)
    path = f"_activations/{urllib.parse.quote(args.id, safe='')}/retry"
    _code, answer = request(where, "POST", path)
    if args.json:
        from .output import print_json

        print_json(answer)
        return 0
    from rich.text import Text

    from .output import console

    out = console()
    runs = answer.get("runs") if isinstance(answer, dict) else None
    for run in runs or []:
        line = Text(f"retried {args.id} as ")
        line.append(str(run.get("id")), style="bold")
        line.append(f" (event {run.get('event')}, worker {run.get('worker')})")
        out.print(line)
    if not runs:
        out.print(Text(f"retried {args.id}: no new run"))
    return 0
