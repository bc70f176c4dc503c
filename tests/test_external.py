"""CouchDB's external protocol, with no server: request objects of each CouchDB version, the
response object, and the line loop over in-memory lines with a fake router."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from couchdb_events.api.answer import Answer
from couchdb_events.errors import HTTPError
from couchdb_events.hosts.external import read_in_thread, serve_lines
from couchdb_events.hosts.external_codec import (
    decode_line,
    encode_response,
    to_request,
    to_response,
)
from couchdb_events.model.request import Request

INFO = {"db_name": "mydb", "doc_count": 0, "update_seq": 0}

# CouchDB 0.10: "verb", no requested_path, raw_path, secObj, peer, uuid; query as typed.
V010: dict[str, Any] = {
    "info": INFO,
    "verb": "GET",
    "path": ["mydb", "_events", "ping"],
    "query": {"key": '"abc"', "n": "1"},
    "headers": {"Host": "127.0.0.1:5984", "Accept": "*/*"},
    "body": "undefined",
    "form": {},
    "cookie": {},
}

# CouchDB 1.1: "method", requested_path, secObj, userCtx, peer; no raw_path.
V11: dict[str, Any] = {
    "info": INFO,
    "id": None,
    "uuid": "0b7e3f3c0e9c4a62a1c5ed1c3c7b5e11",
    "method": "GET",
    "requested_path": ["mydb", "_events", "ping"],
    "path": ["mydb", "_events", "ping"],
    "query": {"n": "1"},
    "headers": {"Host": "127.0.0.1:5984", "Accept": "*/*"},
    "body": "undefined",
    "peer": "127.0.0.1",
    "form": {},
    "cookie": {},
    "userCtx": {"db": "mydb", "name": "ann", "roles": ["mailers"]},
    "secObj": {},
}

# CouchDB 1.2 - 2.2: everything.
V12: dict[str, Any] = {
    **V11,
    "method": "POST",
    "requested_path": ["mydb", "_events", "email_event"],
    "path": ["mydb", "_events", "email_event"],
    "raw_path": "/mydb/_events/email_event?to=ann%40example.com",
    "query": {"to": "ann@example.com"},
    "headers": {"Content-Type": "application/json", "Content-Length": "13"},
    "body": '{"subject":1}',
}


def obj(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


# -- to_request ---------------------------------------------------------------------------------
def test_couchdb_0_10_request_object() -> None:
    request = to_request(V010)
    assert request == Request(
        method="GET",
        path="/ping",
        query={"key": '"abc"', "n": "1"},  # 0.10 sends the query as typed: kept as it is
        headers={"Host": "127.0.0.1:5984", "Accept": "*/*"},
        body=None,
        peer=None,
        user=None,
    )


def test_couchdb_1_1_request_object() -> None:
    request = to_request(V11)
    assert (request.method, request.path, request.query) == ("GET", "/ping", {"n": "1"})
    assert request.body is None
    assert request.peer == "127.0.0.1"
    assert request.user == {"name": "ann", "roles": ["mailers"]}


def test_couchdb_1_2_request_object() -> None:
    request = to_request(V12)
    assert request.method == "POST"
    assert request.path == "/email_event"
    assert request.query == {"to": "ann@example.com"}
    assert request.headers == {"Content-Type": "application/json", "Content-Length": "13"}
    assert request.body == {"subject": 1}
    assert request.user == {"name": "ann", "roles": ["mailers"]}


@pytest.mark.parametrize(
    ("path", "below"),
    [
        (["mydb", "_events"], "/"),
        (["mydb", "_events", "_status"], "/_status"),
        (["mydb", "_events", "send_email"], "/send_email"),
        (["mydb", "_events", "a", "b c"], "/a/b c"),
        # The handler's name is whatever local.ini says; the second segment is dropped.
        (["other", "_ev", "ping"], "/ping"),
        (["a/b", "_events", "ping"], "/ping"),  # a database name with a slash is one segment
    ],
)
def test_path_is_below_the_handler(path: list[str], below: str) -> None:
    assert to_request(obj(V12, path=path)).path == below


def test_get_with_body_undefined_has_no_body() -> None:
    request = to_request(obj(V12, method="GET", headers={}, body="undefined"))
    assert request.body is None


def test_a_body_that_reads_undefined_is_text_when_its_length_says_so() -> None:
    headers = {"Content-Type": "text/plain", "Content-Length": "9"}
    assert to_request(obj(V12, headers=headers, body="undefined")).body == "undefined"


@pytest.mark.parametrize("method", ["DELETE", "HEAD"])
def test_empty_body_is_no_body(method: str) -> None:
    assert to_request(obj(V12, method=method, headers={}, body="")).body is None


def test_missing_or_null_body_is_no_body() -> None:
    without = {k: v for k, v in V12.items() if k != "body"}
    assert to_request(without).body is None
    assert to_request(obj(V12, body=None)).body is None


def test_json_body_with_lower_case_content_type_header() -> None:
    request = to_request(
        obj(V12, headers={"content-type": "application/json"}, body='{"to": ["a", "b"]}')
    )
    assert request.body == {"to": ["a", "b"]}


def test_form_body_is_parsed_from_the_raw_body() -> None:
    request = to_request(
        obj(
            V12,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body="to=ann%40example.com&subject=Hello+there",
            form={"to": "ann@example.com", "subject": "Hello there"},
        )
    )
    assert request.body == {"to": "ann@example.com", "subject": "Hello there"}


def test_text_and_binary_bodies() -> None:
    text = to_request(obj(V12, headers={"Content-Type": "text/plain"}, body="caf\u00e9"))
    assert text.body == "caf\u00e9"
    # Bytes that were not UTF-8 reach decode_line as they are and come back intact.
    line = b'{"method":"PUT","path":["db","_events","x"],"body":"\xff\xfe",'
    line += b'"headers":{"Content-Type":"image/png"}}\n'
    binary = to_request(decode_line(line))
    assert binary.body == {"base64": "//4=", "content_type": "image/png"}


def test_bad_json_body_is_the_callers_400() -> None:
    with pytest.raises(HTTPError) as caught:
        to_request(obj(V12, body="{nope"))
    assert (caught.value.status, caught.value.error) == (400, "bad_request")
    assert "not valid JSON" in caught.value.reason


def test_body_over_max_body_is_413() -> None:
    with pytest.raises(HTTPError) as caught:
        to_request(obj(V12, headers={}, body="x" * 11), max_body=10)
    assert (caught.value.status, caught.value.error) == (413, "too_large")
    assert to_request(obj(V12, headers={}, body="x" * 10), max_body=10).body == "x" * 10


def test_json_decoded_query_keys_are_json_text_again() -> None:
    query = {
        "key": "abc",  # ?key="abc", decoded by CouchDB
        "startkey": [1, "a", None],
        "endkey": {"a": 1.5},
        "limit": "10",
        "name": "plain",
    }
    request = to_request(obj(V12, query=query))
    assert request.query == {
        "key": '"abc"',
        "startkey": '[1,"a",null]',
        "endkey": '{"a":1.5}',
        "limit": "10",
        "name": "plain",
    }
    assert all(isinstance(v, str) for v in request.query.values())
    assert to_request(obj(V12, query={"key": 5})).query == {"key": "5"}
    assert to_request(obj(V12, query={"key": "\u00e9"})).query == {"key": '"\u00e9"'}


def test_anonymous_caller_keeps_its_roles() -> None:
    anonymous = to_request(obj(V12, userCtx={"db": "mydb", "name": None, "roles": []}))
    assert anonymous.user == {"name": None, "roles": []}
    # Admin party: CouchDB has no admins, so every caller is one.
    party = to_request(obj(V12, userCtx={"db": "mydb", "name": None, "roles": ["_admin"]}))
    assert party.user == {"name": None, "roles": ["_admin"]}
    assert to_request(obj(V12, userCtx=None)).user is None


def test_named_user_without_roles() -> None:
    assert to_request(obj(V12, userCtx={"db": "mydb", "name": "bob"})).user == {
        "name": "bob",
        "roles": [],
    }


@pytest.mark.parametrize(
    ("thing", "reason"),
    [
        ([1, 2], "JSON object"),
        ("GET", "JSON object"),
        (None, "JSON object"),
        ({"path": ["db", "_events", "x"]}, "no method"),
        ({"method": "", "path": ["db", "_events", "x"]}, "no method"),
        ({"method": 7, "path": ["db", "_events", "x"]}, "no method"),
        ({"method": "GET"}, "path must be a list of strings"),
        ({"method": "GET", "path": "/db/_events/x"}, "path must be a list of strings"),
        ({"method": "GET", "path": ["db", 1]}, "path must be a list of strings"),
        ({"method": "GET", "path": ["db"]}, "database and the handler"),
        ({"method": "GET", "path": ["db", "_events"], "headers": []}, "headers"),
        ({"method": "GET", "path": ["db", "_events"], "headers": {"A": 1}}, "headers"),
        ({"method": "GET", "path": ["db", "_events"], "query": "a=1"}, "query"),
        ({"method": "GET", "path": ["db", "_events"], "body": 12}, "body"),
        ({"method": "GET", "path": ["db", "_events"], "userCtx": "ann"}, "userCtx"),
        ({"method": "GET", "path": ["db", "_events"], "userCtx": {"name": 1}}, "userCtx.name"),
        (
            {"method": "GET", "path": ["db", "_events"], "userCtx": {"roles": "_admin"}},
            "userCtx.roles",
        ),
    ],
)
def test_not_a_request_is_400(thing: Any, reason: str) -> None:
    with pytest.raises(HTTPError) as caught:
        to_request(thing)
    assert (caught.value.status, caught.value.error) == (400, "bad_request")
    assert reason in caught.value.reason


# -- to_response ---------------------------------------------------------------------------------
def test_response_shape() -> None:
    response = to_response(Answer(503, {"error": "queue_full"}, {"Retry-After": "2"}))
    assert response == {
        "code": 503,
        "headers": {"Content-Type": "application/json", "Retry-After": "2"},
        "json": {"error": "queue_full"},
    }
    assert isinstance(response["code"], int)
    assert all(isinstance(v, str) for v in response["headers"].values())
    assert len({"json", "body", "base64"} & set(response)) == 1
    assert set(response) <= {"code", "headers", "json", "body", "base64"}


def test_response_line_is_one_ascii_json_line() -> None:
    line = encode_response(to_response(Answer(200, {"text": "caf\u00e9\nline two"})))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert line.isascii()
    assert json.loads(line)["json"] == {"text": "caf\u00e9\nline two"}


def test_unencodable_answer_becomes_a_500_line() -> None:
    line = encode_response(to_response(Answer(200, {"x": {1, 2}})))
    response = json.loads(line)
    assert response["code"] == 500 and response["json"]["error"] == "internal_error"


# -- the line loop ------------------------------------------------------------------------------
class FakeRouter:
    """Answers ``/ping`` with 202, raises what ``/boom`` and ``/nope`` say, sleeps on ``/slow``."""

    def __init__(self) -> None:
        self.requests: list[tuple[Request, float]] = []

    async def handle(self, request: Request, max_wait: float = 300.0) -> Answer:
        self.requests.append((request, max_wait))
        if request.path == "/boom":
            raise RuntimeError("the router broke")
        if request.path == "/nope":
            raise HTTPError(404, "not_found", "no event /nope")
        if request.path == "/slow":
            await asyncio.sleep(60)
        return Answer(202, {"ok": True, "path": request.path, "user": request.user})


def line(path: str, **fields: Any) -> bytes:
    base = obj(V12, path=["mydb", "_events", *path.strip("/").split("/")], **fields)
    return json.dumps(base).encode() + b"\n"


def run_loop(
    lines: list[bytes],
    router: Any = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Feed ``lines`` to serve_lines, then EOF; the response objects written."""
    written: list[bytes] = []
    pending = iter(lines)

    async def read_line() -> bytes:
        return next(pending, b"")

    asyncio.run(serve_lines(router or FakeRouter(), read_line, written.append, **options))
    for data in written:
        assert data.endswith(b"\n") and data.count(b"\n") == 1
    return [json.loads(data) for data in written]


def test_one_answer_per_request_in_order() -> None:
    router = FakeRouter()
    answers = run_loop([line("/ping"), line("/nope"), line("/ping", method="GET")], router)
    assert [a["code"] for a in answers] == [202, 404, 202]
    assert answers[0]["json"] == {
        "ok": True,
        "path": "/ping",
        "user": {"name": "ann", "roles": ["mailers"]},
    }
    assert answers[1]["json"] == {"error": "not_found", "reason": "no event /nope"}
    assert [r.method for r, _w in router.requests] == ["POST", "POST", "GET"]


def test_malformed_line_gets_a_400_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    answers = run_loop([b"{not json\n", line("/ping")])
    assert [a["code"] for a in answers] == [400, 202]
    assert answers[0]["json"]["error"] == "bad_request"
    assert "not JSON" in answers[0]["json"]["reason"]
    assert "not a request from CouchDB" in caplog.text


@pytest.mark.parametrize(
    "data",
    [b"[1,2,3]\n", b'"GET"\n', b"null\n", b"\n", b"   \n", b'{"path":["db","_events","x"]}\n'],
)
def test_lines_that_are_not_requests_get_a_400(data: bytes) -> None:
    answers = run_loop([data, line("/ping")])
    assert [a["code"] for a in answers] == [400, 202]
    assert answers[0]["headers"]["Content-Type"] == "application/json"


def test_router_exception_is_a_500_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    answers = run_loop([line("/boom"), line("/ping")])
    assert [a["code"] for a in answers] == [500, 202]
    assert answers[0]["json"] == {
        "error": "internal_error",
        "reason": "RuntimeError: the router broke",
    }
    assert "the router broke" in caplog.text


def test_every_answer_is_a_valid_response_object() -> None:
    answers = run_loop([line("/ping"), b"x\n", line("/boom"), line("/nope")])
    for answer in answers:
        assert set(answer) == {"code", "headers", "json"}
        assert isinstance(answer["code"], int)
        assert all(isinstance(v, str) for v in answer["headers"].values())


def test_eof_ends_the_loop_at_once() -> None:
    assert run_loop([]) == []
    # A last line without its newline is still a request.
    assert [a["code"] for a in run_loop([line("/ping").rstrip(b"\n")])] == [202]


def test_wait_is_capped_below_couchdbs_timeout() -> None:
    router = FakeRouter()
    run_loop([line("/ping", query={"wait": "60"})], router, max_wait=4.0)
    [(_request, max_wait)] = router.requests
    assert 3.5 < max_wait <= 4.0


def test_a_router_that_hangs_still_gets_an_answer_in_time() -> None:
    answers = run_loop([line("/slow"), line("/ping")], max_wait=0.1, answer_within=0.2)
    assert [a["code"] for a in answers] == [503, 202]
    assert answers[0]["json"]["error"] == "unavailable"
    assert answers[0]["headers"]["Retry-After"] == "1"


def test_requests_wait_for_start_up_within_the_budget() -> None:
    async def scenario() -> list[dict[str, Any]]:
        ready = asyncio.Event()
        written: list[bytes] = []
        pending = iter([line("/ping")])

        async def read_line() -> bytes:
            return next(pending, b"")

        asyncio.get_running_loop().call_later(0.1, ready.set)
        await serve_lines(FakeRouter(), read_line, written.append, ready=ready, max_wait=2.0)
        return [json.loads(data) for data in written]

    assert [a["code"] for a in asyncio.run(scenario())] == [202]


def test_start_up_that_takes_too_long_is_a_503() -> None:
    ready = asyncio.Event()  # never set
    answers = run_loop([line("/ping"), b"oops\n"], ready=ready, max_wait=0.1)
    assert [a["code"] for a in answers] == [503, 400]
    assert answers[0]["json"]["error"] == "unavailable"
    assert answers[0]["headers"]["Retry-After"] == "1"


def test_a_failing_write_ends_the_loop() -> None:
    calls: list[bytes] = []

    def broken(data: bytes) -> None:
        calls.append(data)
        raise BrokenPipeError("CouchDB has gone")

    pending = iter([line("/ping"), line("/ping")])

    async def read_line() -> bytes:
        return next(pending, b"")

    asyncio.run(serve_lines(FakeRouter(), read_line, broken))
    assert len(calls) == 1


# -- reading stdin in a thread ----------------------------------------------------------------
def test_read_in_thread_gives_lines_then_eof() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader:

        async def scenario() -> list[bytes]:
            read_line: Callable[[], Awaitable[bytes]] = read_in_thread(reader)
            os.write(write_fd, b'{"a":1}\n{"b"')
            first = await asyncio.wait_for(read_line(), 5)
            # The loop is free while the thread waits for the rest of the line.
            await asyncio.sleep(0.05)
            os.write(write_fd, b":2}\n")
            second = await asyncio.wait_for(read_line(), 5)
            os.close(write_fd)
            end = await asyncio.wait_for(read_line(), 5)
            return [first, second, end]

        assert asyncio.run(scenario()) == [b'{"a":1}\n', b'{"b":2}\n', b""]
