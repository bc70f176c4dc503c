"""The worker helpers: the Python one with in-memory streams, both as real worker processes."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

HELPERS = Path(__file__).resolve().parents[1] / "couchdb_events" / "helpers"

if TYPE_CHECKING:
    from couchdb_events.helpers import couchdb_events_worker as w
else:
    # Loaded from its file, as a worker imports it: standalone, without the package.
    _spec = importlib.util.spec_from_file_location(
        "couchdb_events_worker", HELPERS / "couchdb_events_worker.py"
    )
    w = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(w)

Message = dict[str, Any]


def message(id_: str, **arguments: Any) -> Message:
    return {
        "id": id_,
        "event": "greet",
        "worker": "greeter",
        "arguments": arguments,
        "request": {
            "method": "POST",
            "path": "/_events/greet",
            "query": {},
            "headers": {},
            "body": None,
            "peer": "127.0.0.1",
            "user": None,
        },
    }


def feed(*messages: Message | str) -> io.StringIO:
    """stdin holding the given messages (strings are written as they are), one per line."""
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    return io.StringIO("".join(line + "\n" for line in lines))


def answers(stdout: io.StringIO) -> list[Any]:
    return [json.loads(line) for line in stdout.getvalue().splitlines()]


def greet(msg: Message) -> Any:
    name = msg["arguments"]["name"]
    if name == "boom":
        raise ValueError("no booms here")
    if name == "nothing":
        return None
    return {"greeting": f"hello {name}"}


# The Python helper with in-memory streams


def test_reply_answers_in_order() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = feed(message("1", name="ann"), message("2", name="bob"), message("3", name="nothing"))
    status = w.run(greet, mode="reply", stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    assert answers(out) == [{"greeting": "hello ann"}, {"greeting": "hello bob"}, {"ok": True}]
    # compact lines, one per answer
    assert out.getvalue().splitlines()[0] == '{"greeting":"hello ann"}'
    assert err.getvalue() == ""


def test_reply_default_mode_and_any_json_value() -> None:
    out, err = io.StringIO(), io.StringIO()
    status = w.run(lambda m: [m["id"], 1.5, "x"], stdin=feed(message("a")), stdout=out, stderr=err)
    assert status == 0
    assert answers(out) == [["a", 1.5, "x"]]


def test_reply_exception_becomes_error_answer_and_loop_continues() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = feed(message("1", name="boom"), message("2", name="ann"))
    status = w.run(greet, mode="reply", stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    assert answers(out) == [
        {"error": "ValueError", "reason": "no booms here"},
        {"greeting": "hello ann"},
    ]
    assert "Traceback" in err.getvalue()
    assert "ValueError: no booms here" in err.getvalue()
    assert "'1'" in err.getvalue()  # the failed message's id


def test_reply_answer_that_is_not_json_becomes_error_answer() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = feed(message("1"), message("2"), message("3"))
    values = iter([{"set": {1, 2}}, float("nan"), "fine"])
    status = w.run(lambda m: next(values), stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    got = answers(out)
    assert [a["error"] for a in got[:2]] == ["TypeError", "ValueError"]
    assert got[2] == "fine"
    assert "not JSON" in err.getvalue()


def test_stream_writes_nothing_and_survives_errors() -> None:
    out, err = io.StringIO(), io.StringIO()
    seen: list[str] = []

    def handler(msg: Message) -> Any:
        seen.append(msg["id"])
        return greet(msg)

    stdin = feed(message("1", name="ann"), message("2", name="boom"), message("3", name="bob"))
    status = w.run(handler, mode="stream", stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    assert seen == ["1", "2", "3"]
    assert out.getvalue() == ""
    assert "ValueError: no booms here" in err.getvalue()


def test_once_handles_exactly_one_message() -> None:
    out, err = io.StringIO(), io.StringIO()
    seen: list[str] = []

    def handler(msg: Message) -> Any:
        seen.append(msg["id"])
        return greet(msg)

    stdin = feed(message("1", name="ann"), message("2", name="bob"))
    status = w.run(handler, mode="once", stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    assert seen == ["1"]
    assert answers(out) == [{"greeting": "hello ann"}]


def test_once_returns_1_when_the_handler_raises() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = feed(message("1", name="boom"))
    status = w.run(greet, mode="once", stdin=stdin, stdout=out, stderr=err)
    assert status == 1
    assert answers(out) == [{"error": "ValueError", "reason": "no booms here"}]
    assert "Traceback" in err.getvalue()


def test_once_without_a_message_returns_1() -> None:
    out, err = io.StringIO(), io.StringIO()
    status = w.run(greet, mode="once", stdin=io.StringIO(""), stdout=out, stderr=err)
    assert status == 1
    assert out.getvalue() == ""
    assert "before any message" in err.getvalue()


def test_blank_and_bad_lines_are_skipped_with_a_note() -> None:
    out, err = io.StringIO(), io.StringIO()
    stdin = feed("", "   ", "not json", "[1, 2]", "42", message("1", name="ann"))
    status = w.run(greet, stdin=stdin, stdout=out, stderr=err)
    assert status == 0
    assert answers(out) == [{"greeting": "hello ann"}]
    notes = err.getvalue().splitlines()
    assert len(notes) == 3
    assert "line 3 is not JSON" in notes[0]
    assert "line 4 is a list, not an object" in notes[1]
    assert "line 5 is a int, not an object" in notes[2]


def test_messages_yields_parsed_objects() -> None:
    err = io.StringIO()
    stdin = feed(message("1"), "", "{broken", message("2"))
    got = list(w.messages(stdin, stderr=err))
    assert [m["id"] for m in got] == ["1", "2"]
    assert "line 3 is not JSON" in err.getvalue()


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        w.run(greet, mode="sometimes", stdin=io.StringIO(""))


def test_log_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    w.log("hello", 42, {"a": 1})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "hello 42 {'a': 1}\n"


# Real worker processes


def worker_env(var: str) -> dict[str, str]:
    env = dict(os.environ)
    env[var] = str(HELPERS)
    return env


def worker_input(*messages: Message) -> str:
    return "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in messages)


PYTHON_WORKER = """\
import sys
import couchdb_events_worker as w

def handle(message):
    name = message["arguments"]["name"]
    w.log("handling", message["id"])
    if name == "boom":
        raise ValueError("no booms here")
    return {"greeting": "hello " + name}

sys.exit(w.run(handle, mode=sys.argv[1]))
"""


def run_python_worker(tmp_path: Path, mode: str, stdin: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "worker.py"
    script.write_text(PYTHON_WORKER)
    return subprocess.run(
        [sys.executable, str(script), mode],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=worker_env("PYTHONPATH"),
        timeout=10,
        check=False,
    )


def test_python_worker_process_replies(tmp_path: Path) -> None:
    stdin = worker_input(message("1", name="zoë"), message("2", name="boom"))
    result = run_python_worker(tmp_path, "reply", stdin)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"greeting": "hello zoë"},
        {"error": "ValueError", "reason": "no booms here"},
    ]
    assert "handling 1" in result.stderr
    assert "ValueError: no booms here" in result.stderr


def converse(command: list[str], env: dict[str, str], cwd: Path, *messages: Message) -> list[Any]:
    """Send each message only after the answer to the previous one came, as the daemon does in
    reply mode; returns the answers. Then closes stdin and expects exit status 0."""
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        env=env,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    got: list[Any] = []
    try:
        for msg in messages:
            proc.stdin.write(json.dumps(msg) + "\n")
            proc.stdin.flush()
            got.append(json.loads(lines.get(timeout=10)))
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        proc.stdout.close()
    return got


def test_python_worker_process_answers_before_stdin_ends(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(PYTHON_WORKER)
    command = [sys.executable, str(script), "reply"]
    got = converse(
        command,
        worker_env("PYTHONPATH"),
        tmp_path,
        message("1", name="ann"),
        message("2", name="bob"),
    )
    assert got == [{"greeting": "hello ann"}, {"greeting": "hello bob"}]


def test_python_worker_process_once(tmp_path: Path) -> None:
    stdin = worker_input(message("1", name="boom"), message("2", name="ann"))
    result = run_python_worker(tmp_path, "once", stdin)
    assert result.returncode == 1
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"error": "ValueError", "reason": "no booms here"},
    ]


NODE_WORKER = """\
const { onMessage, log } = require('couchdb-events-worker');

onMessage((message) => {
  const name = message.arguments.name;
  log('handling', message.id);
  if (name === 'boom') throw new TypeError('no booms here');
  if (name === 'nothing') return undefined;
  // a slow first answer must still come first
  const delay = name === 'slow' ? 100 : 0;
  return new Promise((resolve) => setTimeout(() => resolve({ greeting: `hello ${name}` }), delay));
}, { mode: process.argv[2] });
"""


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH (required in CI)")
        pytest.skip("node is not on PATH")
    return node


def run_node_worker(tmp_path: Path, mode: str, stdin: str) -> subprocess.CompletedProcess[str]:
    node = node_or_skip()
    script = tmp_path / "worker.js"
    script.write_text(NODE_WORKER)
    return subprocess.run(
        [node, str(script), mode],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=tmp_path,
        env=worker_env("NODE_PATH"),
        timeout=10,
        check=False,
    )


def test_node_worker_process_replies_in_order(tmp_path: Path) -> None:
    stdin = worker_input(
        message("1", name="slow"),
        message("2", name="boom"),
        message("3", name="zoë"),
        message("4", name="nothing"),
    )
    stdin = "\nnot json\n" + stdin  # bad lines are skipped
    result = run_node_worker(tmp_path, "reply", stdin)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"greeting": "hello slow"},
        {"error": "TypeError", "reason": "no booms here"},
        {"greeting": "hello zoë"},
        {"ok": True},
    ]
    assert "handling 1" in result.stderr
    assert "TypeError: no booms here" in result.stderr
    assert "line 2 is not JSON" in result.stderr


def test_node_worker_process_answers_before_stdin_ends(tmp_path: Path) -> None:
    node = node_or_skip()
    script = tmp_path / "worker.js"
    script.write_text(NODE_WORKER)
    command = [node, str(script), "reply"]
    got = converse(
        command,
        worker_env("NODE_PATH"),
        tmp_path,
        message("1", name="ann"),
        message("2", name="boom"),
    )
    assert got == [{"greeting": "hello ann"}, {"error": "TypeError", "reason": "no booms here"}]


def test_node_worker_process_stream_writes_nothing(tmp_path: Path) -> None:
    stdin = worker_input(message("1", name="ann"), message("2", name="boom"))
    result = run_node_worker(tmp_path, "stream", stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "handling 2" in result.stderr


def test_node_worker_process_once(tmp_path: Path) -> None:
    ok = run_node_worker(tmp_path, "once", worker_input(message("1", name="slow"), message("2")))
    assert ok.returncode == 0, ok.stderr
    assert [json.loads(line) for line in ok.stdout.splitlines()] == [{"greeting": "hello slow"}]
    assert "handling 2" not in ok.stderr

    failed = run_node_worker(tmp_path, "once", worker_input(message("1", name="boom")))
    assert failed.returncode == 1
    assert [json.loads(line) for line in failed.stdout.splitlines()] == [
        {"error": "TypeError", "reason": "no booms here"},
    ]
