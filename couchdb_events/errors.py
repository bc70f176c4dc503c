"""The project's exceptions.

::

    EventsError                    base of everything raised on purpose
    ├── ConfigError                a setting is missing or has a bad value (names the key)
    ├── DocumentError              an event or worker document is unusable (names the doc)
    ├── StoreError                 talking to CouchDB failed
    │   ├── Unreachable            no answer: refused, reset, timed out, DNS
    │   ├── NotFound               404 from CouchDB
    │   ├── Conflict               409 from CouchDB
    │   ├── Unauthorized           401/403 from CouchDB
    │   └── Unsupported            the server has no such endpoint (CouchDB 1.x: no Mango)
    └── HTTPError                  an answer for the caller: status, error, reason (as CouchDB's)

The storage layer turns python-couchdb's errors and ``OSError`` into ``StoreError``s; the HTTP
layer turns ``HTTPError`` into a JSON answer.
"""

from __future__ import annotations


class EventsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EventsError):
    """A configuration value is missing or malformed; the message names the key."""


class DocumentError(EventsError):
    """An event or worker document cannot be used as it is."""


class StoreError(EventsError):
    """CouchDB did not do what was asked."""


class Unreachable(StoreError):
    """CouchDB could not be reached (refused, reset, timed out)."""


class NotFound(StoreError):
    """CouchDB answered 404."""


class Conflict(StoreError):
    """CouchDB answered 409."""


class Unauthorized(StoreError):
    """CouchDB answered 401 or 403."""


class Unsupported(StoreError):
    """The server has no such endpoint: ``_find`` and ``_index`` on CouchDB 1.x."""


class HTTPError(EventsError):
    """An error answer for the HTTP caller, shaped like CouchDB's ``{"error", "reason"}``."""

    def __init__(
        self, status: int, error: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {error}: {reason}")
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or {}


class AlreadyFired(HTTPError):
    """Another daemon (or an earlier attempt) stored this fire's activation record first: the
    fire is done, not to be run again (``message.derived_id``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(409, "conflict", reason)
