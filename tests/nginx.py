"""nginx for the tests, running the shipped site file ``deploy/nginx/couchdb-events.conf``.

The site file is what gets tested: ``render_site`` only puts the test's ports in place of the
three it ships with (the ``listen`` port and the one ``server`` of each ``upstream``) and fails
when the file no longer has exactly those lines. ``NginxProxy`` wraps it in a throwaway
``nginx.conf`` (``daemon off``, pid, logs and temp paths in a temporary prefix directory),
checks it with ``nginx -t``, runs ``nginx -p PREFIX -c CONF`` in the foreground and stops it.

The ``nginx_binary`` fixture skips a test when nginx is not installed, except in CI
(``CI=true``), where that is a failure. A test module that uses it imports
``nginx_binary_fixture`` (the function's name, so that the argument does not shadow it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NoReturn

import pytest

from tests.couch import LOOPBACK, REPO_ROOT, free_port

SITE = REPO_ROOT / "deploy" / "nginx" / "couchdb-events.conf"
# The ports the site file ships with.
SITE_PUBLIC_PORT = 5984
SITE_EVENTS_PORT = 5985
SITE_COUCHDB_PORT = 5987

NGINX_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def find_nginx() -> str | None:
    """The nginx executable: on PATH, or where distributions put it (often off a user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in NGINX_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_version(nginx: str) -> tuple[int, ...]:
    """``(1, 22, 1)`` from ``nginx -v`` (which prints to stderr), or ``()``."""
    done = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
    match = re.search(r"nginx/(\d+(?:\.\d+)*)", done.stderr + done.stdout)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _strip_comments(text: str) -> str:
    # The site file keeps no "#" inside quoted strings, so a "#" always starts a comment.
    return re.sub(r"#[^\n]*", "", text)


def _set_upstream_server(text: str, name: str, address: str) -> str:
    block = re.compile(r"(\bupstream\s+" + re.escape(name) + r"\s*\{)([^{}]*)(\})")
    blocks = block.findall(text)
    if len(blocks) != 1:
        raise ValueError(f"{SITE.name}: expected one `upstream {name}` block, found {len(blocks)}")
    servers = re.findall(r"(?m)^\s*server\s", blocks[0][1])
    if len(servers) != 1:
        raise ValueError(f"{SITE.name}: `upstream {name}` should have one server line")

    def replace(match: re.Match[str]) -> str:
        body = re.sub(r"(?m)^(\s*server\s+)[^\s;]+", lambda m: m.group(1) + address, match[2])
        return match[1] + body + match[3]

    return block.sub(replace, text)


def render_site(
    text: str,
    *,
    public_port: int,
    events_port: int,
    couchdb_port: int,
    host: str = LOOPBACK,
    couchdb_host: str = LOOPBACK,
) -> str:
    """The site file (without its comments) with the test's ports and loopback addresses.

    Its ``listen`` lines on the public port become one ``listen host:public_port``; IPv6 and
    other forms of the same port are dropped (a test machine may have no IPv6).
    """
    text = _strip_comments(text)
    listen = re.compile(r"(?m)^(\s*)listen\s+(\S*?)\b" + str(SITE_PUBLIC_PORT) + r"\b([^;]*);")
    if not listen.search(text):
        raise ValueError(f"{SITE.name}: no `listen {SITE_PUBLIC_PORT};` line")
    done: list[bool] = []

    def replace_listen(match: re.Match[str]) -> str:
        if done:
            return ""
        done.append(True)
        return f"{match[1]}listen {host}:{public_port}{match[3]};"

    text = listen.sub(replace_listen, text)
    if len(re.findall(r"(?m)^\s*listen\s", text)) != 1:
        raise ValueError(f"{SITE.name}: a `listen` line on a port other than {SITE_PUBLIC_PORT}")
    text = _set_upstream_server(text, "couchdb_events", f"{LOOPBACK}:{events_port}")
    return _set_upstream_server(text, "couchdb", f"{couchdb_host}:{couchdb_port}")


def _port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class NginxProxy:
    """nginx serving the shipped site on a free loopback port, in front of the given ports."""

    def __init__(
        self,
        nginx: str,
        *,
        events_port: int,
        couchdb_port: int,
        couchdb_host: str = LOOPBACK,
        site: Path = SITE,
    ) -> None:
        self.nginx = nginx
        self.events_port = events_port
        self.couchdb_port = couchdb_port
        self.couchdb_host = couchdb_host
        self.site = site
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/"
        self.prefix: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: BinaryIO | None = None

    # -- the configuration ----------------------------------------------------------------
    def config(self, prefix: Path) -> str:
        """A whole nginx.conf that includes the rendered site (written to ``prefix``)."""
        site = render_site(
            self.site.read_text(encoding="utf-8"),
            public_port=self.port,
            events_port=self.events_port,
            couchdb_port=self.couchdb_port,
            couchdb_host=self.couchdb_host,
        )
        (prefix / "site.conf").write_text(site, encoding="utf-8")
        temp = {
            name: prefix / "temp" / name
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        }
        for path in temp.values():
            path.mkdir(parents=True, exist_ok=True)
        return (
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} info;\n"
            "events {\n    worker_connections 256;\n}\n"
            "http {\n"
            f"    access_log {prefix / 'access.log'};\n"
            f"    client_body_temp_path {temp['client_body']};\n"
            f"    proxy_temp_path {temp['proxy']};\n"
            f"    fastcgi_temp_path {temp['fastcgi']};\n"
            f"    uwsgi_temp_path {temp['uwsgi']};\n"
            f"    scgi_temp_path {temp['scgi']};\n"
            f"    include {prefix / 'site.conf'};\n"
            "}\n"
        )

    def _argv(self, prefix: Path, conf: Path) -> list[str]:
        argv = [self.nginx, "-p", f"{prefix}/", "-c", str(conf)]
        if nginx_version(self.nginx) >= (1, 19, 5):
            # The log for start-up errors, before the config's error_log is read (the
            # compiled-in path may not be writable).
            argv += ["-e", str(prefix / "error.log")]
        return argv

    # -- running --------------------------------------------------------------------------
    def start(self, timeout: float = 15.0) -> NginxProxy:
        """Write the config, check it (``nginx -t``), start nginx, wait until it listens."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        prefix = Path(tempfile.mkdtemp(prefix="couchdb-events-nginx-"))
        self.prefix = prefix
        # When the tests run as root, nginx's workers run as an unprivileged user: they must
        # be able to reach the temp paths.
        prefix.chmod(0o755)
        conf = prefix / "nginx.conf"
        conf.write_text(self.config(prefix), encoding="utf-8")
        argv = self._argv(prefix, conf)
        check = subprocess.run([*argv, "-t"], capture_output=True, timeout=30, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr.decode(errors='replace')}")
        self._output = (prefix / "nginx.out").open("wb")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nginx did not listen on {self.port} in {timeout} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def log(self) -> str:
        """nginx's own output and its error log, for failure messages."""
        if self.prefix is None:
            return ""
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.prefix / name
            if path.is_file():
                parts.append(f"--- {name}\n" + path.read_text(encoding="utf-8", errors="replace"))
        return "\n".join(parts)

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGTERM to the master), SIGKILL to the group if it hangs; clean up."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=timeout)
        if self._output is not None:
            self._output.close()
            self._output = None
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _unavailable(reason: str) -> NoReturn:
    reason += ": install it (Debian: apt-get install nginx), or run ./run-tests"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the reverse-proxy tests need nginx: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", name="nginx_binary")
def nginx_binary_fixture() -> str:
    """The nginx executable; skips the test when there is none (fails in CI)."""
    nginx = find_nginx()
    if nginx is None:
        _unavailable("nginx is not installed")
    return nginx
