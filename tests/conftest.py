"""Shared fixtures: the tests' CouchDB-compatible server and fresh databases on it.

The server is a PouchDB Server the session starts, or, when ``COUCHDB_URL`` is set
(``http://ADMIN:PASSWORD@HOST:PORT/``), the CouchDB there (see ``tests/couch.py``).

Tests that use ``couch`` (directly or through ``couch_url``, ``fresh_db`` and the like) are
marked ``integration``. Without node or ``node_modules/pouchdb-server`` they are skipped, except
in CI (``CI=true``), where a missing server is a failure; a COUCHDB_URL that does not answer as
a CouchDB with a server admin is always a failure.

A test that holds on one of the two servers only says so: ``@pytest.mark.pouchdb_only(why)``
or ``@pytest.mark.couchdb_only(why)``; it is skipped on the other, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.couch import (
    SERVER_SCRIPT,
    CouchServer,
    CouchServerError,
    FreshDb,
    NewUser,
    OwnCouch,
    PouchServer,
    external_couchdb_url,
    find_node,
    find_pouchdb_server,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = external_couchdb_url() is not None
    for item in items:
        if "couch" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
        for name, skipped_on, other in (
            ("pouchdb_only", real, "PouchDB Server"),
            ("couchdb_only", not real, "a real CouchDB (COUCHDB_URL)"),
        ):
            mark = item.get_closest_marker(name)
            if mark is None:
                continue
            if len(mark.args) != 1 or not isinstance(mark.args[0], str):
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one reason")
            if skipped_on:
                item.add_marker(pytest.mark.skip(reason=f"holds on {other} only: {mark.args[0]}"))


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"integration tests need PouchDB Server: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def couch() -> Iterator[CouchServer]:
    """The server for the whole session: the CouchDB at COUCHDB_URL, or a PouchDB Server (in
    memory, loopback, free port, an admin party) started here."""
    url = external_couchdb_url()
    if url is not None:
        problem = None
        try:
            server = CouchServer.connect(url)
        except CouchServerError as error:
            problem = str(error)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        try:
            yield server
        finally:
            server.clean_up()  # what a test's own clean-up missed
        return
    node = find_node()
    script = find_pouchdb_server()
    if node is None:
        _unavailable("node is not on PATH")
    if script is None:
        _unavailable(f"{SERVER_SCRIPT} is missing: run ./run-tests (or `npm ci`)")
    pouch = PouchServer(node=node, script=script).start()
    try:
        yield CouchServer(pouch.url, pouch=pouch)
    finally:
        pouch.stop()


@pytest.fixture
def couch_scope(couch: CouchServer) -> Iterator[CouchServer]:
    """The server, for one test: the databases and users made through it are removed at
    teardown (after the fixtures that use it, such as the daemons of ``start_daemon``)."""
    scope = couch.scope()
    yield scope
    scope.clean_up()


@pytest.fixture
def couch_url(couch: CouchServer) -> str:
    """The server's root URL, with a trailing slash: ``http://127.0.0.1:PORT/``; on a real
    CouchDB with the admin's credentials in it."""
    return couch.url


@pytest.fixture
def fresh_db(couch_scope: CouchServer) -> FreshDb:
    """A factory ``fresh_db(prefix="db") -> name`` creating an empty database of a unique name.

    Names look like ``t_<prefix>_<10 hex digits>``; every database created is deleted at
    teardown, with every database whose name starts with its name (those a daemon derives
    from it, such as ``<events_db>_activations_YYYY_MM``). The database's URL is
    ``couch_url + name``.
    """
    return couch_scope.create_db


@pytest.fixture
def new_db_name(couch_scope: CouchServer) -> FreshDb:
    """A factory ``new_db_name(prefix="db") -> name`` of unique database names like
    ``fresh_db``'s, for databases something else creates; removed at teardown as they are."""
    return couch_scope.new_db_name


@pytest.fixture
def new_user(couch_scope: CouchServer) -> NewUser:
    """A factory ``new_user(prefix="user", roles=()) -> (name, password)`` of users in
    ``_users`` with unique names; they are deleted at teardown."""
    return couch_scope.add_user


@pytest.fixture
def own_couch(tmp_path: Path) -> Iterator[Callable[..., OwnCouch]]:
    """A factory ``own_couch(*dbs) -> OwnCouch``; the server is stopped at teardown."""
    made: list[OwnCouch] = []

    def make(*dbs: str) -> OwnCouch:
        made.append(OwnCouch(tmp_path / f"couch-data{len(made)}", dbs))
        return made[-1]

    yield make
    for couch in made:
        couch.stop()
