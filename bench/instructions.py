"""Instructions per request under callgrind: the overhead part's figure without noise.

Identical proxy processes differ here by up to a fifth in CPU time per request, so a
gap of a few per cent between two revisions hides in the noise of the timed rounds.
The number of instructions a process executes to answer a request hardly varies at
all: this measure runs each proxy under valgrind's callgrind, sends it a warm-up,
zeroes the counters (`callgrind_control -z`), sends `requests` plain session GETs over
one connection, and dumps the counters (`-d`). Instructions per request is the dump's
total divided by the requests. An A/A pair (two processes of today's full proxy)
shows what is left of the noise.

It counts instructions, not time: cache misses, which make more objects cost more
than their instructions say, are not in it. The timed rounds stay the measure of
throughput and latency; this one says how much more work a revision does.

Needs `valgrind` and `callgrind_control` (Debian package `valgrind`); without them
the overhead part leaves this measure out and says so.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from bench import common

#: How long a proxy may take to start under callgrind (Python runs about fifty times slower).
STARTUP_S = 600.0
#: Requests sent before the counters are zeroed: imports and first-use work are done by then.
WARM_UP = 200
_TOTALS = re.compile(rb"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def available() -> bool:
    """Whether valgrind's callgrind and its control tool are installed."""
    return bool(shutil.which("valgrind") and shutil.which("callgrind_control"))


def _send(port: int, paths: Sequence[str], count: int) -> None:
    """`count` GETs over one kept-alive connection, rotating over `paths`; each must be a 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for i in range(count):
            connection.request("GET", paths[i % len(paths)])
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"proxy on {port} answered {answer.status}")
    finally:
        connection.close()


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, timeout=120, check=True)


def _dumped_total(out: Path) -> int:
    """The instruction total of the newest dump callgrind wrote next to `out`."""
    dumps = sorted(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for {out}")
    found = _TOTALS.search(dumps[-1].read_bytes())
    if found is None:
        raise RuntimeError(f"no instruction total in {dumps[-1]}")
    return int(found.group(1))


def start(services: common.Services, name: str, argv: Sequence[str], port: int,
          env: dict[str, str] | None = None) -> tuple[common.Service, Path]:
    """Start `argv` (a proxy listening on `port`) under callgrind; returns the service
    and the file its counters are dumped beside."""
    out = services.workdir / f"{name}.callgrind"
    wrapped = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
    return services.spawn(name, wrapped, port, env=env), out


def per_request(service: common.Service, out: Path, paths: Sequence[str],
                requests: int) -> float:
    """Instructions the proxy executes per request, over `requests` after a warm-up; the
    process is stopped afterwards."""
    service.wait_listening(STARTUP_S)
    _send(service.port, paths, WARM_UP)
    _control("-z", str(service.pid))
    _send(service.port, paths, requests)
    _control("-d", str(service.pid))
    total = _dumped_total(out)
    service.stop()
    return total / requests
