"""Sandboxed workers, without a daemon: the document's ``sandbox`` field, the settings, the
bwrap command line, and what makes a sandboxed start fail (missing bwrap, a bwrap that cannot
make namespaces, an unknown user)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.config import Config
from couchdb_events.errors import ConfigError
from couchdb_events.model.sandbox import Sandbox, parse_sandbox
from couchdb_events.model.workers import parse_worker
from couchdb_events.workers.fence import account_for, fenced_argv
from couchdb_events.workers.launch import StartError
from couchdb_events.workers.sandbox import Account, bwrap_argv, keep_paths


def worker(config: Config, **fields: Any) -> Any:
    doc = {"_id": "w", "_rev": "1-a", "delegate": "w.py", "type": "python", **fields}
    return parse_worker({**doc, "_attachments": {"w.py": {}}}, config)


# -- the document and the settings ------------------------------------------------------------
def test_sandbox_field_true_false_object_and_the_default_setting() -> None:
    assert worker(Config()).sandbox is None
    assert worker(Config(), sandbox=False).sandbox is None
    work = Path("/srv/work")
    config = Config(sandbox=True, worker_user="couchjob", bwrap="/opt/bwrap", work_dir=work)
    box = worker(config).sandbox
    assert box == Sandbox(default_user="couchjob", bwrap="/opt/bwrap", work_dir=work)
    assert worker(config, sandbox=False).sandbox is None  # the document decides
    box = worker(Config(), sandbox={"network": True, "writable": [], "user": "bob"}).sandbox
    assert (box.network, box.writable, box.user) == (True, (), "bob")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("yes", "sandbox must be true, false or an object"),
        ({"net": False}, "sandbox: unknown keys ['net'] (known: network, writable, user)"),
        ({"network": "no"}, "sandbox.network must be true or false, not 'no'"),
        ({"writable": "data"}, 'sandbox.writable must be a list like ["data"]'),
        ({"writable": ["code"]}, "sandbox.writable: ['code'] cannot be made writable"),
        ({"user": ""}, "sandbox.user must be the name of a user account"),
        ({"user": 65534}, "sandbox.user must be the name of a user account, not 65534"),
    ],
)
def test_sandbox_mistakes_are_precise_worker_errors(value: Any, why: str) -> None:
    spec = worker(Config(), sandbox=value)
    assert spec.error is not None and spec.error.startswith("worker 'w': ")
    assert why in spec.error
    with pytest.raises(ValueError, match="sandbox"):
        parse_sandbox(value, False)


def test_sandbox_settings() -> None:
    config = Config.from_settings(
        {"sandbox": "true", "worker_user": "job", "bwrap": "/b", "sandbox_hide": "/a '/b c'"}
    )
    assert (config.sandbox, config.worker_user, config.bwrap) == (True, "job", "/b")
    assert config.sandbox_hide == (Path("/a"), Path("/b c"))
    assert Config.from_settings({"sandbox_hide": "None"}).sandbox_hide == ()
    with pytest.raises(ConfigError, match="not absolute paths"):
        Config.from_settings({"sandbox_hide": "relative/x"})
    with pytest.raises(ConfigError, match=r"\[couchdb_events\] sandbox = 'maybe': true or false"):
        Config.from_settings({"sandbox": "maybe"})


# -- the command line -------------------------------------------------------------------------
def pairs(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == option]


def test_bwrap_argv_hides_work_dir_and_config_and_binds_the_workers_own(tmp_path: Path) -> None:
    work, etc = tmp_path / "work", tmp_path / "opt" / "couchdb" / "etc"
    code, data = work / "workers" / "w" / "1-a", work / "data" / "w"
    for folder in (code, data, etc):
        folder.mkdir(parents=True)
    (etc / "local.ini").write_text("[couchdb_events]\ncouchdb_url = http://a:secret@h/\n")
    top = Path("/etc/hostname")  # a config file in a top-level folder: the file alone goes
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    box = Sandbox(
        work_dir=work, config_files=(etc / "local.ini", top), hide=(secret, tmp_path / "gone")
    )
    venv = etc / "venv"  # needed by the worker, inside a hidden folder: bound back
    argv = bwrap_argv("/usr/bin/bwrap", box, code, data, keep=[venv, Path("/usr")])
    assert argv[:5] == ["/usr/bin/bwrap", "--ro-bind", "/", "/", "--dev"]
    assert argv[-1] == "--"
    assert pairs(argv, "--tmpfs") == ["/tmp", str(etc), str(work)]
    assert pairs(argv, "--ro-bind")[1:] == [str(venv), str(code), "/dev/null", "/dev/null"]
    assert pairs(argv, "--bind") == [str(data)]
    # The folders leading to the bound ones are made first (so that they are 0755).
    made = pairs(argv, "--dir")
    wanted = [work / "workers", work / "workers" / "w", work / "data"]
    assert [Path(d) for d in made if Path(d) in wanted] == wanted
    assert argv.index(str(work / "data")) < argv.index("--bind")
    nulls = [argv[i + 2] for i, word in enumerate(argv) if argv[i + 1 : i + 2] == ["/dev/null"]]
    assert nulls == [str(top), str(secret)]  # local.ini went with its folder
    for option in ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert option in argv
    assert "--die-with-parent" in argv and pairs(argv, "--cap-drop") == ["ALL"]
    assert "--new-session" not in argv  # the pool kills the worker's process group
    assert pairs(argv, "--chdir") == [str(code)]
    assert "--cap-add" not in argv and "--uid" not in argv


def test_bwrap_argv_network_read_only_data_and_a_user(tmp_path: Path) -> None:
    box = Sandbox(network=True, writable=(), work_dir=tmp_path)
    code, data = tmp_path / "c", tmp_path / "d"
    argv = bwrap_argv("bwrap", box, code, data, account=Account("nobody", 65534, 65534))
    assert "--unshare-net" not in argv and "--bind" not in argv
    assert pairs(argv, "--ro-bind")[-1] == str(data)
    assert pairs(argv, "--cap-add") == ["CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"]
    inner = argv[argv.index("--") + 1 :]
    assert inner == [
        "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
        "--bounding-set=-all", "--no-new-privs", "--",
    ]  # fmt: skip


def test_keep_paths_are_the_interpreter_prefix_and_search_paths(tmp_path: Path) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    python = tmp_path / "venv" / "bin" / "python"
    python.symlink_to(sys.executable)
    found = keep_paths(python, [f"{tmp_path}:relative:/nonexistent", ""])
    assert found[0] == tmp_path / "venv" and tmp_path in found
    assert Path(sys.executable).resolve().parent.parent in found
    assert Path("relative") not in found and Path("/nonexistent") not in found


# -- what fails a sandboxed start -------------------------------------------------------------
def fence(spec: Any, tmp_path: Path) -> tuple[str, ...]:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "COUCHDB_EVENTS_DATA_DIR": str(data)}
    return asyncio.run(fenced_argv(spec, tmp_path, env))


def test_missing_bwrap_is_a_start_error(tmp_path: Path) -> None:
    spec = worker(Config(bwrap=str(tmp_path / "no-bwrap")), sandbox=True)
    with pytest.raises(StartError, match=r"asks for a sandbox, but bwrap .* was not found"):
        fence(spec, tmp_path)


def test_bwrap_that_cannot_make_namespaces_is_a_start_error(tmp_path: Path) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    spec = worker(Config(bwrap=str(fake)), sandbox=True)
    with pytest.raises(StartError) as info:
        fence(spec, tmp_path)
    assert "the sandbox cannot be made on this machine" in str(info.value)
    assert "No permissions to create new namespace" in str(info.value)
    assert "not run unfenced" in str(info.value)


def test_unknown_user_is_a_start_error() -> None:
    box = Sandbox(user="no-such-user-x")
    with pytest.raises(StartError, match="sandbox user 'no-such-user-x'"):
        account_for("w", box)
    if os.geteuid() == 0:
        with pytest.raises(
            StartError, match=r"does not exist on this machine \(the worker_user setting\)"
        ):
            account_for("w", Sandbox(default_user="no-such-user-x"))
        with pytest.raises(StartError, match="is root, not unprivileged"):
            account_for("w", Sandbox(user="root"))
        assert account_for("w", Sandbox()) == Account("nobody", 65534, 65534)
    else:
        assert account_for("w", Sandbox()) is None  # runs as the daemon's user


def test_daemon_mode_finds_couchdbs_ini_files_on_an_ancestors_command_line() -> None:
    child = "from couchdb_events.cli.common import couch_ini_files; print(couch_ini_files())"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    argv = [sys.executable, "-c", parent, "-couch_ini", "/a/default.ini", "/a/local.ini", "-x"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
    assert out.strip() == "(PosixPath('/a/default.ini'), PosixPath('/a/local.ini'))"


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bwrap is not installed")
def test_a_daemon_not_run_by_root_hides_its_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "opt" / "couchdb"  # CouchDB's user's home holds its databases
    (home / "data").mkdir(parents=True)
    entry = pwd.struct_passwd(("couchdb", "x", 4321, 4321, "", str(home), "/bin/sh"))
    monkeypatch.setattr(os, "geteuid", lambda: 4321)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: entry)
    spec = worker(Config(work_dir=home / "work"), sandbox=True)
    argv = fence(spec, tmp_path)
    assert pairs(list(argv), "--tmpfs")[1:] == [str(home), str(home / "work")]
    assert "setpriv" not in " ".join(argv[argv.index("--") :])  # no account to switch to
