"""What one row of a database's ``_changes`` means to a changes trigger (pure): the body a
worker gets for it, the origin that names its fire (so that, with ``durable``, a change fired
again is refused), and the count its sequence starts with (for estimating lag)."""

from __future__ import annotations

from typing import Any


def seq_number(seq: Any) -> int | None:
    """The count a sequence starts with (``5``, ``"5-g1AAA..."``), for estimating lag only."""
    if isinstance(seq, int) and not isinstance(seq, bool):
        return seq
    if isinstance(seq, str):
        head = seq.split("-", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def change_origin(event_id: str, db: str, change: dict[str, Any]) -> str | None:
    """What names one change's fire: the event, the database, the document and its revision
    (None when the change row names no revision)."""
    revs = change.get("changes")
    rev = (
        revs[0].get("rev")
        if isinstance(revs, list) and revs and isinstance(revs[0], dict)
        else None
    )
    doc_id = change.get("id")
    if not isinstance(rev, str) or not isinstance(doc_id, str):
        return None
    return "\0".join(("changes", event_id, db, doc_id, rev))


def change_body(db: str, change: dict[str, Any]) -> dict[str, Any]:
    """What a worker gets as the request body for one change."""
    return {**change, "db": db}
