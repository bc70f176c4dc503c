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


def test_a_sample_serves_requests_for_max_age_seconds() -> None:
    """Status asks for a process's memory with ``max_age``: walking its tree once a second is
    enough, however often status is polled; recycling (no ``max_age``) always samples anew."""
    import asyncio

    from couchdb_events.model.workers import WorkerSpec
    from couchdb_events.workers.process import WorkerProcess

    async def main() -> list[int]:
        proc = WorkerProcess(WorkerSpec(name="w", rev="1-a"), print, print)
        taken: list[int] = []

        def sample() -> tuple[int | None, float | None]:
            taken.append(1)
            return 1000 * len(taken), 0.0

        proc._sample = sample  # type: ignore[method-assign]
        assert proc.sample(max_age=60.0) == (1000, 0.0)
        assert proc.sample(max_age=60.0) == (1000, 0.0)  # the same sample again
        assert proc.sample() == (2000, 0.0)  # asked fresh
        assert proc.sample(max_age=0.0) == (3000, 0.0)
        return taken

    assert len(asyncio.run(main())) == 3
