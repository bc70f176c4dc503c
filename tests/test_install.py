"""``install.sh``, run for real: its checks, the sections it prints, ``--merge-into`` and the
databases it creates.

Creating a virtualenv and installing into it takes a while, so it happens once, into a temporary
folder, for the tests marked ``slow``; every other test fails before anything is installed.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from couchdb_events import __version__
from couchdb_events.config import (
    DEFAULT_INTERPRETERS,
    INTERPRETERS_SECTION,
    SECTION,
    SETTINGS,
    Config,
    redact_url,
)
from couchdb_events.couch.embedded import free_port
from tests.couch import CouchServer, server_with_admin, with_credentials
from tests.daemon_host import http

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "install.sh"
EXAMPLE = ROOT / "local.ini.example"
SECTIONS = ["os_daemons", "httpd_global_handlers", SECTION, INTERPRETERS_SECTION]
PLACEHOLDER_URL = "http://admin:PASSWORD@127.0.0.1:5984/"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """install.sh with ``args``; COUCHDB_URL and PYTHON from the test's environment left out."""
    base = {k: v for k, v in os.environ.items() if k not in ("COUCHDB_URL", "PYTHON")}
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd or ROOT,
        timeout=600,
        check=False,
    )


def ini(text: str) -> configparser.ConfigParser:
    """Parsed as ``couchdb-events serve`` parses, but strict: a duplicate section or key fails."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, comment_prefixes=(";",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def headers(text: str) -> list[str]:
    return re.findall(r"(?m)^\[([^\]]+)\]\s*$", text)


def commented_defaults(text: str, section: str) -> dict[str, str]:
    """The ``;key = value`` lines of one section (``;key =``: empty by default)."""
    body = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r"(?m)^;(\w+) =(?: (.+))?$", body))


# -- no installing -------------------------------------------------------------------------------
def test_help_lists_every_option() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: ./install.sh [OPTIONS]")
    for option in (
        "--venv DIR",
        "--dev",
        "--reinstall",
        "--with-pouchdb",
        "--couchdb-url URL",
        "--events-db NAME",
        "--workers-db NAME",
        "--work-dir DIR",
        "--merge-into FILE",
        "--demo",
        "COUCHDB_URL",
        "PYTHON",
    ):
        assert option in result.stdout
    assert result.stderr == ""


def test_unknown_option_and_missing_value_are_usage_errors() -> None:
    result = run("--frobnicate")
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr
    result = run("--venv")
    assert result.returncode == 2
    assert "--venv needs a value" in result.stderr


def test_missing_python_is_named(tmp_path: Path) -> None:
    result = run("--venv", str(tmp_path / "venv"), env={"PYTHON": "no-such-python3"})
    assert result.returncode == 1
    assert "no-such-python3 not found" in result.stderr
    assert "Python 3.10 or newer" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_old_python_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\necho 3.8\n")
    old.chmod(0o755)
    result = run("--venv", str(tmp_path / "venv"), env={"PYTHON": str(old)})
    assert result.returncode == 1
    assert "needs Python 3.10 or newer" in result.stderr
    assert "Python 3.8" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_missing_node_is_named_before_installing(tmp_path: Path) -> None:
    # A PATH with every command of this machine but Node.js and npm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            name = entry.name
            if name in ("node", "nodejs", "npm", "npx", "corepack") or (bin_dir / name).exists():
                continue
            (bin_dir / name).symlink_to(entry.path)
    result = run(
        "--with-pouchdb",
        "--venv",
        str(tmp_path / "venv"),
        env={"PATH": str(bin_dir), "PYTHON": sys.executable},
    )
    assert result.returncode == 1
    assert "node not found" in result.stderr
    assert "Node.js and npm" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_bad_database_name_is_refused_before_installing(tmp_path: Path) -> None:
    result = run("--venv", str(tmp_path / "venv"), "--events-db", "Events")
    assert result.returncode == 1
    assert "events_db = 'Events': not a CouchDB database name" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_unreachable_couchdb_is_reported_without_the_password(tmp_path: Path) -> None:
    url = f"http://admin:s3cr3t-pw@127.0.0.1:{free_port()}/"
    result = run("--venv", str(tmp_path / "venv"), env={"COUCHDB_URL": url})
    assert result.returncode == 1
    assert "CouchDB does not answer at http://admin:*****@127.0.0.1:" in result.stderr
    assert "s3cr3t-pw" not in result.stderr + result.stdout
    assert not (tmp_path / "venv").exists()


def test_merging_needs_a_venv_path_without_spaces(tmp_path: Path) -> None:
    venv = tmp_path / "with space" / "venv"
    result = run("--venv", str(venv), "--merge-into", str(tmp_path / "local.ini"))
    assert result.returncode == 1
    assert "contains a space" in result.stderr
    assert not venv.exists()
    assert not (tmp_path / "local.ini").exists()


def test_merging_into_a_file_in_a_missing_folder_is_refused(tmp_path: Path) -> None:
    result = run(
        "--venv", str(tmp_path / "venv"), "--merge-into", str(tmp_path / "no" / "local.ini")
    )
    assert result.returncode == 1
    assert "its folder does not exist" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_example_shows_every_setting_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    text = EXAMPLE.read_text(encoding="utf-8")
    assert headers(text) == SECTIONS
    parser = ini(text)
    assert dict(parser[SECTION]) == {"couchdb_url": PLACEHOLDER_URL}
    assert dict(parser[INTERPRETERS_SECTION]) == {}
    defaults = commented_defaults(text, SECTION)
    assert set(defaults) | {"couchdb_url"} == set(SETTINGS)
    assert Config.from_settings(defaults) == Config()
    interpreters = commented_defaults(text, INTERPRETERS_SECTION)
    assert Config.from_settings({}, interpreters).interpreters == DEFAULT_INTERPRETERS
    assert set(interpreters) == set(DEFAULT_INTERPRETERS)
    assert parser["os_daemons"]["couchdb_events"] == "@PREFIX@/bin/couchdb-events daemon"
    assert parser["httpd_global_handlers"]["_events"] == (
        '{couch_httpd_proxy, handle_proxy_req, <<"http://127.0.0.1:5985">>}'
    )


def test_external_mode_is_offered_for_couchdb_1x_only() -> None:
    """CouchDB 2.x breaks externals (500 noproc; then every second request crashes its
    couch_external_server): nothing may offer external mode for it."""
    dash = "\N{EN DASH}"
    preamble = EXAMPLE.read_text(encoding="utf-8").split("\n[", 1)[0]
    assert "[httpd_global_handlers] (CouchDB 0.11 to 1.7 only):" in preamble
    assert "; Not on CouchDB 2.x: 2.0 - 2.2 answer such requests 500 noproc" in preamble
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"| 0.11 {dash} 1.7 | external" in readme
    assert f"### CouchDB 0.11 {dash} 1.7: external" in readme
    assert "External mode does not work on CouchDB 2.x, because of CouchDB itself." in readme
    # No range from 0.11 reaches 2.x any more, in any spelling.
    assert not re.search(rf"0\.11 *(-|{dash}|to) *2\.", readme + preamble)
    helped = subprocess.run(
        [sys.executable, "-m", "couchdb_events", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert "(CouchDB 0.11 - 1.7;" in helped.stdout and "2.2" not in helped.stdout
    assert "external" not in run("--help").stdout


# -- one real virtualenv -----------------------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    venv: Path
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("install") / "venv"
    result = run("--venv", str(venv))
    assert result.returncode == 0, result.stderr
    return Installed(venv, result)


@pytest.mark.slow
def test_first_run_creates_the_venv_and_prints_the_sections(installed: Installed) -> None:
    venv, result = installed.venv, installed.first
    assert f"==> creating virtualenv {venv}" in result.stderr
    assert "==> installing couchdb-events into" in result.stderr
    assert f"couchdb-events {__version__}" in result.stderr
    assert "couchdb_url holds a placeholder" in result.stderr
    version = subprocess.run(
        [str(venv / "bin" / "couchdb-events"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert version.stdout.strip() == f"couchdb-events {__version__}"

    # stdout is the sections alone: usable as `./install.sh > couchdb-events.ini`.
    assert headers(result.stdout) == SECTIONS
    assert "@PREFIX@" not in result.stdout
    parser = ini(result.stdout)
    command = parser["os_daemons"]["couchdb_events"]
    assert command == f"{venv}/bin/couchdb-events daemon"
    assert os.access(command.split(" ")[0], os.X_OK)
    assert parser["httpd_global_handlers"]["_events"].endswith('<<"http://127.0.0.1:5985">>}')
    assert "couch_httpd_external" not in result.stdout  # external mode is never offered
    # Only the placeholder URL is set; work_dir keeps couchdb-events' own default.
    assert dict(parser[SECTION]) == {"couchdb_url": PLACEHOLDER_URL}
    Config.from_settings(dict(parser[SECTION]), dict(parser[INTERPRETERS_SECTION]))


@pytest.mark.slow
def test_second_run_skips_pip_and_fills_in_the_settings(
    installed: Installed, tmp_path: Path
) -> None:
    result = run(
        "--venv",
        str(installed.venv),
        "--work-dir",
        "work",
        "--events-db",
        "my_events",
        "--workers-db",
        "my_workers",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "already installed" in result.stderr
    assert "creating virtualenv" not in result.stderr
    section = dict(ini(result.stdout)[SECTION])
    assert section == {
        "couchdb_url": PLACEHOLDER_URL,
        "events_db": "my_events",
        "workers_db": "my_workers",
        "work_dir": str(tmp_path / "work"),
    }


SAMPLE_LOCAL_INI = """\
; CouchDB Configuration Settings

[couchdb]
;max_document_size = 4294967296 ; bytes
uuid = 0123456789abcdef

[httpd]
port = 5984

[os_daemons]
other_daemon = /usr/local/bin/other-daemon --quiet
;couchdb_events = /old/place/bin/couchdb-events daemon

[couchdb_events]
couchdb_url = http://admin:kept-password@127.0.0.1:5984/
processes = 4

[admins]
admin = -pbkdf2-abcdef,0123,10

[couchdb_events]
log_level = debug
"""


@pytest.mark.slow
def test_merge_into_twice_gives_one_copy_of_each_section(
    installed: Installed, tmp_path: Path
) -> None:
    local = tmp_path / "local.ini"
    local.write_text(SAMPLE_LOCAL_INI)
    first = run("--venv", str(installed.venv), "--merge-into", str(local))
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert f"(the previous content is in {local}.bak)" in first.stderr
    assert (tmp_path / "local.ini.bak").read_text() == SAMPLE_LOCAL_INI
    merged = local.read_text()

    second = run("--venv", str(installed.venv), "--merge-into", str(local))
    assert second.returncode == 0, second.stderr
    assert "left as it is" in second.stderr
    assert local.read_text() == merged
    assert (tmp_path / "local.ini.bak").read_text() == SAMPLE_LOCAL_INI

    found = headers(merged)
    assert sorted(found) == sorted(["couchdb", "httpd", "admins", *SECTIONS])
    parser = ini(merged)  # strict: would fail on a duplicate section or key
    # Unrelated sections and the other daemon stay as they were.
    assert merged.startswith("; CouchDB Configuration Settings\n\n[couchdb]\n")
    assert ";max_document_size = 4294967296 ; bytes\n" in merged
    assert dict(parser["couchdb"]) == {"uuid": "0123456789abcdef"}
    assert dict(parser["admins"]) == {"admin": "-pbkdf2-abcdef,0123,10"}
    assert parser["os_daemons"]["other_daemon"] == "/usr/local/bin/other-daemon --quiet"
    assert parser["os_daemons"]["couchdb_events"] == f"{installed.venv}/bin/couchdb-events daemon"
    assert "/old/place/" not in merged
    # The settings made in the old [couchdb_events] sections are kept, the password included.
    assert dict(parser[SECTION]) == {
        "couchdb_url": "http://admin:kept-password@127.0.0.1:5984/",
        "processes": "4",
        "log_level": "debug",
    }
    assert "couchdb_url holds a placeholder" not in first.stderr
    assert parser["httpd_global_handlers"]["_events"].startswith("{couch_httpd_proxy,")
    config = Config.from_settings(dict(parser[SECTION]), dict(parser[INTERPRETERS_SECTION]))
    assert config.processes == 4


@pytest.mark.slow
def test_merge_into_a_new_file_writes_the_sections(installed: Installed, tmp_path: Path) -> None:
    local_d = tmp_path / "local.d"
    local_d.mkdir()
    target = local_d / "couchdb-events.ini"
    result = run("--venv", str(installed.venv), "--merge-into", str(target), "--events-db", "evs")
    assert result.returncode == 0, result.stderr
    assert headers(target.read_text()) == SECTIONS
    assert not (local_d / "couchdb-events.ini.bak").exists()
    assert ini(target.read_text())[SECTION]["events_db"] == "evs"


# -- a real CouchDB-compatible server ----------------------------------------------------------
# Databases get names from new_db_name: removed at the end of the test, whatever happens.
def db_exists(couch_url: str, name: str) -> bool:
    status, _h, body = http("GET", couch_url + name, timeout=10)
    if status == 404:
        return False
    assert status == 200, body
    return bool(body["db_name"] == name)


def delete_db(couch_url: str, name: str) -> None:
    status, _h, body = http("DELETE", couch_url + name, timeout=10)
    assert status in (200, 202, 404), body


@pytest.mark.slow
@pytest.mark.integration
def test_creates_the_databases_idempotently(
    installed: Installed, couch_url: str, new_db_name: Callable[[str], str]
) -> None:
    tag = new_db_name("inst")
    events, workers = f"{tag}_events", f"{tag}_workers"
    assert not db_exists(couch_url, events)
    assert not db_exists(couch_url, workers)
    venv = str(installed.venv)
    args = ("--venv", venv, "--with-pouchdb", "--events-db", events, "--workers-db", workers)
    try:
        first = run(*args, "--couchdb-url", couch_url)
        assert first.returncode == 0, first.stderr
        assert f"answers at {redact_url(couch_url)}" in first.stderr
        assert "PouchDB Server is already installed" in first.stderr
        assert f"==> created database {events}" in first.stderr
        assert f"==> created database {workers}" in first.stderr
        assert f"==> database {events}: added _design/couchdb_events (rev 1-" in first.stderr
        # CouchDB 3 gives a new database an admin-only _security object of its own.
        assert (
            f"==> database {workers}: set _security: only server admins may read it" in first.stderr
            or f"==> database {workers}: _security is in place (admins: roles _admin, "
            "members: roles _admin)"
            in first.stderr
        )
        assert (
            f"==> the {events} and {workers} databases are now writable (and readable) by "
            "CouchDB server admins only"
        ) in first.stderr
        assert db_exists(couch_url, events)
        assert db_exists(couch_url, workers)
        section = dict(ini(first.stdout)[SECTION])
        assert section == {"couchdb_url": couch_url, "events_db": events, "workers_db": workers}

        second = run(*args, env={"COUCHDB_URL": couch_url})
        assert second.returncode == 0, second.stderr
        assert f"==> database {events} already exists" in second.stderr
        assert f"==> database {workers} already exists" in second.stderr
        assert f"==> database {events}: _design/couchdb_events is in place (rev 1-" in (
            second.stderr
        )
        assert f"==> database {workers}: _security is in place" in second.stderr
        assert db_exists(couch_url, events)
        assert db_exists(couch_url, workers)
        assert second.stdout == first.stdout
    finally:
        delete_db(couch_url, events)
        delete_db(couch_url, workers)


@pytest.mark.slow
@pytest.mark.integration
def test_an_existing_database_is_fine(
    installed: Installed,
    couch_url: str,
    fresh_db: Callable[[str], str],
    new_db_name: Callable[[str], str],
) -> None:
    events = fresh_db("inst")
    workers = new_db_name("inst")
    try:
        result = run(
            "--venv", str(installed.venv),
            "--couchdb-url", couch_url,
            "--events-db", events,
            "--workers-db", workers,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"==> database {events} already exists" in result.stderr
        assert f"==> created database {workers}" in result.stderr
        assert db_exists(couch_url, workers)
    finally:
        delete_db(couch_url, workers)


@pytest.mark.slow
@pytest.mark.integration
def test_a_non_admins_url_is_refused_without_the_password(
    installed: Installed, couch: CouchServer
) -> None:
    # A server with an admin (on PouchDB Server one of its own: the session's server must stay
    # an admin party) and a user who is not one.
    with server_with_admin(couch) as server:
        bob, password = server.add_user("bob")
        events, workers = server.new_db_name("inst"), server.new_db_name("inst")
        result = run(
            "--venv", str(installed.venv),
            "--couchdb-url", with_credentials(server.public_url, (bob, password)),
            "--events-db", events,
            "--workers-db", workers,
        )  # fmt: skip
        assert result.returncode == 1
        assert f"knows '{bob}', but not as a server admin" in result.stderr
        assert f"http://{bob}:*****@" in result.stderr
        assert password not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
        assert "writable" not in result.stderr
        assert result.stdout == ""
        # Nothing was created (and the server is still up to say so).
        for db in (events, workers):
            assert http("GET", server.url + db)[0] == 404


@pytest.mark.slow
@pytest.mark.integration
def test_bad_credentials_are_reported_without_the_password(
    installed: Installed, couch: CouchServer
) -> None:
    url = with_credentials(couch.public_url, ("nobody", "wr0ng-pw"))
    result = run("--venv", str(installed.venv), "--couchdb-url", url)
    assert result.returncode == 1
    assert "rejects the credentials" in result.stderr
    assert "http://nobody:*****@" in result.stderr
    assert "wr0ng-pw" not in result.stderr + result.stdout


def test_install_sh_is_executable() -> None:
    assert os.access(INSTALL, os.X_OK)


@pytest.mark.slow
@pytest.mark.e2e
def test_demo_runs_the_email_example(installed: Installed) -> None:
    # What the README's first command does, in the virtualenv installed above.
    result = run("--venv", str(installed.venv), "--demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PouchDB Server is already installed" in result.stderr
    assert "==> running the demo:" in result.stderr
    assert "Subject: Event email_event fired" in result.stdout
    assert "[os_daemons]" not in result.stdout  # the demo's output, not the sections


def test_help_and_version_import_nothing_of_the_service() -> None:
    """``couchdb-events --help`` and ``--version`` answer without importing aiohttp,
    python-couchdb or rich: a command's module is imported when that command runs."""
    probe = (
        "import sys\n"
        "from couchdb_events import cli\n"
        "for argv in (['--version'], ['--help'], ['serve', '--help'], ['runs', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('aiohttp', 'couchdb', 'psutil', 'couchdb_events.core', 'rich')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert f"couchdb-events {__version__}" in result.stdout
    assert "usage: couchdb-events serve" in result.stdout
    assert "usage: couchdb-events runs" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr
