"""What the commands for runs share: where the service is, who calls it, one HTTP request to it,
and turning every failure into one line on stderr and a non-zero exit status.

Where: ``--url``, else ``$COUCHDB_EVENTS_URL``, else the config file's ``bind_address`` and
``port`` (``--config FILE``, else the file ``$COUCHDB_EVENTS_CONFIG`` names), else the built-in
default (``http://127.0.0.1:5985/``). Who: ``--user NAME`` (its password from
``$COUCHDB_EVENTS_PASSWORD``, else asked for on a terminal), else the URL's own ``user:password@``,
else the credentials of the config file's ``couchdb_url``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import functools
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import CONFIG_ENV, SECTION, Config
from ..errors import ConfigError

URL_ENV = "COUCHDB_EVENTS_URL"
PASSWORD_ENV = "COUCHDB_EVENTS_PASSWORD"  # noqa: S105 - a variable's name, not a password
TIMEOUT = 30.0  # seconds for one request, beyond any --wait


class CliError(Exception):
    """A failure told as one line: ``couchdb-events: <message>``."""


class Unreachable(CliError):
    """No answer from the service at all (it may be back soon)."""


Query = Mapping[str, str] | list[tuple[str, str]]


@dataclass(frozen=True)
class Target:
    """The service's root (with a trailing slash, without credentials) and how to log in."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def join(self, path: str, query: Query | None = None) -> str:
        url = self.url + path.lstrip("/")
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return url


def _check_url(url: str, origin: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise CliError(f"{origin} {_redacted(parts)!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"{origin} {_redacted(parts)!r}: not an http(s) URL")
    return parts


def _redacted(parts: urllib.parse.SplitResult) -> str:
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _config(args: argparse.Namespace) -> tuple[Config, str] | None:
    """The config file's settings and its name, if one is named (--config, $CONFIG_ENV)."""
    import configparser

    name = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if not name:
        return None
    parser = configparser.ConfigParser(
        interpolation=None, strict=False, comment_prefixes=(";", "#")
    )
    try:
        with open(name, encoding="utf-8") as handle:
            parser.read_file(handle)
        section = dict(parser[SECTION]) if parser.has_section(SECTION) else {}
        return Config.from_settings(section), name
    except OSError as exc:
        raise CliError(f"cannot read config file {name}: {exc.strerror or exc}") from None
    except configparser.Error as exc:
        raise CliError(f"config file {name}: {exc}".splitlines()[0]) from None
    except ConfigError as exc:
        raise CliError(f"config file {name}: {exc}") from None


def _service_url(config: Config) -> str:
    host = config.bind_address
    if host in ("0.0.0.0", "any"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.port}/"


def _password(user: str) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        return password
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass(f"Password for {user}: ")
    raise CliError(f"no password for {user!r}: set {PASSWORD_ENV}")


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def target(args: argparse.Namespace) -> Target:
    """Where the service is and who calls it, from the flags, the environment, the config."""
    config = _config(args)
    if getattr(args, "url", None):
        parts = _check_url(args.url, "--url")
    elif os.environ.get(URL_ENV):
        parts = _check_url(os.environ[URL_ENV], URL_ENV)
    else:
        parts = urllib.parse.urlsplit(_service_url(config[0] if config else Config()))
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    url = urllib.parse.urlunsplit(parts._replace(path=path, query="", fragment=""))
    url = _redacted(urllib.parse.urlsplit(url))
    if getattr(args, "user", None):
        return Target(url, _basic(args.user, _password(args.user)))
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = parts.password
        password = _password(user) if password is None else urllib.parse.unquote(password)
        return Target(url, _basic(user, password))
    if config is not None:
        couch = urllib.parse.urlsplit(config[0].couchdb_url)
        if couch.username is not None:
            user = urllib.parse.unquote(couch.username)
            return Target(url, _basic(user, urllib.parse.unquote(couch.password or "")))
    return Target(url)


def _reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``, ``name or service not known``..."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc).lower()
    if isinstance(exc, OSError) and exc.errno is not None:
        return (exc.strerror or os.strerror(exc.errno)).lower()
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return _reason(exc.reason)
    return str(exc) or type(exc).__name__


def _error_line(status: int, payload: bytes, reason: str) -> str:
    """``404 not_found: no activation 'x'``, from the service's JSON error."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        text = f"{status} {body['error']}"
        return f"{text}: {body['reason']}" if body.get("reason") else text
    first = payload.decode("utf-8", "replace").strip().splitlines()
    return f"{status} {reason}" + (f": {first[0][:200]}" if first else "")


def request(
    where: Target,
    method: str,
    path: str,
    query: Query | None = None,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, Any]:
    """One request; (status, its JSON). Any failure, an error answer too, is a ``CliError``."""
    url = where.join(path, query)
    all_headers = {"Accept": "application/json", **where.headers, **(headers or {})}
    if body is not None:
        all_headers.setdefault("Content-Type", "application/json")
    # http(s) only: target() checks the scheme.
    call = urllib.request.Request(url, data=body, method=method, headers=all_headers)  # noqa: S310
    try:
        with urllib.request.urlopen(call, timeout=timeout) as answer:  # noqa: S310
            status, payload = answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        payload = b""
        with contextlib.suppress(OSError):
            payload = exc.read()
        raise CliError(_error_line(exc.code, payload, exc.reason)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"cannot reach {url}: {_reason(exc)}") from None
    except Exception as exc:  # http.client's protocol errors: a server that is not HTTP
        raise Unreachable(f"cannot reach {url}: {type(exc).__name__} {exc}".rstrip()) from None
    try:
        return status, json.loads(payload)
    except ValueError:
        raise CliError(f"{url}: the answer ({status}) is not JSON") from None


def guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A command whose failures are one line on stderr (exit 1), whose Ctrl-C is a quiet exit
    (130) and whose closed stdout (``| head``) is no error."""

    @functools.wraps(run)
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except CliError as exc:
            print(f"couchdb-events: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            # Python would complain again when it flushes stdout at exit.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                return 0
            print(f"couchdb-events: {_reason(exc)}", file=sys.stderr)
            return 1

    return command
