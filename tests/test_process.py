"""Reading worker output: pure stream tests, no processes."""

from __future__ import annotations

import asyncio

from couchdb_events.workers.lines import OVERLONG, OVERLONG_JSON, read_line


def lines_of(data: bytes, limit: int) -> list[bytes]:
    async def read() -> list[bytes]:
        stream = asyncio.StreamReader(limit=limit)
        stream.feed_data(data)
        stream.feed_eof()
        out = []
        while line := await read_line(stream):
            out.append(line)
        return out

    return asyncio.run(read())


def test_lines_and_a_last_line_without_newline() -> None:
    assert lines_of(b"a\nbb\nccc", 16) == [b"a\n", b"bb\n", b"ccc"]


def test_an_overlong_line_is_dropped_whole_and_its_tail_is_not_a_line() -> None:
    data = b"short\n" + b"x" * 40 + b'{"a":1}\n' + b"after\n" + b"y" * 20
    assert lines_of(data, 16) == [b"short\n", OVERLONG, b"after\n", OVERLONG]


def test_an_overlong_line_that_begins_like_json_is_told_apart() -> None:
    data = b'  {"blob": "' + b"x" * 40 + b'"}\n' + b"[" + b"1," * 30 + b"\nok\n"
    assert lines_of(data, 16) == [OVERLONG_JSON, OVERLONG_JSON, b"ok\n"]
