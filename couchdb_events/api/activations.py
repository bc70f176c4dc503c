"""``/_events/_activations``: reading activation records over HTTP.

::

    GET /_events/_activations/<id>     one record
    POST /_events/_activations/<id>/retry              a new attempt of a final run
    DELETE /_events/_activations/<id>, POST .../cancel  cancel an open run
    GET /_events/_activations?event=&worker=&state=&since=&until=&limit=&skip=
                                       records, newest first (since/until: ISO 8601 times)
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import HTTPError, NotFound, StoreError
from ..model.request import Request
from ..runs.activations import Activations
from ..runs.controls import Controls
from ..runs.records import STATES
from .answer import Answer

MAX_LIMIT = 1000


def _number(query: dict[str, str], key: str, default: int, most: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) > most:
        raise HTTPError(400, "bad_request", f"{key} must be a whole number up to {most}")
    return int(text)


def selector(query: dict[str, str]) -> dict[str, Any]:
    """The Mango selector for a listing's filters; raises 400 for a bad filter."""
    where: dict[str, Any] = {"type": "activation"}
    for key in ("event", "worker"):
        if query.get(key):
            where[key] = query[key]
    state = query.get("state")
    if state:
        if state not in STATES:
            raise HTTPError(400, "bad_request", f"state must be one of {', '.join(STATES)}")
        where["state"] = state
    return where


async def activations_answer(activations: Activations | None, request: Request) -> Answer:
    if activations is None:
        raise HTTPError(404, "not_found", "activations are not recorded here (durable = false)")
    loop = asyncio.get_running_loop()
    rest = request.path[len("/_activations") :].strip("/")
    try:
        if rest:
            doc = await loop.run_in_executor(None, activations.get, rest)
            return Answer(200, doc)
        query = request.query
        where = selector(query)
        limit = _number(query, "limit", 50, MAX_LIMIT)
        skip = _number(query, "skip", 0, 100_000)
        docs = await loop.run_in_executor(
            None, activations.query, where, query.get("since"), query.get("until"), limit, skip
        )
    except NotFound:
        raise HTTPError(404, "not_found", f"no activation {rest!r}") from None
    except StoreError as exc:
        raise HTTPError(503, "unavailable", f"cannot read activations: {exc}") from None
    return Answer(200, {"activations": docs, "limit": limit, "skip": skip, "count": len(docs)})


def control_of(request: Request) -> tuple[str, str] | None:
    """(action, run id) of a run control request, or None for a reading one; 405 for a
    method the path does not take."""
    parts = request.path[len("/_activations") :].strip("/").split("/")
    if len(parts) == 1 and parts[0] and request.method == "DELETE":
        return "cancel", parts[0]
    if len(parts) != 2 or not parts[0]:
        return None
    if parts[1] not in ("retry", "cancel"):
        raise HTTPError(404, "not_found", f"{request.path} is not an endpoint of couchdb-events")
    if request.method != "POST":
        raise HTTPError(405, "method_not_allowed", f"{request.path} takes POST", {"Allow": "POST"})
    return parts[1], parts[0]


async def control_answer(
    controls: Controls | None, activations: Activations | None, action: str, run_id: str
) -> Answer:
    if controls is None or activations is None:
        raise HTTPError(404, "not_found", "activations are not recorded here (durable = false)")
    try:
        if action == "retry":
            return Answer(202, await controls.retry(run_id))
        status, body = await controls.cancel(run_id)
        return Answer(status, body)
    except NotFound:
        raise HTTPError(404, "not_found", f"no activation {run_id!r}") from None
    except StoreError as exc:
        raise HTTPError(503, "unavailable", f"cannot read activations: {exc}") from None
