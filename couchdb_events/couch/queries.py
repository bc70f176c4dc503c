"""The store's queries: Mango's ``_find`` and the indexes it reads (``_index``), and views. A
mixin of ``store.Store``, through whose requests it goes; it imports no ``couchdb``.

On a server without Mango (CouchDB 1.x), ``find`` and ``index`` raise ``Unsupported``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import NotFound, StoreError, Unauthorized, Unreachable, Unsupported
from . import failures

T = TypeVar("T")
INDEX_ATTEMPTS = 4


class Queries:
    """``find``, ``index`` and ``view``, for ``Store``."""

    if TYPE_CHECKING:  # what Store provides

        def _call(self, what: str, fn: Callable[[], T]) -> T: ...
        def _db(self, db: str) -> Any: ...
        def _post_json(self, db: str, path: str, body: Any, **params: str) -> Any: ...

    def find(
        self, db: str, selector: Mapping[str, Any], *, limit: int = 100, skip: int = 0,
        sort: list[Any] | None = None, use_index: list[str] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Documents matching a Mango ``selector`` (``_find``); ``use_index``: [design
        document, index name]."""
        body: dict[str, Any] = {"selector": dict(selector), "limit": limit, "skip": skip}
        if sort:
            body["sort"] = sort
        if use_index:
            body["use_index"] = use_index

        what = f"POST /{db}/_find"

        def query() -> list[dict[str, Any]]:
            answer = failures.mango(what, lambda: self._post_json(db, "_find", body))
            return [dict(doc) for doc in answer.get("docs", [])]

        return self._call(what, query)

    def index(self, db: str, fields: list[str], name: str, ddoc: str) -> None:
        """Make sure a Mango index on ``fields`` exists in design document ``ddoc``
        (idempotent in CouchDB); ``Unsupported`` when the server has no Mango."""
        body = {"index": {"fields": fields}, "name": name, "ddoc": ddoc, "type": "json"}
        what = f"POST /{db}/_index"
        for attempt in range(INDEX_ATTEMPTS):
            try:
                self._call(
                    what, lambda: failures.mango(what, lambda: self._post_json(db, "_index", body))
                )
                return
            except (Unreachable, NotFound, Unauthorized, Unsupported):
                raise
            except StoreError:
                # Two clients making the same index at once: CouchDB answers one of them 500
                # error_saving_ddoc (or 409). Asked again, it finds the index made.
                if attempt == INDEX_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def view(self, db: str, ddoc: str, name: str, **options: Any) -> list[dict[str, Any]]:
        """The rows of the view ``_design/{ddoc}/_view/{name}``. ``options`` are CouchDB's query
        parameters, each given as the JSON value CouchDB reads (``startkey="a"``,
        ``descending=True``, ``limit=10``)."""
        params = {key: json.dumps(value) for key, value in options.items()}

        def query() -> list[dict[str, Any]]:
            path = ["_design", ddoc, "_view", name]
            answer = self._db(db).resource.get_json(path, **params)[2]
            if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
                raise ValueError("no rows list")
            return [dict(row) for row in answer["rows"] if isinstance(row, dict)]

        return self._call(f"GET /{db}/_design/{ddoc}/_view/{name}", query)
