"""The path below /_events, and what a request body means for its content type."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from couchdb_events.errors import HTTPError
from couchdb_events.model.request import PREFIX, Request, parse_body, strip_prefix


def bad_body(content_type: str | None, raw: bytes) -> HTTPError:
    with pytest.raises(HTTPError) as info:
        parse_body(content_type, raw)
    assert info.value.status == 400
    assert info.value.error == "bad_request"
    return info.value


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "stripped"),
    [
        ("/_events", "/"),
        ("/_events/", "/"),
        ("/_events/a/b/", "/a/b/"),
        ("/_events/email_event", "/email_event"),
        ("/_eventsx", "/_eventsx"),
        ("/_events_status", "/_events_status"),
        ("/email_event", "/email_event"),
        ("/_events/_events/x", "/_events/x"),
        ("/", "/"),
        ("", "/"),
        ("/_Events/x", "/_Events/x"),
    ],
)
def test_strip_prefix(path: str, stripped: str) -> None:
    assert strip_prefix(path) == stripped


def test_prefix() -> None:
    assert PREFIX == "/_events"


def test_request_defaults() -> None:
    request = Request("GET", "/e")
    assert request.query == {}
    assert request.headers == {}
    assert request.body is None
    assert request.peer is None
    assert request.user is None


# -- empty bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "application/x-www-form-urlencoded", "text/plain", "image/png"],
)
def test_empty_body_is_none(content_type: str | None) -> None:
    assert parse_body(content_type, b"") is None


# -- JSON --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"to": "a@b", "n": [1, 2.5, null, true]}', {"to": "a@b", "n": [1, 2.5, None, True]}),
        (b"[1, 2]", [1, 2]),
        (b'"text"', "text"),
        (b"42", 42),
        (b"null", None),
        (b'  {"a": 1}\n', {"a": 1}),
        ('{"name": "Zoë 😀"}'.encode(), {"name": "Zoë 😀"}),
    ],
)
def test_json(raw: bytes, value: Any) -> None:
    assert parse_body("application/json", raw) == value


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        'application/json; charset="UTF-8"',
        "application/json;charset=utf-8;foo=bar",
        "application/vnd.api+json",
        "application/merge-patch+json; charset=utf-8",
        "application/ld+json",
    ],
)
def test_json_media_types(content_type: str) -> None:
    assert parse_body(content_type, b'{"a": 1}') == {"a": 1}


def test_json_in_another_charset() -> None:
    raw = '{"name": "Zoë"}'.encode("utf-16")
    assert parse_body("application/json; charset=utf-16", raw) == {"name": "Zoë"}
    raw = '{"name": "Zoë"}'.encode("latin-1")
    assert parse_body("application/json; charset=iso-8859-1", raw) == {"name": "Zoë"}


def test_invalid_json_gives_line_and_column() -> None:
    error = bad_body("application/json", b'{\n  "a": 1,\n  "b": }')
    assert error.reason == "the body is not valid JSON: Expecting value at line 3 column 8"


def test_invalid_json_on_one_line() -> None:
    error = bad_body("application/json", b"{'a': 1}")
    assert error.reason.startswith("the body is not valid JSON: ")
    assert "at line 1 column 2" in error.reason


@pytest.mark.parametrize("raw", [b"   ", b"{", b"[1,]", b'{"a":1} extra', b"\xef\xbb\xbf{}"])
def test_more_invalid_json(raw: bytes) -> None:
    assert "line 1" in bad_body("application/json", raw).reason


def test_json_not_in_the_declared_charset() -> None:
    error = bad_body("application/json", '{"name": "Zoë"}'.encode("latin-1"))
    assert error.reason.startswith("the JSON body is not valid text: ")
    assert "utf-8" in error.reason


def test_json_with_an_unknown_charset() -> None:
    error = bad_body("application/json; charset=klingon", b"{}")
    assert error.reason.startswith("the JSON body is not valid text: ")
    assert "klingon" in error.reason


def test_json_error_keeps_no_exception_context() -> None:
    with pytest.raises(HTTPError) as info:
        parse_body("application/json", b"{")
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# -- forms -------------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"to=a%40b&subject=hello+world", {"to": "a@b", "subject": "hello world"}),
        (b"a=", {"a": ""}),
        (b"a=1&b=", {"a": "1", "b": ""}),
        (b"name=Zo%C3%AB", {"name": "Zoë"}),
        (b"a=1=2", {"a": "1=2"}),
        (b"a=1&a=2", {"a": "2"}),
    ],
)
def test_form(raw: bytes, value: dict[str, str]) -> None:
    assert parse_body(FORM, raw) == value


def test_form_with_charset() -> None:
    assert parse_body(FORM + "; charset=utf-8", b"a=1") == {"a": "1"}
    assert parse_body(FORM + "; charset=iso-8859-1", b"name=Zo%EB") == {"name": "Zoë"}
    assert parse_body(FORM + "; charset=iso-8859-1", "name=Zoë".encode("latin-1")) == {
        "name": "Zoë"
    }


@pytest.mark.parametrize("raw", [b"a", b"a=1&b", b"a=1&", b"&a=1", b"a=1&&b=2"])
def test_form_strict_parsing_failure(raw: bytes) -> None:
    error = bad_body(FORM, raw)
    assert error.reason.startswith("the body is not a valid form: ")


def test_form_with_bad_percent_encoding_is_refused() -> None:
    assert bad_body(FORM, b"a=%FF").reason.startswith("the body is not a valid form: ")


def test_form_not_in_the_declared_charset() -> None:
    assert bad_body(FORM, b"a=\xff").reason.startswith("the body is not a valid form: ")


def test_form_with_an_unknown_charset() -> None:
    error = bad_body(FORM + "; charset=klingon", b"a=1")
    assert "klingon" in error.reason


# -- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "text/csv", "TEXT/HTML", None, ""])
def test_text(content_type: str | None) -> None:
    assert parse_body(content_type, "héllo\nworld".encode()) == "héllo\nworld"


def test_text_with_charset() -> None:
    raw = "héllo".encode("latin-1")
    assert parse_body("text/plain; charset=ISO-8859-1", raw) == "héllo"
    assert parse_body('text/plain; charset="latin-1"', raw) == "héllo"


def test_text_with_an_empty_charset_is_utf8() -> None:
    assert parse_body("text/plain; charset=", "é".encode()) == "é"


def test_text_not_in_its_charset_is_400() -> None:
    error = bad_body("text/plain", b"\xff\xfe")
    assert error.reason.startswith("the body is not valid utf-8 text: ")
    error = bad_body("text/plain; charset=ascii", "é".encode())
    assert error.reason.startswith("the body is not valid ascii text: ")


def test_text_with_an_unknown_charset_is_400() -> None:
    error = bad_body("text/plain; charset=klingon", b"abc")
    assert error.reason.startswith("the body is not valid klingon text: ")


# -- binary ------------------------------------------------------------------------------------

BINARY = bytes(range(256))


@pytest.mark.parametrize(
    ("content_type", "media"),
    [
        ("application/octet-stream", "application/octet-stream"),
        ("image/PNG", "image/png"),
        ("application/pdf; name=x.pdf", "application/pdf"),
        ("application/jsonx", "application/jsonx"),
    ],
)
def test_binary_is_base64(content_type: str, media: str) -> None:
    body = parse_body(content_type, BINARY)
    assert body == {"base64": base64.b64encode(BINARY).decode("ascii"), "content_type": media}
    assert base64.b64decode(body["base64"]) == BINARY


def test_binary_even_when_it_is_valid_text() -> None:
    assert parse_body("application/octet-stream", b"hello") == {
        "base64": "aGVsbG8=",
        "content_type": "application/octet-stream",
    }


def test_undeclared_binary_is_base64_without_content_type() -> None:
    assert parse_body(None, b"\xff\x00") == {"base64": "/wA=", "content_type": None}
    assert parse_body("", b"\xff\x00") == {"base64": "/wA=", "content_type": None}
