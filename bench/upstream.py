"""A minimal keep-alive HTTP/1.1 server answering every request with one JSON body.

The upstream for machines without nginx (the harness prefers nginx): it only
has to be much faster than a proxy in front of it, and the harness measures
that directly. Requests are read as far as their headers and Content-Length;
nothing else is parsed.

    python bench/upstream.py --port 8099 --body session.json
"""

from __future__ import annotations

import argparse
import asyncio
import signal

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b'ETag: "bench-0001"\r\n'
    b"X-Xbl-Correlation-Id: 4b1a7c3e-0000-4000-8000-00000000beef\r\n"
    b"Content-Length: %d\r\n\r\n"
)


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip() or 0)
    return 0


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           answer: bytes) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = content_length(head)
            if length:
                await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(port: int, body: bytes) -> None:
    answer = HEAD % len(body) + body
    server = await asyncio.start_server(
        lambda r, w: serve_connection(r, w, answer), "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", required=True, help="file whose bytes every answer carries")
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        asyncio.run(main(args.port, f.read()))
