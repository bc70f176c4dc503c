"""Configuration: defaults, converters and their errors, precedence, interpreters, URL redaction."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from couchdb_events.config import (
    DEFAULT_INTERPRETERS,
    INTERPRETERS_SECTION,
    SECTION,
    SETTINGS,
    Config,
    default_work_dir,
    redact_url,
)
from couchdb_events.errors import ConfigError, EventsError


def config_error(settings: dict[str, Any], **kwargs: Any) -> str:
    """The message of the ConfigError that building a Config from ``settings`` raises."""
    with pytest.raises(ConfigError) as info:
        Config.from_settings(settings, **kwargs)
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.couchdb_url == "http://127.0.0.1:5984/"
    assert config.bind_address == "127.0.0.1"
    assert config.port == 5985
    assert config.events_db == "events"
    assert config.workers_db == "workers"
    assert config.couchdb_timeout == 10.0
    assert config.startup_wait == 15.0
    assert config.log_level == "info"
    assert config.stop_timeout == 1.5
    assert config.processes == 1
    assert config.idle_timeout == 60.0
    assert config.max_queue == 1000
    assert config.max_body == 1024 * 1024
    assert dict(config.interpreters) == DEFAULT_INTERPRETERS


def test_empty_settings_give_the_defaults() -> None:
    assert Config.from_settings({}) == Config()


def test_every_field_is_a_setting_except_interpreters() -> None:
    fields = {f.name for f in dataclasses.fields(Config)}
    # config_files: where the settings came from (hidden from sandboxed workers)
    assert set(SETTINGS) == fields - {"interpreters", "config_files"}


def test_default_work_dir_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache/someone")
    assert default_work_dir() == Path("/var/cache/someone/couchdb-events")
    assert Config().work_dir == Path("/var/cache/someone/couchdb-events")


@pytest.mark.parametrize("value", [None, ""])
def test_default_work_dir_without_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert default_work_dir() == Path.home() / ".cache" / "couchdb-events"


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.port = 1  # type: ignore[misc]


def test_config_error_is_an_events_error() -> None:
    assert issubclass(ConfigError, EventsError)


# -- good values ------------------------------------------------------------------------------


def test_all_settings_converted() -> None:
    config = Config.from_settings(
        {
            "couchdb_url": " https://db.example.com:6984/prefix ",
            "bind_address": " 0.0.0.0 ",
            "port": " 8080 ",
            "events_db": "my_events$(1)+-/x",
            "workers_db": "w2",
            "work_dir": "/srv/ce",
            "couchdb_timeout": "2.5",
            "startup_wait": "30",
            "log_level": " DEBUG ",
            "stop_timeout": "0.25",
            "processes": "4",
            "idle_timeout": "1e3",
            "max_queue": "10",
            "max_body": "2048",
        }
    )
    assert config.couchdb_url == "https://db.example.com:6984/prefix/"
    assert config.bind_address == "0.0.0.0"
    assert config.port == 8080
    assert config.events_db == "my_events$(1)+-/x"
    assert config.workers_db == "w2"
    assert config.work_dir == Path("/srv/ce")
    assert config.couchdb_timeout == 2.5
    assert config.startup_wait == 30.0
    assert config.log_level == "debug"
    assert config.stop_timeout == 0.25
    assert config.processes == 4
    assert config.idle_timeout == 1000.0
    assert config.max_queue == 10
    assert config.max_body == 2048


def test_url_keeps_its_trailing_slash() -> None:
    config = Config.from_settings({"couchdb_url": "http://localhost:5984/"})
    assert config.couchdb_url == "http://localhost:5984/"


def test_work_dir_expands_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    config = Config.from_settings({"work_dir": "~/ce"})
    assert config.work_dir == Path("/home/someone/ce")


@pytest.mark.parametrize("port", ["0", "1", "65535"])
def test_port_bounds_accepted(port: str) -> None:
    assert Config.from_settings({"port": port}).port == int(port)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "Warning"])
def test_log_levels(level: str) -> None:
    assert Config.from_settings({"log_level": level}).log_level == level.lower()


# -- bad values: the error names the key and the value -----------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("port", "abc", "not a port number"),
        ("port", "70000", "between 0 and 65535"),
        ("port", "-1", "between 0 and 65535"),
        ("port", "80.5", "not a port number"),
        ("processes", "0", "at least 1"),
        ("processes", "-3", "at least 1"),
        ("processes", "two", "not a whole number"),
        ("processes", "1.5", "not a whole number"),
        ("max_queue", "0", "at least 1"),
        ("max_body", "lots", "not a whole number"),
        ("couchdb_timeout", "soon", "not a number of seconds"),
        ("couchdb_timeout", "0", "positive number of seconds"),
        ("startup_wait", "-1", "positive number of seconds"),
        ("stop_timeout", "nan", "positive number of seconds"),
        ("idle_timeout", "inf", "positive number of seconds"),
        ("idle_timeout", "-inf", "positive number of seconds"),
        ("couchdb_url", "ftp://x", "not an http(s) URL"),
        ("couchdb_url", "localhost:5984", "not an http(s) URL"),
        ("couchdb_url", "http://", "not an http(s) URL"),
        ("couchdb_url", "http://host:99999/", "bad port"),
        ("couchdb_url", "http://host:abc/", "bad port"),
        ("events_db", "Events", "not a CouchDB database name"),
        ("events_db", "1abc", "not a CouchDB database name"),
        ("events_db", "_users", "not a CouchDB database name"),
        ("workers_db", "my workers", "not a CouchDB database name"),
        ("workers_db", "a.b", "not a CouchDB database name"),
        ("workers_db", "évents", "not a CouchDB database name"),
        ("workers_db", "w²", "not a CouchDB database name"),
        ("log_level", "verbose", "one of debug, info, warning, error"),
    ],
)
def test_bad_value_names_key_and_value(key: str, value: str, why: str) -> None:
    message = config_error({key: value})
    assert message.startswith(f"[{SECTION}] {key} = {value!r}")
    assert why in message


@pytest.mark.parametrize("key", [k for k in SETTINGS if k not in ("pip_args", "npm_args")])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_values_are_refused_naming_the_key(key: str, value: str) -> None:
    message = config_error({key: value})
    assert f"[{SECTION}] {key}" in message


def test_tool_arguments_may_be_empty_and_are_split_like_a_shell() -> None:
    config = Config.from_settings({"pip_args": " ", "npm_args": "--registry 'http://a b/'"})
    assert (config.pip_args, config.npm_args) == ((), ("--registry", "http://a b/"))
    assert "No closing quotation" in config_error({"pip_args": "--index-url 'x"})


@pytest.mark.parametrize("key", ["bind_address", "work_dir"])
def test_empty_text_says_empty(key: str) -> None:
    assert config_error({key: " "}) == f"[{SECTION}] {key} is empty"


def test_url_error_hides_the_password() -> None:
    message = config_error({"couchdb_url": "ftp://admin:secret@host/"})
    assert "secret" not in message
    assert "ftp://admin:*****@host/" in message


@pytest.mark.parametrize(
    "url", ["http://admin:secret@host:99999/", "http://admin:secret@host:abc/"]
)
def test_url_with_password_and_bad_port_is_a_config_error(url: str) -> None:
    message = config_error({"couchdb_url": url})
    assert "bad port" in message
    assert "secret" not in message


# -- unknown keys, overrides -------------------------------------------------------------------


def test_unknown_setting_refused_listing_the_known_ones() -> None:
    message = config_error({"prot": "5985"})
    assert message.startswith(f"[{SECTION}] prot: unknown setting")
    assert f"(known: {', '.join(sorted(SETTINGS))})" in message


def test_unknown_override_refused() -> None:
    message = config_error({}, overrides={"verbose": True})
    assert "verbose: unknown setting" in message


def test_overrides_beat_settings() -> None:
    config = Config.from_settings(
        {"port": "1000", "log_level": "error", "processes": "2"},
        overrides={"port": 2000, "log_level": "debug"},
    )
    assert config.port == 2000
    assert config.log_level == "debug"
    assert config.processes == 2


def test_none_overrides_are_ignored() -> None:
    config = Config.from_settings(
        {"port": "1000"}, overrides={"port": None, "log_level": None, "nonsense": None}
    )
    assert config.port == 1000
    assert config.log_level == "info"


def test_none_settings_are_ignored() -> None:
    assert Config.from_settings({"port": None}).port == 5985


def test_overrides_of_other_types_are_converted_and_checked() -> None:
    config = Config.from_settings({}, overrides={"work_dir": Path("/srv/x"), "stop_timeout": 3})
    assert config.work_dir == Path("/srv/x")
    assert config.stop_timeout == 3.0
    message = config_error({}, overrides={"port": 70000})
    assert message.startswith(f"[{SECTION}] port = '70000'")


def test_bad_override_is_an_error_even_with_a_good_setting() -> None:
    message = config_error({"processes": "2"}, overrides={"processes": 0})
    assert f"[{SECTION}] processes = '0'" in message


# -- interpreters ------------------------------------------------------------------------------


def test_interpreters_merge_over_the_defaults() -> None:
    config = Config.from_settings(
        {}, interpreters={"node": "/opt/node/bin/node --max-old-space-size=64", "lua": "lua5.4"}
    )
    assert config.interpreters["node"] == ("/opt/node/bin/node", "--max-old-space-size=64")
    assert config.interpreters["lua"] == ("lua5.4",)
    assert config.interpreters["python"] == ("python3", "-u")
    assert set(config.interpreters) == set(DEFAULT_INTERPRETERS) | {"lua"}


def test_interpreter_command_is_split_like_a_shell() -> None:
    config = Config.from_settings(
        {}, interpreters={"py": "'/opt/my python/bin/python3' -u -X \"utf8 mode\""}
    )
    assert config.interpreters["py"] == ("/opt/my python/bin/python3", "-u", "-X", "utf8 mode")


def test_interpreters_do_not_change_the_default_table() -> None:
    before = dict(DEFAULT_INTERPRETERS)
    Config.from_settings({}, interpreters={"node": "nodejs"})
    assert before == DEFAULT_INTERPRETERS


@pytest.mark.parametrize("command", ["", "   "])
def test_empty_interpreter_refused(command: str) -> None:
    message = config_error({}, interpreters={"node": command})
    assert message == f"[{INTERPRETERS_SECTION}] node is empty"


def test_interpreter_that_is_not_a_string_refused() -> None:
    message = config_error({}, interpreters={"node": ["node"]})
    assert message == f"[{INTERPRETERS_SECTION}] node: must be a command line"


def test_interpreter_with_unbalanced_quote_is_a_config_error() -> None:
    message = config_error({}, interpreters={"node": "'/opt/node"})
    assert message.startswith(f'[{INTERPRETERS_SECTION}] node = "\'/opt/node"')
    assert "quotation" in message


# -- URLs for display --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://admin:secret@127.0.0.1:5984/", "http://admin:*****@127.0.0.1:5984/"),
        ("https://admin:secret@db.example.com/", "https://admin:*****@db.example.com/"),
        ("http://admin:secret@[::1]:5984/", "http://admin:*****@[::1]:5984/"),
        ("http://admin:secret@[fe80::1]/", "http://admin:*****@[fe80::1]/"),
        ("http://admin:se@cr:et@host/db?x=1#f", "http://admin:*****@host/db?x=1#f"),
        ("http://admin:@host/", "http://admin:*****@host/"),
        ("http://:secret@host/", "http://:*****@host/"),
        ("http://admin:secret@Host.Example:5984/", "http://admin:*****@Host.Example:5984/"),
        ("http://admin:secret@host:99999/", "http://admin:*****@host:99999/"),
    ],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5984/",
        "http://admin@host/",
        "https://[::1]:6984/db",
        "not a url at all",
    ],
)
def test_redact_url_without_password_is_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_display_url() -> None:
    config = Config.from_settings({"couchdb_url": "http://admin:secret@localhost:5984"})
    assert config.couchdb_url == "http://admin:secret@localhost:5984/"
    assert config.display_url == "http://admin:*****@localhost:5984/"
    assert Config().display_url == "http://127.0.0.1:5984/"
