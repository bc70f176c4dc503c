"""Putting event and worker documents into a real CouchDB-compatible server, for tests."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from tests.daemon_host import http


def put_doc(couch_url: str, db: str, doc: dict[str, Any]) -> str:
    """Create or replace ``doc``; its new rev."""
    url = f"{couch_url}{db}/{doc['_id']}"
    status, _h, current = http("GET", url)
    body = dict(doc)
    if status == 200:
        body["_rev"] = current["_rev"]
    status, _h, answer = http("PUT", url, body)
    assert status in (200, 201), answer
    return str(answer["rev"])


def delete_doc(couch_url: str, db: str, doc_id: str) -> None:
    url = f"{couch_url}{db}/{doc_id}"
    status, _h, current = http("GET", url)
    assert status == 200, current
    status, _h, answer = http("DELETE", f"{url}?rev={current['_rev']}")
    assert status == 200, answer


def put_worker(couch_url: str, db: str, name: str, files: dict[str, str], **fields: Any) -> str:
    """A worker document with its files as inline attachments, in one request."""
    attachments = {
        filename: {
            "content_type": "text/plain",
            "data": base64.b64encode(text.encode()).decode("ascii"),
        }
        for filename, text in files.items()
    }
    return put_doc(couch_url, db, {"_id": name, **fields, "_attachments": attachments})


# A reply worker (python) that notes each message in ran.jsonl in its data folder and answers.
RECORD_PY = """
import json, os, sys
out = os.path.join(os.environ["COUCHDB_EVENTS_DATA_DIR"], "ran.jsonl")
for line in sys.stdin:
    with open(out, "a") as handle:
        handle.write(line)
    print(json.dumps({"ok": True}), flush=True)
"""


def recorded(*work_dirs: Path, worker: str = "record") -> list[dict[str, Any]]:
    """The messages a RECORD_PY worker got, under each daemon work directory, in order."""
    out = []
    for work_dir in work_dirs:
        path = work_dir / "data" / worker / "ran.jsonl"
        if path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines()]
    return out
