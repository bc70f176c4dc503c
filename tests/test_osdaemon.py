"""CouchDB's os_daemon channel over in-memory streams, and the logging handler that uses it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from couchdb_events import logs
from couchdb_events.hosts.osdaemon import (
    ChannelClosed,
    ChannelHandler,
    DaemonChannel,
    encode,
    log_command,
)


def channel(answers: bytes = b"") -> tuple[DaemonChannel, io.BytesIO, io.BytesIO]:
    """A channel reading ``answers`` as CouchDB's replies; returns it with its stdin and stdout."""
    stdin = io.BytesIO(answers)
    stdout = io.BytesIO()
    return DaemonChannel(stdin, stdout), stdin, stdout


def written(stdout: io.BytesIO) -> list[Any]:
    data = stdout.getvalue()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


# -- encoding ----------------------------------------------------------------------------------


def test_encode_is_one_compact_ascii_line() -> None:
    assert encode(["get", "couchdb_events"]) == b'["get","couchdb_events"]\n'
    assert encode(["log", "caf\u00e9\nx"]) == b'["log","caf\\u00e9\\nx"]\n'


@pytest.mark.parametrize(
    ("level", "sent"),
    [
        ("debug", "debug"),
        ("info", "info"),
        ("error", "error"),
        ("warning", "error"),
        ("critical", "error"),
        ("notset", "info"),
        ("whatever", "info"),
    ],
)
def test_log_command_levels(level: str, sent: str) -> None:
    assert log_command("msg", level) == ["log", "msg", {"level": sent}]


def test_log_command_default_level() -> None:
    assert log_command("msg") == ["log", "msg", {"level": "info"}]


# -- get ---------------------------------------------------------------------------------------


def test_get_section() -> None:
    ch, stdin, stdout = channel(b'{"port": "5985", "processes": "2"}\n')
    assert ch.get("couchdb_events") == {"port": "5985", "processes": "2"}
    assert stdout.getvalue() == b'["get","couchdb_events"]\n'
    assert stdin.read() == b""


def test_get_unknown_section_is_empty() -> None:
    ch, _stdin, _stdout = channel(b"{}\n")
    assert ch.get("nothing") == {}


def test_get_key() -> None:
    ch, _stdin, stdout = channel(b'"5985"\n')
    assert ch.get("couchdb_events", "port") == "5985"
    assert stdout.getvalue() == b'["get","couchdb_events","port"]\n'


def test_get_missing_key_is_none() -> None:
    ch, _stdin, _stdout = channel(b"null\n")
    assert ch.get("couchdb_events", "port") is None


def test_get_reads_one_answer_per_request_in_order() -> None:
    ch, stdin, stdout = channel(b'{"a": "1"}\n"x"\n{"b": "2"}\n')
    assert ch.get("s1") == {"a": "1"}
    assert ch.get("s2", "k") == "x"
    assert ch.get("s3") == {"b": "2"}
    assert written(stdout) == [["get", "s1"], ["get", "s2", "k"], ["get", "s3"]]
    assert stdin.read() == b""


def test_get_answer_without_final_newline() -> None:
    ch, _stdin, _stdout = channel(b'{"a": "1"}')
    assert ch.get("s") == {"a": "1"}


def test_get_at_eof_raises_channel_closed() -> None:
    ch, _stdin, stdout = channel(b"")
    with pytest.raises(ChannelClosed):
        ch.get("couchdb_events")
    assert stdout.getvalue() == b'["get","couchdb_events"]\n'


def test_channel_closed_is_an_eof_error() -> None:
    assert issubclass(ChannelClosed, EOFError)


@pytest.mark.parametrize("line", [b"not json\n", b"\n", b"{\n", b"\xff\n"])
def test_get_with_a_non_json_answer_raises_channel_closed(line: bytes) -> None:
    ch, _stdin, _stdout = channel(line)
    with pytest.raises(ChannelClosed, match="not JSON"):
        ch.get("couchdb_events", "port")


@pytest.mark.parametrize("answer", [b'"text"\n', b"null\n", b"[1]\n", b"3\n"])
def test_get_section_answered_with_a_non_object_raises(answer: bytes) -> None:
    ch, _stdin, _stdout = channel(answer)
    with pytest.raises(ChannelClosed, match="couchdb_events"):
        ch.get("couchdb_events")


# -- register and log: no answer ---------------------------------------------------------------


def test_register_writes_without_reading() -> None:
    ch, stdin, stdout = channel(b'{"untouched": "1"}\n')
    ch.register("couchdb_events")
    ch.register("couchdb_events_interpreters", "node")
    assert stdout.getvalue() == (
        b'["register","couchdb_events"]\n["register","couchdb_events_interpreters","node"]\n'
    )
    assert stdin.tell() == 0


def test_log_writes_without_reading() -> None:
    ch, stdin, stdout = channel(b'{"untouched": "1"}\n')
    ch.log("msg")
    assert stdout.getvalue() == b'["log","msg",{"level":"info"}]\n'
    assert stdin.tell() == 0


@pytest.mark.parametrize(
    ("level", "sent"),
    [("debug", "debug"), ("info", "info"), ("error", "error"), ("warning", "error"), ("x", "info")],
)
def test_log_levels(level: str, sent: str) -> None:
    ch, _stdin, stdout = channel()
    ch.log("msg", level)
    assert written(stdout) == [["log", "msg", {"level": sent}]]


def test_log_message_with_newlines_stays_one_line() -> None:
    ch, _stdin, stdout = channel()
    ch.log("line one\nline two \u00e9")
    assert stdout.getvalue().count(b"\n") == 1
    assert written(stdout) == [["log", "line one\nline two \u00e9", {"level": "info"}]]


def test_log_to_a_closed_stdout_does_not_raise() -> None:
    ch, _stdin, stdout = channel()
    stdout.close()
    ch.log("nobody listens")


class BrokenPipe(io.BytesIO):
    def write(self, data: Any) -> int:
        raise BrokenPipeError("gone")


def test_log_to_a_broken_pipe_does_not_raise() -> None:
    ch = DaemonChannel(io.BytesIO(), BrokenPipe())
    ch.log("nobody listens")


def test_register_to_a_broken_pipe_raises() -> None:
    ch = DaemonChannel(io.BytesIO(), BrokenPipe())
    with pytest.raises(BrokenPipeError):
        ch.register("couchdb_events")


# -- waiting for EOF ---------------------------------------------------------------------------


def test_wait_for_eof_returns_at_eof() -> None:
    ch, stdin, _stdout = channel(b"")
    ch.wait_for_eof()
    assert stdin.read() == b""


def test_wait_for_eof_ignores_stray_lines() -> None:
    ch, stdin, stdout = channel(b'{"stray": 1}\nnot json\n\n"x"')
    ch.wait_for_eof()
    assert stdin.read() == b""
    assert stdout.getvalue() == b""


def test_wait_for_eof_returns_when_stdin_is_closed() -> None:
    ch, stdin, _stdout = channel(b"line\n")
    stdin.close()
    ch.wait_for_eof()


# -- the logging handler -----------------------------------------------------------------------


@pytest.fixture
def logger_and_output() -> Iterator[tuple[logging.Logger, io.BytesIO]]:
    """A private logger whose only handler is a ChannelHandler writing to an in-memory stdout."""
    ch, _stdin, stdout = channel()
    logger = logging.Logger("test_osdaemon.private", logging.DEBUG)
    logger.propagate = False
    logger.addHandler(ChannelHandler(ch))
    yield logger, stdout


def test_channel_handler_sends_log_commands(
    logger_and_output: tuple[logging.Logger, io.BytesIO],
) -> None:
    logger, stdout = logger_and_output
    logger.debug("d %s", 1)
    logger.info("i")
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    assert written(stdout) == [
        ["log", "couchdb-events: d 1", {"level": "debug"}],
        ["log", "couchdb-events: i", {"level": "info"}],
        ["log", "couchdb-events: w", {"level": "error"}],
        ["log", "couchdb-events: e", {"level": "error"}],
        ["log", "couchdb-events: c", {"level": "error"}],
    ]


def test_channel_handler_includes_the_traceback_on_one_line(
    logger_and_output: tuple[logging.Logger, io.BytesIO],
) -> None:
    logger, stdout = logger_and_output
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed")
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 1
    [(command, message, options)] = [json.loads(line) for line in lines]
    assert command == "log"
    assert message.startswith("couchdb-events: it failed\nTraceback")
    assert "RuntimeError: boom" in message
    assert options == {"level": "error"}


def test_channel_handler_after_couchdb_has_gone(
    logger_and_output: tuple[logging.Logger, io.BytesIO],
) -> None:
    logger, stdout = logger_and_output
    stdout.close()
    logger.error("nowhere to go")


@pytest.fixture
def package_logger() -> Iterator[logging.Logger]:
    """The package logger, restored afterwards."""
    logger = logging.getLogger(logs.LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    yield logger
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    access.setLevel(access_level)


def test_setup_with_a_channel(package_logger: logging.Logger) -> None:
    ch, _stdin, stdout = channel()
    logger = logs.setup("warning", ChannelHandler(ch))
    assert logger is package_logger
    assert logger.propagate is False
    assert [type(h) for h in logger.handlers] == [ChannelHandler]
    logs.get("test").info("hidden")
    logs.get("test").warning("shown")
    assert written(stdout) == [["log", "couchdb-events: shown", {"level": "error"}]]


def test_setup_twice_keeps_one_handler(package_logger: logging.Logger) -> None:
    ch, _stdin, _stdout = channel()
    logs.setup("info", ChannelHandler(ch))
    logs.setup("debug", ChannelHandler(ch))
    assert len(package_logger.handlers) == 1
    assert package_logger.level == logging.DEBUG


def test_get_names_a_child_of_the_package_logger() -> None:
    assert logs.get("dispatch").name == "couchdb_events.dispatch"
