"""Shared fixtures: a PouchDB Server for the session and fresh databases on it.

Tests that use ``couch`` (directly or through ``couch_url`` or ``fresh_db``) are marked
``integration``. Without node or ``node_modules/pouchdb-server`` they are skipped, except in
CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.couch import (
    SERVER_SCRIPT,
    FreshDb,
    PouchServer,
    find_node,
    find_pouchdb_server,
    http_json,
)

# CouchDB's rule for database names, less "/", which PouchDB Server drops from names (it is
# also laxer than CouchDB and takes upper case): see POUCHDB_DIFFERENCES.md.
DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+-]*$")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "couch" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration tests need PouchDB Server: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def couch() -> Iterator[PouchServer]:
    """A running PouchDB Server (in memory, loopback, free port) for the whole session."""
    node = find_node()
    script = find_pouchdb_server()
    if node is None:
        _unavailable("node is not on PATH")
    if script is None:
        _unavailable(f"{SERVER_SCRIPT} is missing: run ./run-tests (or `npm ci`)")
    server = PouchServer(node=node, script=script).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def couch_url(couch: PouchServer) -> str:
    """The server's root URL, with a trailing slash: ``http://127.0.0.1:PORT/``."""
    return couch.url


@pytest.fixture
def fresh_db(couch: PouchServer) -> Iterator[FreshDb]:
    """A factory ``fresh_db(prefix="db") -> name`` creating an empty database of a unique name.

    Names look like ``t_<prefix>_<10 hex digits>``; every database created is deleted at
    teardown. The database's URL is ``couch.url + name``.
    """
    created: list[str] = []

    def make(prefix: str = "db") -> str:
        name = f"t_{prefix}_{uuid.uuid4().hex[:10]}"
        if not DB_NAME.match(name):
            raise ValueError(f"not a valid CouchDB database name: {name!r}")
        status, body = http_json("PUT", couch.url + urllib.parse.quote(name, safe=""))
        if status != 201:
            raise RuntimeError(f"could not create database {name}: {status} {body}")
        created.append(name)
        return name

    yield make

    failures = []
    for name in created:
        status, body = http_json("DELETE", couch.url + urllib.parse.quote(name, safe=""))
        if status not in (200, 202, 404):
            failures.append(f"{name}: {status} {body}")
    if failures:
        raise RuntimeError("could not delete databases: " + "; ".join(failures))
