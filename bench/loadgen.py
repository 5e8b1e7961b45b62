"""An asyncio keep-alive HTTP/1.1 load generator, for machines without wrk.

Each of N connections sends GETs one after another (rotating over a list of
paths) for a fixed time, and the result is printed as the same `BENCH-JSON`
line the harness's wrk script prints: requests, duration, errors, p50 and p99
latency. It is slower than wrk (Python spends CPU the proxy then lacks), so
the harness uses wrk when it is installed; this keeps `make bench` and its
smoke test working anywhere.

    python bench/loadgen.py --url http://127.0.0.1:8080 --connections 16 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

#: A single request slower than this counts as an error (wrk's --timeout).
REQUEST_TIMEOUT_S = 5.0


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.non2xx = 0


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length bodies only); returns its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    if length:
        await reader.readexactly(length)
    return status


async def connection(host: str, port: int, paths: list[str], offset: int, deadline: float,
                     tally: Tally) -> None:
    """One keep-alive connection sending until the deadline; reconnects after an error."""
    i = offset
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), REQUEST_TIMEOUT_S)
        except (OSError, TimeoutError):
            tally.errors += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < deadline:
                path = paths[i % len(paths)]
                i += 1
                request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
                started = time.perf_counter()
                writer.write(request)
                status = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT_S)
                tally.latencies.append(time.perf_counter() - started)
                if not 200 <= status < 400:
                    tally.non2xx += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.errors += 1
        finally:
            writer.close()


async def main(url: str, connections: int, seconds: float, paths: list[str]) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    paths = paths or [parts.path or "/"]
    tally = Tally()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(connection(host, port, paths, n * 7, deadline, tally)
                           for n in range(connections)))
    elapsed = time.monotonic() - started
    latencies = sorted(tally.latencies)
    return {
        "requests": len(latencies), "duration_us": elapsed * 1e6, "errors": tally.errors,
        "non2xx": tally.non2xx, "p50_us": percentile(latencies, 50) * 1e6,
        "p99_us": percentile(latencies, 99) * 1e6,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--paths", help="JSON file with a list of paths to rotate over")
    args = parser.parse_args()
    path_list: list[str] = []
    if args.paths:
        with open(args.paths) as f:
            path_list = json.load(f)
    result = asyncio.run(main(args.url, args.connections, args.seconds, path_list))
    print("BENCH-JSON " + json.dumps(result), flush=True)
