"""The tests' CouchDB-compatible server: PouchDB Server, or a real CouchDB given by COUCHDB_URL.

By default the tests start PouchDB Server, the npm package ``pouchdb-server``, pinned in
``package.json`` and installed into ``node_modules/`` by ``npm ci`` (``./run-tests`` does that).
It runs with ``--in-memory`` on a free loopback port, in a temporary working directory of its
own, so it writes nothing into the repository (it keeps a ``config.json`` and a ``log.txt`` in
its working directory).

With ``COUCHDB_URL=http://ADMIN:PASSWORD@HOST:PORT/`` in the environment they use that server
instead (``CouchServer.connect``), shared with whatever else it holds: every database the tests
make has a unique name (``t_<prefix>_<10 hex digits>``), and each is deleted afterwards together
with every database whose name starts with it (what a daemon derives from its events database:
``<events_db>_activations_YYYY_MM`` and the like). Users the tests create get unique names and
are deleted too. The server's configuration is never changed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from couchdb_events.couch.embedded import EmbeddedCouch

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = Path("node_modules", "pouchdb-server", "bin", "pouchdb-server")
LOOPBACK = "127.0.0.1"
# The environment variable naming a real CouchDB to test against instead of PouchDB Server.
COUCHDB_URL = "COUCHDB_URL"

# CouchDB's rule for database names, less "/", which PouchDB Server drops from names (it is
# also laxer than CouchDB and takes upper case): see POUCHDB_DIFFERENCES.md.
DB_NAME = re.compile(r"^[a-z][a-z0-9_$()+-]*$")

# The type of the `fresh_db` fixture: fresh_db(prefix="db") -> database name.
FreshDb = Callable[..., str]
# The type of the `new_user` fixture: new_user(prefix="user", roles=()) -> (name, password).
NewUser = Callable[..., tuple[str, str]]


def find_pouchdb_server(root: Path = REPO_ROOT) -> Path | None:
    """The pouchdb-server script under ``root/node_modules`` (the repository root), or None."""
    script = root / SERVER_SCRIPT
    return script if script.is_file() else None


def find_node() -> str | None:
    """The ``node`` executable on PATH, or None."""
    return shutil.which("node")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def external_couchdb_url() -> str | None:
    """The URL in COUCHDB_URL, when the tests are to run against that server; else None."""
    return os.environ.get(COUCHDB_URL, "").strip() or None


def with_credentials(url: str, user: tuple[str, str] | None) -> str:
    """``url`` with ``user``'s name and password in it (any there before replaced)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if user is not None:
        name, password = (urllib.parse.quote(part, safe="") for part in user)
        host = f"{name}:{password}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without credentials, and an ``Authorization`` header for those it held (urllib
    does not take credentials from the URL)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, {}
    name = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return with_credentials(url, None), {"Authorization": f"Basic {token}"}


def http_json(method: str, url: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request with an optional JSON body: (status, decoded JSON body or None).

    Credentials in ``url`` are sent as basic authentication. Error statuses (4xx, 5xx) are
    returned, not raised; connection errors are raised.
    """
    data = None if body is None else json.dumps(body).encode()
    url, headers = split_credentials(url)
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status: int = response.status
            raw: bytes = response.read()
    except urllib.error.HTTPError as error:
        with error:
            status = error.code
            raw = error.read()
    return status, json.loads(raw) if raw.strip() else None


class PouchServerError(RuntimeError):
    """PouchDB Server did not start, or stopped on its own."""


class PouchServer:
    """A PouchDB Server process, in memory, on a free loopback port.

    ``PouchServer().start()`` returns once ``GET /`` answers; ``stop()`` ends the server's
    whole process group and removes its working directory. Also a context manager.
    """

    def __init__(
        self,
        *,
        node: str | None = None,
        script: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        found_node = node or find_node()
        found_script = script or find_pouchdb_server()
        if found_node is None:
            raise PouchServerError("node is not on PATH")
        if found_script is None:
            raise PouchServerError(f"{SERVER_SCRIPT} is missing: run `npm ci` first")
        self.node = found_node
        self.script = found_script
        self.startup_timeout = startup_timeout
        self.host = LOOPBACK
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise PouchServerError("the server is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server's root URL, with a trailing slash: ``http://127.0.0.1:PORT/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, attempts: int = 3) -> PouchServer:
        """Start the server and wait until it answers; retry on another port if one was taken."""
        if self._process is not None:
            raise PouchServerError("the server is already running")
        for attempt in range(1, attempts + 1):
            try:
                self._start_once()
            except PouchServerError:
                self.stop()
                if attempt == attempts:
                    raise
            else:
                return self
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="pouchdb-server-"))
        self._port = free_port(self.host)
        # A uuid of our own in its config tells our server from anything else on the port.
        server_uuid = uuid.uuid4().hex
        config = self._workdir / "config.json"
        config.write_text(
            json.dumps(
                {
                    "couchdb": {"uuid": server_uuid},
                    "log": {"file": str(self._workdir / "log.txt")},
                }
            )
        )
        output = self._workdir / "output.txt"
        with output.open("wb") as out:
            self._process = subprocess.Popen(
                [
                    self.node,
                    str(self.script),
                    "--in-memory",
                    "--host",
                    self.host,
                    "--port",
                    str(self._port),
                    "--config",
                    str(config),
                    "--no-stdout-logs",
                    "--no-color",
                ],
                cwd=self._workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                raise PouchServerError(
                    f"pouchdb-server exited with {self._process.returncode}: "
                    + output.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(OSError, ValueError):
                status, welcome = http_json("GET", self.url, timeout=2.0)
                if status == 200 and isinstance(welcome, dict):
                    if welcome.get("uuid") == server_uuid:
                        return
                    raise PouchServerError(f"another server answers on port {self._port}")
            if time.monotonic() > deadline:
                raise PouchServerError(
                    f"pouchdb-server did not answer within {self.startup_timeout} s: "
                    + output.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """End the server's process group (TERM, then KILL), reap it, remove its directory."""
        process, self._process = self._process, None
        if process is not None:
            _end_process_group(process, timeout)
        self._port = None
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> PouchServer:
        return self.start() if self._process is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<PouchServer {where}>"


class CouchServerError(RuntimeError):
    """The server in COUCHDB_URL does not answer as a CouchDB, or not to a server admin."""


class CouchServer:
    """The tests' server, whichever it is, and what the tests made on it.

    ``url`` is the root URL (trailing slash) that requests and daemons get: on a real CouchDB
    it holds the server admin's credentials; ``public_url`` is the same without them. ``pouch``
    is the PouchDB Server process when the tests started one, else None (``is_couchdb``).

    Every database name comes from ``new_db_name`` (unique, and remembered), and only those
    names are ever deleted (``drop_dbs``), each with every database whose name starts with it.
    ``scope()`` gives a server object whose databases and users ``clean_up()`` removes: one per
    test; the session's object removes what is left at the end (``clean_up`` too).
    """

    def __init__(
        self,
        url: str,
        *,
        pouch: PouchServer | None = None,
        admin: tuple[str, str] | None = None,
        parent: CouchServer | None = None,
    ) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.public_url, _ = split_credentials(self.url)
        parts = urllib.parse.urlsplit(self.public_url)
        self.host = parts.hostname or LOOPBACK
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.pouch = pouch
        self.admin = admin
        self._parent = parent
        self._names: list[str] = []  # database names handed out
        self._users: list[str] = []  # users created and not deleted yet

    @classmethod
    def connect(cls, url: str) -> CouchServer:
        """The CouchDB at ``url``, once it answers as one and its credentials are a server
        admin's (the tests create and delete databases and users)."""
        from couchdb_events.config import redact_url

        url = url if url.endswith("/") else url + "/"
        shown = redact_url(url)
        try:
            status, welcome = http_json("GET", url)
            if status == 401:
                raise CouchServerError(f"CouchDB at {shown} rejects the credentials: {welcome}")
            if status != 200 or not isinstance(welcome, dict) or "couchdb" not in welcome:
                raise CouchServerError(f"{shown} does not answer as a CouchDB: {status} {welcome}")
            status, session = http_json("GET", url + "_session")
        except (OSError, ValueError) as error:
            raise CouchServerError(f"CouchDB does not answer at {shown}: {error}") from None
        parts = urllib.parse.urlsplit(url)
        roles = (session or {}).get("userCtx", {}).get("roles", []) if status == 200 else []
        if parts.username is None or "_admin" not in roles:
            raise CouchServerError(
                f"{COUCHDB_URL}={shown}: the URL must hold a CouchDB server admin's name and "
                f"password (GET /_session answered {status} {session})"
            )
        admin = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
        return cls(url, admin=admin)

    @property
    def is_couchdb(self) -> bool:
        """A real CouchDB (COUCHDB_URL), not a PouchDB Server the tests started."""
        return self.pouch is None

    @property
    def kind(self) -> str:
        return "CouchDB" if self.is_couchdb else "PouchDB Server"

    def scope(self) -> CouchServer:
        """The same server; what is made through the new object, its ``clean_up`` removes."""
        return CouchServer(self.url, pouch=self.pouch, admin=self.admin, parent=self)

    def db_url(self, name: str) -> str:
        return self.url + urllib.parse.quote(name, safe="")

    # -- databases ----------------------------------------------------------------------------
    def new_db_name(self, prefix: str = "db") -> str:
        """A unique database name, ``t_<prefix>_<10 hex digits>``, not created."""
        name = f"t_{prefix}_{uuid.uuid4().hex[:10]}"
        if not DB_NAME.match(name):
            raise ValueError(f"not a valid CouchDB database name: {name!r}")
        server: CouchServer | None = self
        while server is not None:
            server._names.append(name)
            server = server._parent
        return name

    def create_db(self, prefix: str = "db") -> str:
        """A new empty database of a unique name."""
        name = self.new_db_name(prefix)
        status, body = http_json("PUT", self.db_url(name))
        if status != 201:
            raise RuntimeError(f"could not create database {name}: {status} {body}")
        return name

    def drop_dbs(self, *names: str) -> None:
        """Delete the databases named and every database whose name starts with one of them.
        Only names from ``new_db_name`` are taken: nothing else on the server is touched."""
        foreign = [name for name in names if name not in self._names]
        if foreign:
            raise ValueError(f"not database names the tests made: {foreign}")
        if not names:
            return
        status, all_dbs = http_json("GET", self.url + "_all_dbs")
        if status != 200 or not isinstance(all_dbs, list):
            raise RuntimeError(f"could not list the databases: {status} {all_dbs}")
        failures = []
        for db in all_dbs:
            if any(db.startswith(name) for name in names):
                status, body = http_json("DELETE", self.db_url(db))
                if status not in (200, 202, 404):
                    failures.append(f"{db}: {status} {body}")
        if failures:
            raise RuntimeError("could not delete databases: " + "; ".join(failures))

    # -- users --------------------------------------------------------------------------------
    def add_user(
        self, prefix: str = "user", roles: tuple[str, ...] | list[str] = ()
    ) -> tuple[str, str]:
        """A new user in ``_users`` (unique name ``t_<prefix>_<8 hex digits>``, a password of
        its own, ``roles``): (name, password)."""
        name = f"t_{prefix}_{uuid.uuid4().hex[:8]}"
        password = f"pw-{uuid.uuid4().hex[:12]}"
        doc = {"name": name, "password": password, "roles": list(roles), "type": "user"}
        status, body = http_json("PUT", self._user_url(name), doc)
        if status not in (201, 202):
            raise RuntimeError(f"could not create user {name}: {status} {body}")
        server: CouchServer | None = self
        while server is not None:
            server._users.append(name)
            server = server._parent
        return name, password

    def delete_user(self, name: str) -> None:
        status, doc = http_json("GET", self._user_url(name))
        if status == 200:
            status, body = http_json("DELETE", f"{self._user_url(name)}?rev={doc['_rev']}")
            if status not in (200, 202, 404):
                raise RuntimeError(f"could not delete user {name}: {status} {body}")
        server: CouchServer | None = self
        while server is not None:
            if name in server._users:
                server._users.remove(name)
            server = server._parent

    def _user_url(self, name: str) -> str:
        return f"{self.url}_users/org.couchdb.user:{urllib.parse.quote(name, safe='')}"

    # -- the end ------------------------------------------------------------------------------
    def clean_up(self) -> None:
        """Delete the users and databases made through this object."""
        for name in list(self._users):
            self.delete_user(name)
        self.drop_dbs(*self._names)
        self._names.clear()

    def __repr__(self) -> str:
        return f"<CouchServer {self.kind} {self.public_url}>"


# The admin of a PouchDB Server started with one (server_with_admin).
POUCH_ADMIN = ("boss", "s3cret-admin-pw")


@contextlib.contextmanager
def server_with_admin(couch: CouchServer) -> Iterator[CouchServer]:
    """A server with a server admin: ``admin`` is set and ``url`` holds its credentials.

    On a real CouchDB it is the tests' server itself, with the admin of COUCHDB_URL. PouchDB
    Server is started as an admin party, which the session's server must stay (tests rely on
    it), so there it is a PouchDB Server of its own, in memory, given the admin ``POUCH_ADMIN``.
    Databases and users made through it are removed at the end.
    """
    if couch.pouch is None:
        server = couch.scope()
        try:
            yield server
        finally:
            server.clean_up()
        return
    with PouchServer(node=couch.pouch.node, script=couch.pouch.script) as own:
        status, body = http_json("PUT", f"{own.url}_config/admins/{POUCH_ADMIN[0]}", POUCH_ADMIN[1])
        if status != 200:
            raise PouchServerError(f"could not make an admin: {status} {body}")
        yield CouchServer(with_credentials(own.url, POUCH_ADMIN), pouch=own, admin=POUCH_ADMIN)


def _end_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """TERM the group led by ``process``, KILL what is left of it, then reap the leader.

    The leader is reaped last: until then its group id cannot be reused, so the KILL can only
    reach processes of this group.
    """
    if process.returncode is not None:
        return  # already reaped: its group id is no longer ours to signal
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # WNOWAIT: see whether the leader has exited without reaping it.
        try:
            exited = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped elsewhere: nothing left that is surely ours
            return
        if exited is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class OwnCouch:
    """A PouchDB Server of a test's own (the embedded one), also when COUCHDB_URL names a
    CouchDB: a test of CouchDB going away stops it and starts it again on the same data and
    port. Made with the databases ``dbs``."""

    def __init__(self, data_dir: Path, dbs: tuple[str, ...]) -> None:
        self.data_dir = data_dir
        self.server = EmbeddedCouch(data_dir=data_dir).start()
        self.url = self.server.url
        for db in dbs:
            status, body = http_json("PUT", self.url + db)
            assert status == 201, body

    def stop(self) -> None:
        self.server.stop()

    def start_again(self) -> None:
        self.server = EmbeddedCouch(data_dir=self.data_dir, port=self.server.port).start()
