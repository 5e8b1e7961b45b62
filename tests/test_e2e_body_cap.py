"""End to end, over real sockets: a body over the cap reaches the title whole, and its
record keeps only its start, marked truncated (issue: a 1 GiB upstream body cost
4.36 GB, a gzip body inflated into a 316 MB record line).

The upstream is a plain http.server; the proxy runs in reverse mode in front of it
with `--body-cap 1m`.
"""

from __future__ import annotations

import gzip
import http.client
import json
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import Launcher
from conftest import Process
from conftest import http_server
from conftest import read_records

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import title

CAP = 1024 * 1024
#: A long run of token characters right where a record would cut a body: the cut must
#: not keep a piece of it.
TOKEN_AT_CUT = b"eyJ" + b"A" * 200
BIG = (b"x" * (model.KEPT_OF_TRUNCATED - 100) + TOKEN_AT_CUT
       + b"y" * (3 * CAP - model.KEPT_OF_TRUNCATED - 100 - len(TOKEN_AT_CUT)))
#: Small on the wire, 8 MiB once inflated.
INFLATED = b"0123456789 " * (8 * CAP // 11)
BOMB = gzip.compress(INFLATED)
SMALL = json.dumps({"contractVersion": 107, "changeNumber": 3}, separators=(",", ":")).encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.rsplit("/", 1)[-1]
        if name == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BIG), 256 * 1024):
                chunk = BIG[start:start + 256 * 1024]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        body, extra = {"big": (BIG, {}), "bomb": (BOMB, {"Content-Encoding": "gzip"}),
                       }.get(name, (SMALL, {}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def proxy(launch: Launcher) -> Process:
    with http_server(Upstream) as port:
        yield launch.proxy("--mode", f"reverse:http://127.0.0.1:{port}", "--quiet",
                           "--body-cap", "1m")


def fetch(proxy: Process, name: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        connection.request("GET", title.session_path(name), headers=dict([title.CONTRACT]))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        connection.close()


def records_by_name(proxy: Process) -> dict[str, dict]:
    proxy.stop()
    assert proxy.record is not None
    return {r["request"]["url"].rsplit("/", 1)[-1]: r for r in read_records(proxy.record)}


def test_a_body_over_the_cap_reaches_the_title_whole_and_is_recorded_in_part(
        proxy: Process) -> None:
    status, _, body = fetch(proxy, "big")
    assert status == 200 and body == BIG
    assert fetch(proxy, "small")[2] == SMALL

    records = records_by_name(proxy)
    big = records["big"]["response"]
    assert big["truncated"]["size"] == len(BIG) and big["truncated"]["wire"] is True
    kept = recording.decode_body(big["body"])
    assert big["truncated"]["kept"] == len(kept) < model.KEPT_OF_TRUNCATED
    assert BIG.startswith(kept) and b"eyJ" not in kept  # cut before the token began
    assert "truncated" not in records["small"]["response"]
    assert records["small"]["response"]["body"] == {"json": json.loads(SMALL)}


def test_a_chunked_body_that_grows_past_the_cap_is_streamed_and_marked(proxy: Process) -> None:
    status, _, body = fetch(proxy, "chunked")
    assert status == 200 and body == BIG
    chunked = records_by_name(proxy)["chunked"]["response"]
    assert chunked["truncated"] == {"size": None, "kept": 0, "wire": True}


def test_a_body_that_inflates_past_the_cap_is_recorded_in_part(proxy: Process) -> None:
    status, headers, body = fetch(proxy, "bomb")
    assert status == 200 and headers.get("content-encoding") == "gzip" and body == BOMB
    proxy.stop()
    assert proxy.record is not None
    line = next(line for line in proxy.record.read_bytes().splitlines() if b"bomb" in line)
    assert len(line) < 2 * model.KEPT_OF_TRUNCATED  # not 8 MiB of zeros
    bomb = json.loads(line)["response"]
    kept = recording.decode_body(bomb["body"])
    assert bomb["truncated"] == {"size": len(INFLATED), "kept": len(kept), "wire": False}
    assert INFLATED.startswith(kept) and kept.endswith(b" ")  # decoded, cut at a space
    assert model.KEPT_OF_TRUNCATED - 11 < len(kept) <= model.KEPT_OF_TRUNCATED


def test_a_truncated_record_reads_back_as_truncated(proxy: Process) -> None:
    fetch(proxy, "big")
    record = records_by_name(proxy)["big"]
    exchange = recording.to_exchange(record)
    assert exchange.response is not None
    assert exchange.response.truncated == model.Truncated(len(BIG),
                                                          len(exchange.response.body), True)
