"""Who may change, and who may read, the events, workers and state databases.

Event and worker documents are code that runs on the server: whoever may write them may run
programs as the user couchdb-events runs as. ``secure_database`` makes a database writable by
CouchDB server admins only, in the two ways CouchDB offers:

- a design document ``_design/couchdb_events`` whose ``validate_doc_update`` refuses every
  create, update and delete (attachments included, and through ``_bulk_docs`` and replication)
  by a user without the ``_admin`` role, with ``401 unauthorized``;
- the database's ``_security`` object: ``admins`` is the ``_admin`` role alone, and so is
  ``members``, which also makes the database readable by server admins only. couchdb-events
  itself reads with the credentials in ``couchdb_url``, which are a server admin's. Reader roles
  (``reader_roles``) may be added to ``members`` to let those users read, never write.

Server admins, not database admins: the validate function lets through only ``_admin`` in
``userCtx.roles``, which CouchDB gives to server admins alone. Database admins (``_security``'s
``admins``) are not let through, because a database admin may also replace or delete design
documents (CouchDB runs no validate function on them) and so could switch the rule off; for the
same reason ``admins`` is set to the ``_admin`` role alone, and any names or roles that were in
it are removed (and reported). CouchDB never runs validate functions on ``_local`` documents;
couchdb-events never reads those.

All of it is idempotent: what is already in place is left alone (the design document keeps its
revision). Against a CouchDB without admins ("admin party") every request is a server admin's,
so none of this protects anything until an admin is created; ``setup`` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..config import Config, redact_url
from ..errors import ConfigError, EventsError, NotFound, StoreError, Unauthorized, Unreachable
from .store import Store

DESIGN_ID = "_design/couchdb_events"
REFUSAL = "only server admins may change couchdb-events documents"

# Plain ES5 (CouchDB 1.x runs SpiderMonkey 1.8.5): no arrow functions, let, const or includes.
VALIDATE_DOC_UPDATE = (
    "function (newDoc, oldDoc, userCtx, secObj) {\n"
    "  // couchdb-events: event and worker documents are code that runs on the server.\n"
    "  var roles = (userCtx && userCtx.roles) || [];\n"
    "  if (roles.indexOf('_admin') === -1) {\n"
    f"    throw({{unauthorized: '{REFUSAL}'}});\n"
    "  }\n"
    "}"
)

ADMIN_ROLE = "_admin"


class NotAdmin(EventsError):
    """The credentials in ``couchdb_url`` are not a CouchDB server admin's."""


def design_document() -> dict[str, Any]:
    """The design document's fields that ``secure_database`` puts in place."""
    return {"_id": DESIGN_ID, "language": "javascript", "validate_doc_update": VALIDATE_DOC_UPDATE}


def check_reader_roles(roles: Iterable[str]) -> list[str]:
    """The reader roles, checked: CouchDB role names, none of CouchDB's own ``_`` roles."""
    checked: list[str] = []
    for role in roles:
        if not isinstance(role, str) or not role.strip():
            raise ConfigError("a reader role must be a non-empty name")
        if role.startswith("_"):
            raise ConfigError(
                f"reader role {role!r}: roles starting with '_' are CouchDB's own "
                "(server admins may always read)"
            )
        if role not in checked:
            checked.append(role)
    return checked


def security_object(reader_roles: Iterable[str] = ()) -> dict[str, Any]:
    """The ``_security`` object: server admins only, plus reader roles as members."""
    return {
        "admins": {"names": [], "roles": [ADMIN_ROLE]},
        "members": {"names": [], "roles": [ADMIN_ROLE, *check_reader_roles(reader_roles)]},
    }


def _group(value: Any) -> tuple[frozenset[str], frozenset[str]]:
    """An ``admins`` or ``members`` entry as (names, roles), order and repeats ignored."""
    entry = value if isinstance(value, Mapping) else {}

    def words(key: str) -> frozenset[str]:
        items = entry.get(key)
        if not isinstance(items, list):
            return frozenset()
        return frozenset(x for x in items if isinstance(x, str))

    return words("names"), words("roles")


def _readable(security: Mapping[str, Any]) -> str:
    """A ``_security`` object in a few words, for the report."""
    parts = []
    for key in ("admins", "members"):
        names, roles = _group(security.get(key))
        if names or roles:
            who = [f"names {', '.join(sorted(names))}"] if names else []
            who += [f"roles {', '.join(sorted(roles))}"] if roles else []
            parts.append(f"{key}: {'; '.join(who)}")
    return ", ".join(parts) or "empty, so anyone could read"


def secure_database(store: Store, db: str, reader_roles: Sequence[str] = ()) -> list[str]:
    """Put the validate function and the ``_security`` object in place in ``db`` (which must
    exist); human lines of what was done. Needs a server admin's credentials."""
    lines: list[str] = []
    wanted = design_document()

    current: dict[str, Any] | None
    try:
        current = store.get(db, DESIGN_ID)
    except NotFound:
        current = None
    if current is None:
        rev = store.put(db, wanted)
        lines.append(
            f"database {db}: added {DESIGN_ID} (rev {rev}): its validate_doc_update lets only "
            "server admins change documents"
        )
    elif (
        current.get("validate_doc_update") == wanted["validate_doc_update"]
        and current.get("language", "javascript") == "javascript"
    ):
        lines.append(f"database {db}: {DESIGN_ID} is in place (rev {current.get('_rev')})")
    else:
        # Keep whatever else it holds (and its _rev, so that this is an update).
        rev = store.put(db, {**current, **wanted})
        lines.append(
            f"database {db}: updated {DESIGN_ID} to rev {rev}: its validate_doc_update had been "
            "changed"
        )

    security = store.get_security(db)
    target = security_object(reader_roles)
    if all(_group(security.get(key)) == _group(target[key]) for key in ("admins", "members")):
        lines.append(f"database {db}: _security is in place ({_readable(security)})")
    else:
        store.put_security(db, {**security, **target})
        readers = check_reader_roles(reader_roles)
        who = "server admins" + (f" and roles {', '.join(readers)}" if readers else "")
        lines.append(
            f"database {db}: set _security: only {who} may read it (it was: {_readable(security)})"
        )
    return lines


def require_admin(store: Store, config: Config) -> list[str]:
    """Raise ``NotAdmin`` (or ``StoreError``) unless ``couchdb_url``'s credentials are a server
    admin's; lines to report (a warning when CouchDB has no admins at all)."""
    shown = redact_url(config.couchdb_url)
    try:
        ctx = store.session()
    except Unreachable as exc:
        raise Unreachable(
            f"CouchDB does not answer at {shown} ({exc}): is it running, and is couchdb_url right?"
        ) from None
    except Unauthorized as exc:
        raise NotAdmin(
            f"CouchDB at {shown} rejects the credentials in couchdb_url ({exc}): check the "
            "admin's name and password"
        ) from None
    except StoreError as exc:
        raise StoreError(f"CouchDB at {shown}: {exc}") from None
    name, roles = ctx.get("name"), ctx.get("roles")
    roles = [r for r in roles if isinstance(r, str)] if isinstance(roles, list) else []
    if ADMIN_ROLE not in roles:
        if name is None:
            raise NotAdmin(
                f"CouchDB at {shown} takes the requests as anonymous: setup needs a server "
                "admin's name and password in couchdb_url"
            )
        raise NotAdmin(
            f"CouchDB at {shown} knows {name!r}, but not as a server admin "
            f"(roles: {', '.join(roles) or 'none'}): setup needs a server admin's credentials "
            "in couchdb_url"
        )
    if name is None:
        return [
            f'warning: CouchDB at {shown} has no admins ("admin party": every request counts '
            "as a server admin's), so none of this keeps anybody out until you create an admin"
        ]
    return []


def setup(
    config: Config, reader_roles: Sequence[str] = (), report: Callable[[str], Any] = print
) -> None:
    """``couchdb-events setup``: check the credentials are a server admin's, create the events,
    workers and state databases when missing and secure each, reporting each step with
    ``report``.

    Raises ``EventsError`` (``NotAdmin``, ``ConfigError`` or a ``StoreError``) with a one-line,
    password-free message."""
    readers = check_reader_roles(reader_roles)
    store = Store(config.couchdb_url, config.couchdb_timeout)
    shown = redact_url(config.couchdb_url)
    # First: a non-admin's PUT /<db> is pointless, and crashes PouchDB Server 4.2.0.
    for line in require_admin(store, config):
        report(line)
    databases = list(dict.fromkeys((config.events_db, config.workers_db, config.state_db)))
    try:
        for db in databases:
            if store.create(db):
                report(f"created database {db}")
            else:
                report(f"database {db} already exists")
            for line in secure_database(store, db, readers):
                report(line)
    except StoreError as exc:
        raise type(exc)(f"CouchDB at {shown}: {exc}") from None
    who = "server admins" + (f" and roles {', '.join(readers)}" if readers else "")
    report(
        f"{', '.join(databases[:-1])} and {databases[-1]}: only CouchDB server admins may "
        f"create, change or delete documents; only {who} may read them"
    )
