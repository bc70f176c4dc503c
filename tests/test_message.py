"""The message a worker reads on stdin, and the outcome a caller may wait for."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from couchdb_events.model.message import HIDDEN_HEADERS, Message, Outcome, new_id, worker_request


def request(headers: dict[str, str]) -> dict[str, Any]:
    return worker_request("POST", "/e", {"q": "1"}, headers, {"a": 1}, "127.0.0.1", None)


def message(**fields: Any) -> Message:
    values: dict[str, Any] = {
        "id": "abc",
        "event": "email_event",
        "worker": "send_email",
        "arguments": {"to": "a@b"},
        "request": request({"Accept": "*/*"}),
    }
    values.update(fields)
    return Message(**values)


# -- the request part --------------------------------------------------------------------------


def test_worker_request_fields() -> None:
    user = {"name": "bob", "roles": []}
    assert worker_request("GET", "/e", {"q": "1"}, {}, None, "::1", user) == {
        "method": "GET",
        "path": "/e",
        "query": {"q": "1"},
        "headers": {"X-Couchdb-Events-Chain": "0"},
        "body": None,
        "peer": "::1",
        "user": user,
    }


@pytest.mark.parametrize("sent", [None, "x-couchdb-events-chain", "X-COUCHDB-EVENTS-CHAIN"])
def test_chain_header_is_the_runs_depth(sent: str | None) -> None:
    headers = {"Accept": "*/*"} if sent is None else {"Accept": "*/*", sent: "2"}
    wire = worker_request("POST", "/e", {}, headers, None, None, None, 3)
    assert wire["headers"] == {"Accept": "*/*", "X-Couchdb-Events-Chain": "3"}


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "AUTHORIZATION",
        "Cookie",
        "cookie",
        "COOKIE",
        "Proxy-Authorization",
        "proxy-authorization",
        "PROXY-AUTHORIZATION",
        "pRoXy-AuThOrIzAtIoN",
    ],
)
def test_credentials_never_reach_the_worker(name: str) -> None:
    headers = {name: "secret", "Accept": "application/json", "X-Custom": "kept"}
    assert request(headers)["headers"] == {
        "Accept": "application/json",
        "X-Custom": "kept",
        "X-Couchdb-Events-Chain": "0",
    }


def test_all_credential_headers_at_once() -> None:
    headers = {
        "Authorization": "Basic x",
        "Cookie": "AuthSession=x",
        "Proxy-Authorization": "Basic y",
        "Set-Cookie": "kept",
        "X-Authorization-Hint": "kept",
    }
    assert request(headers)["headers"] == {
        "Set-Cookie": "kept",
        "X-Authorization-Hint": "kept",
        "X-Couchdb-Events-Chain": "0",
    }


def test_hidden_headers() -> None:
    assert frozenset({"authorization", "cookie", "proxy-authorization"}) == HIDDEN_HEADERS


def test_worker_request_does_not_change_the_headers_it_was_given() -> None:
    headers = {"Cookie": "x", "Accept": "*/*"}
    request(headers)
    assert headers == {"Cookie": "x", "Accept": "*/*"}


# -- the line ----------------------------------------------------------------------------------


def test_line_is_compact_json_ending_in_newline() -> None:
    line = message().line()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b", " not in line
    assert b'": ' not in line
    assert json.loads(line) == {
        "id": "abc",
        "event": "email_event",
        "worker": "send_email",
        "arguments": {"to": "a@b"},
        "request": request({"Accept": "*/*"}),
        "attempt": 1,
        "chain": {"depth": 0, "parent": None},
    }


def test_line_does_not_carry_accepted_or_outcome() -> None:
    assert set(json.loads(message().line())) == {
        "id", "event", "worker", "arguments", "request", "attempt", "chain"
    }  # fmt: skip


@pytest.mark.parametrize("text", ["a\nb", "a\r\nb", "\n", "a\rb", "tab\there"])
def test_line_is_one_line_even_when_values_contain_newlines(text: str) -> None:
    m = message(
        arguments={"body": text, "list": [text], "nested": {text: text}},
        request=request({"X-Note": text}),
    )
    line = m.line()
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert line.endswith(b"\n")
    assert json.loads(line)["arguments"] == {"body": text, "list": [text], "nested": {text: text}}


def test_line_keeps_non_ascii_as_utf8() -> None:
    text = "Zoë · 😀 · 日本"
    line = message(arguments={"name": text}).line()
    assert text.encode() in line
    assert b"\\u" not in line
    assert json.loads(line.decode("utf-8"))["arguments"] == {"name": text}


# -- outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "as_json"),
    [
        (Outcome("delivered"), {"state": "delivered"}),
        (Outcome("succeeded", answer={"ok": True}), {"state": "succeeded", "answer": {"ok": True}}),
        (Outcome("succeeded", answer=0), {"state": "succeeded", "answer": 0}),
        (Outcome("succeeded", answer=""), {"state": "succeeded", "answer": ""}),
        (Outcome("succeeded", answer=False), {"state": "succeeded", "answer": False}),
        (Outcome("failed", error="exit status 1"), {"state": "failed", "error": "exit status 1"}),
        (
            Outcome("failed", answer=[1], error="x"),
            {"state": "failed", "answer": [1], "error": "x"},
        ),
    ],
)
def test_outcome_as_json(outcome: Outcome, as_json: dict[str, Any]) -> None:
    assert outcome.as_json() == as_json


def test_outcome_as_json_is_a_fresh_dict() -> None:
    outcome = Outcome("delivered")
    outcome.as_json()["state"] = "changed"
    assert outcome.as_json() == {"state": "delivered"}


def test_finish_without_a_waiter_does_nothing() -> None:
    message().finish(Outcome("delivered"))


def test_finish_sets_the_outcome_once() -> None:
    async def run() -> Outcome:
        m = message()
        m.outcome = asyncio.get_running_loop().create_future()
        m.finish(Outcome("succeeded", answer=1))
        m.finish(Outcome("failed", error="too late"))
        return await m.outcome

    assert asyncio.run(run()) == Outcome("succeeded", answer=1)


def test_finish_after_the_waiter_gave_up() -> None:
    async def run() -> bool:
        m = message()
        m.outcome = asyncio.get_running_loop().create_future()
        m.outcome.cancel()
        m.finish(Outcome("delivered"))
        return m.outcome.cancelled()

    assert asyncio.run(run())


def test_new_ids_are_unique_hex() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_new_ids_follow_time() -> None:
    """Later ids sort after earlier ones (CouchDB appends them to its B-tree), and start with
    the microseconds they were made at."""
    before = time.time_ns() // 1000
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    after = time.time_ns() // 1000
    assert first < second
    assert before <= int(first[:14], 16) <= int(second[:14], 16) <= after
