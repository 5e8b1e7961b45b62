"""A minimal keep-alive HTTP/1.1 server answering with JSON bodies read at start.

The upstream for machines without nginx (the harness prefers nginx): it only
has to be much faster than a proxy in front of it, and the harness measures
that directly. Requests are read as far as their request line, headers and
Content-Length; nothing else is parsed.

    python bench/upstream.py --port 8099 --body session.json   # every path, one body
    python bench/upstream.py --port 8099 --dir docs   # /a/b answers docs/a/b.json, else 404
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b'ETag: "bench-0001"\r\n'
    b"X-Xbl-Correlation-Id: 4b1a7c3e-0000-4000-8000-00000000beef\r\n"
    b"Content-Length: %d\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

Answers = Callable[[bytes], bytes]


def answer(body: bytes) -> bytes:
    return HEAD % len(body) + body


def answers_from(directory: Path) -> Answers:
    """`/a/b` -> the answer carrying DIR/a/b.json (404 for any other path)."""
    table = {b"/" + p.relative_to(directory).as_posix()[:-5].encode(): answer(p.read_bytes())
             for p in directory.rglob("*.json")}
    return lambda path: table.get(path, NOT_FOUND)


def request_path(head: bytes) -> bytes:
    target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
    return target.split(b"?", 1)[0]


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           answers: Answers) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = content_length(head)
            if length:
                await reader.readexactly(length)
            writer.write(answers(request_path(head)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int, answers: Answers) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, answers), "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--body", type=Path, help="file whose bytes every answer carries")
    source.add_argument("--dir", type=Path, help="directory of PATH.json files, one per path")
    args = parser.parse_args()
    if args.dir is not None:
        answers = answers_from(args.dir)
    else:
        single = answer(args.body.read_bytes())
        answers = lambda path: single  # noqa: E731
    asyncio.run(main(args.port, answers))
