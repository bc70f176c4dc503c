"""Reading a worker's stdout and stderr line by line, each line bounded.

A pipe is read with ``MAX_LINE`` as its stream limit; a line over it is dropped whole, through its
newline, and a marker comes in its place (``OVERLONG``, or ``OVERLONG_JSON`` when it began like a
JSON answer), so that its tail is never taken for a line of its own.
"""

from __future__ import annotations

import asyncio

MAX_LINE = 1024 * 1024

# Handed on in place of a line over the limit; the second when it began like a JSON answer.
OVERLONG = b"<a line longer than 1 MiB was dropped>\n"
OVERLONG_JSON = b"<a line longer than 1 MiB, beginning like JSON, was dropped>\n"


async def read_line(stream: asyncio.StreamReader) -> bytes:
    """The next line (b"" at end of file); a line over the stream's limit is skipped whole,
    through its newline, and ``OVERLONG`` (or ``OVERLONG_JSON``) comes instead, so its tail is
    never taken for a line of its own."""
    try:
        return await stream.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError as exc:
        head = await stream.readexactly(exc.consumed)
    marker = OVERLONG_JSON if head.lstrip()[:1] in (b"{", b"[", b'"') else OVERLONG
    while True:
        try:
            await stream.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            await stream.readexactly(exc.consumed)  # drop what is buffered, keep looking
            continue
        except asyncio.IncompleteReadError:
            pass
        return marker
