"""Putting event and worker documents into a real CouchDB-compatible server, for tests."""

from __future__ import annotations

import base64
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
