"""interchange: HAR, mitmproxy flow files and SAZ, both ways, plus real mitmdump captures."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from conftest import free_port
from conftest import http_server
from mitmproxy import http
from mitmproxy import io as mio

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import faults
from mpsdproxy import interchange
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import secrets
from mpsdproxy.addons import flowfile

#: Every format the commands offer, mitmproxy flow files included.
ALL = flowfile.FORMATS
#: The formats whose round trip keeps every field (the analyzer's CSV keeps times to the
#: millisecond; its own tests cover it).
EXACT = [name for name in ALL if name != "csv"]

SCID = "6efc0200-1111-2222-3333-444455556666"
HOST = "sessiondirectory.xboxlive.com"
SESSION = f"https://{HOST}/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/lobby-1"
TOKEN = recording.redact_value("XBL3.0 x=2533274800000002;eyJhbGciOi")


def record(method: str, url: str, status: int | None, body: bytes = b"", *,
           headers: list[tuple[str, str]] | None = None, request_body: bytes = b"",
           request_headers: list[tuple[str, str]] | None = None,
           start: str = "2026-11-25T09:37:44.123456Z", end: str = "2026-11-25T09:37:44.175912Z",
           provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record as the recorder writes it: decoded bodies, redacted secrets, classified."""
    headers = headers or []
    request_headers = request_headers if request_headers is not None else [
        ("Host", HOST), ("Authorization", TOKEN), ("x-xbl-contract-version", "107"),
        ("Content-Type", "application/json; charset=utf-8")]
    response = None if status is None else model.Response(status, "", headers, body)
    cls = classify.classify(model.Exchange(model.Request(method, url, request_headers,
                                                         request_body), response))
    duration = round((recording.parse_timestamp(end) - recording.parse_timestamp(start)) * 1000, 3)
    return {
        "start": start, "end": end, "duration_ms": duration, "client": "127.0.0.1:50412",
        "request": {"method": method, "url": url, "headers": [list(h) for h in request_headers],
                    "body": recording.encode_body(request_body)},
        "response": None if status is None else {
            "status": status, "reason": catalog.get(cls.id).reason if cls.id else "Teapot",
            "headers": [list(h) for h in headers], "body": recording.encode_body(body)},
        "error": None if status is not None else "Connection killed.",
        "resource": None, "classification": cls.to_dict(),
        "provenance": provenance or {"source": "forwarded"},
    }


def session_doc() -> dict[str, Any]:
    return {"constants": {"system": {"version": 1, "maxMembersCount": 8}, "custom": {}},
            "properties": {"system": {}, "custom": {"note": "café ☕"}},
            "members": {"0": {"constants": {"system": {"xuid": "2533274800000002"}}}},
            "changeNumber": 1, "correlationId": "5c0ffee0-7e57-4000-8000-00000000c0de"}


def samples() -> list[dict[str, Any]]:
    """Exchanges that exercise what a round trip must keep."""
    doc = faults.encode_json(session_doc())
    busy = faults.build("503.service-unavailable", retry_after=7)
    json_headers = [("Content-Type", "application/json"), ("ETag", '"415f6d"'),
                    ("X-Xbl-Debug", "build=1"), ("X-Xbl-Debug", "mode=Create"),
                    ("Content-Length", str(len(doc)))]
    return [
        record("PUT", SESSION, 201, doc, headers=json_headers,
               request_body=b'{"members":{"me":{"properties":{"system":{"active":true}}}}}'),
        record("GET", SESSION, 200, doc,
               headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                        ("ETag", '"415f6d"')],
               start="2026-11-25T09:37:45.000001Z", end="2026-11-25T09:37:45.250000Z"),
        record("GET", SESSION, 503, busy.body, headers=busy.headers,
               provenance={"source": "injected", "rule": "busy", "phase": "request"}),
        record("POST", f"https://{HOST}/handles", 201,
               b'{"id":"c3f4d5a6-1b2c-4d3e-8f4a-00000000c003","type":"activity","version":1}',
               headers=[("Content-Type", "application/json"),
                        ("Location", "/handles/c3f4d5a6-1b2c-4d3e-8f4a-00000000c003")],
               request_headers=[("Authorization", TOKEN), ("Content-Type", "application/json")],
               request_body=b'{"type":"activity","version":1}'),
        record("DELETE", SESSION + "/members/me", 204),
        record("PUT", SESSION + "/properties", 400, "bad JSON: ü".encode(),
               headers=[("Content-Type", "text/plain; charset=utf-8")],
               request_body=b"\x00\xff\xfe not json"),
        record("PUT", SESSION, None, request_body=b'{"members":{"me":null}}',
               end="2026-11-25T09:37:46.000000Z"),
    ]


def write(path: Path, records: list[dict[str, Any]]) -> str:
    with recording.Writer(path) as w:
        for r in records:
            w.write(json.loads(json.dumps(r)))
    return str(path)


KEPT = ("start", "end", "client", "request", "response", "error", "provenance",
        "classification")


def _as_recorded(original: Any, again: Any) -> Any:
    """`again` without the wire bytes a format added (a flow file holds them; a record
    written without them said only the decoded body, which stays the same)."""
    if isinstance(original, dict) and isinstance(again, dict) and "encoded" not in original:
        return {k: v for k, v in again.items() if k != "encoded"}
    return again


def assert_same_exchanges(original: str, imported: str) -> None:
    before = list(recording.read(original, strict=True))
    after = list(recording.read(imported, strict=True))
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        for key in KEPT:
            assert _as_recorded(a[key], b[key]) == a[key], (a["seq"], key)
        assert b["duration_ms"] == pytest.approx(a["duration_ms"], abs=0.002)
        if a["resource"]:
            assert b["resource"] == a["resource"]
        else:  # written without one: the import names it
            assert b["resource"]["kind"] != "unknown"


@pytest.fixture
def sample_recording(tmp_path: Path) -> str:
    return write(tmp_path / "sample.jsonl", samples())


@pytest.mark.parametrize("fmt", EXACT)
def test_round_trip_keeps_the_exchanges(fmt: str, sample_recording: str, tmp_path: Path) -> None:
    exported = str(tmp_path / f"out.{fmt}")
    result = interchange.export_file(sample_recording, exported, fmt, formats=ALL)
    assert (result.count, result.skipped, result.issues) == (7, [], [])
    back = str(tmp_path / "back.jsonl")
    imported = interchange.import_file(exported, back, formats=ALL)
    assert (imported.count, imported.skipped, imported.first_seq, imported.last_seq) == (
        7, [], 1, 7)
    assert_same_exchanges(sample_recording, back)


def test_har_is_a_har_mitmproxy_itself_reads(sample_recording: str, tmp_path: Path) -> None:
    out = tmp_path / "out.har"
    interchange.export_file(sample_recording, str(out), "har", formats=ALL)
    log = json.loads(out.read_text())["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "mpsdproxy"
    first = log["entries"][0]
    assert first["startedDateTime"] == "2026-11-25T09:37:44.123456+00:00"
    assert first["time"] == pytest.approx(52.456, abs=0.002)
    assert first["response"]["status"] == 201
    assert {"name": "Authorization", "value": TOKEN} in first["request"]["headers"]
    assert first["_mpsd"] == {"seq": 1, "client": "127.0.0.1:50412",
                              "provenance": {"source": "forwarded"}}
    assert log["entries"][5]["request"]["postData"]["encoding"] == "base64"
    unanswered = log["entries"][6]["response"]
    assert unanswered["_error"] == "Connection killed."
    assert (unanswered["status"], unanswered["content"]) == (0, {"size": 0, "mimeType": ""})
    with out.open("rb") as f:
        flows = list(mio.FlowReader(f).stream())
    assert [f.request.method for f in flows] == ["PUT", "GET", "GET", "POST", "DELETE", "PUT",
                                                 "PUT"]
    assert flows[1].response.json()["changeNumber"] == 1


def test_mitm_file_is_a_flow_file_with_the_mark(sample_recording: str, tmp_path: Path) -> None:
    out = tmp_path / "out.mitm"
    interchange.export_file(sample_recording, str(out), "mitm", formats=ALL)
    with out.open("rb") as f:
        flows = list(mio.FlowReader(f).stream())
    assert all(isinstance(f, http.HTTPFlow) for f in flows)
    assert [f.metadata["mpsd"]["seq"] for f in flows] == [1, 2, 3, 4, 5, 6, 7]
    assert flows[2].metadata["mpsd"]["provenance"]["rule"] == "busy"
    gzipped = flows[1].response
    assert gzipped.raw_content[:2] == b"\x1f\x8b"  # the wire form, as mitmproxy keeps it
    assert gzipped.json()["changeNumber"] == 1
    assert flows[6].response is None and flows[6].error.msg == "Connection killed."
    assert flows[0].request.headers.get_all("x-xbl-debug") == []
    assert flows[0].response.headers.get_all("x-xbl-debug") == ["build=1", "mode=Create"]


def test_saz_is_laid_out_as_the_trace_analyzer_reads_it(sample_recording: str,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out.saz"
    interchange.export_file(sample_recording, str(out), "saz", formats=ALL)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert names[0] == "[Content_Types].xml"
        assert names[1:4] == ["raw/001_c.txt", "raw/001_m.xml", "raw/001_s.txt"]
        assert len(names) == 1 + 3 * 7
        for n in range(1, 8):
            request = archive.read(f"raw/{n:03d}_c.txt")
            line, _, rest = request.partition(b"\r\n")
            method, url, version = line.decode().split(" ")
            assert url.startswith("https://") and version == "HTTP/1.1"
            assert b"\r\nHost: " in b"\r\n" + rest.partition(b"\r\n\r\n")[0]
            meta = ElementTree.fromstring(archive.read(f"raw/{n:03d}_m.xml"))
            timers = meta.find("SessionTimers").attrib
            assert timers["ClientBeginRequest"].endswith("+00:00")
            flags = {f.get("N"): f.get("V") for f in meta.iter("SessionFlag")}
            assert flags["x-clientip"] == "127.0.0.1"
        assert archive.read("raw/001_s.txt").startswith(b"HTTP/1.1 201 Created\r\n")
        assert archive.read("raw/007_s.txt") == b""
        first = ElementTree.fromstring(archive.read("raw/001_m.xml"))
        flags = {f.get("N"): f.get("V") for f in first.iter("SessionFlag")}
        assert flags["ui-comments"] == "201.created"
        assert first.find("SessionTimers").get("ClientDoneResponse") == \
            "2026-11-25T09:37:44.1759120+00:00"
        assert b"\r\n\r\n\x1f\x8b" in archive.read("raw/002_s.txt")  # gzip, as on the wire
        handles = ElementTree.fromstring(archive.read("raw/004_m.xml"))
        assert any(f.get("N") == "x-mpsd-added-host" for f in handles.iter("SessionFlag"))


def test_records_without_an_absolute_url_are_skipped(tmp_path: Path) -> None:
    bad = record("GET", "/serviceconfigs/x", 200)
    path = write(tmp_path / "r.jsonl", [bad, *samples()[:1]])
    for fmt in ALL:
        result = interchange.export_file(path, str(tmp_path / f"o.{fmt}"), fmt, formats=ALL)
        assert result.count == 1
        assert "not an absolute http(s) URL" in result.skipped[0]


def test_a_record_no_wire_could_carry_is_skipped_and_named(tmp_path: Path) -> None:
    bad = record("GET", SESSION, 200)
    bad["request"]["headers"].append(["X-Title", "a\r\nSet-Cookie: x=1"])
    path = write(tmp_path / "r.jsonl", [bad, *samples()[:1]])
    for fmt in ALL:
        result = interchange.export_file(path, str(tmp_path / f"o.{fmt}"), fmt, formats=ALL)
        assert result.count == 1
        assert result.skipped[0].startswith("record 1: cannot be exported")


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00.000000Z"])
def test_a_record_at_the_end_of_time_is_skipped_and_named_not_the_whole_export(
        tmp_path: Path, moment: str) -> None:
    """A time a format cannot write (HAR's and SAZ's clocks stop at year 9999) costs that
    record, named, not every other one."""
    odd = {**record("GET", SESSION, 200), "start": moment, "end": moment}
    path = write(tmp_path / "r.jsonl", [odd, *samples()[:2]])
    for fmt in ALL:
        result = interchange.export_file(path, str(tmp_path / f"o.{fmt}"), fmt, formats=ALL)
        assert result.count in (2, 3), fmt
        assert all(line.startswith("record 1: cannot be exported") for line in result.skipped)
        assert result.count + len(result.skipped) == 3, (fmt, result.skipped)


def test_export_never_overwrites_its_input(sample_recording: str) -> None:
    with pytest.raises(ValueError, match="writing it would destroy it"):
        interchange.export_file(sample_recording, sample_recording, "har", formats=ALL)


# --- bytes that are not UTF-8 ------------------------------------------------------------

ODD_URL = f"https://{HOST}/serviceconfigs/{SCID}/sessionTemplates/LobbySession/sessions/caf\udce9"


def odd_recording(tmp_path: Path) -> str:
    """A path byte 0xE9 and header bytes 0xFF, as the recorder keeps them."""
    odd = record("GET", ODD_URL, 200, b'{"a":1}',
                 headers=[("Content-Type", "application/json"), ("X-Odd", "\udcffend")],
                 request_headers=[("Host", HOST), ("X-Title", "Caf\udce9 \udcff")])
    return write(tmp_path / "odd.jsonl", [odd, *samples()[:1]])


@pytest.mark.parametrize("fmt", ALL)
def test_non_utf8_bytes_export_and_import(fmt: str, tmp_path: Path) -> None:
    path = odd_recording(tmp_path)
    out = tmp_path / f"odd.{fmt}"
    result = interchange.export_file(path, str(out), fmt, formats=ALL)
    assert (result.count, result.skipped, result.issues) == (2, [], [])
    back = str(tmp_path / "back.jsonl")
    assert interchange.import_file(str(out), back, formats=ALL).count == 2
    rec = next(recording.read(back, strict=True))
    if fmt == "har":  # strict UTF-8 text: the URL byte percent-encoded, header bytes shown
        out.read_bytes().decode("utf-8")
        assert rec["request"]["url"] == ODD_URL.replace("\udce9", "%E9")
        assert dict(rec["request"]["headers"])["X-Title"] == "Caf\\xe9 \\xff"
    else:  # the bytes as they were
        assert rec["request"]["url"] == ODD_URL
        assert dict(rec["request"]["headers"])["X-Title"] == "Caf\udce9 \udcff"
        assert dict(rec["response"]["headers"])["X-Odd"] == "\udcffend"
    assert rec["response"]["body"] == {"json": {"a": 1}}


def test_saz_writes_header_and_url_bytes_as_they_were(tmp_path: Path) -> None:
    out = tmp_path / "odd.saz"
    interchange.export_file(odd_recording(tmp_path), str(out), "saz")
    with zipfile.ZipFile(out) as archive:
        request = archive.read("raw/001_c.txt")
        response = archive.read("raw/001_s.txt")
    assert request.startswith(b"GET " + ODD_URL.encode("utf-8", "surrogateescape") + b" ")
    assert b"\r\nX-Title: Caf\xe9 \xff\r\n" in request
    assert b"\r\nX-Odd: \xffend\r\n" in response


def browser_har() -> dict[str, Any]:
    doc = json.dumps(session_doc())
    return {"log": {"version": "1.2", "creator": {"name": "Firefox", "version": "120"},
                    "entries": [
        {"startedDateTime": "2026-11-25T10:37:44.123+01:00", "time": 80,
         "request": {"method": "GET", "url": SESSION, "httpVersion": "HTTP/2",
                     "headers": [{"name": "Host", "value": HOST},
                                 {"name": "Authorization", "value": "XBL3.0 x=1;secret"}],
                     "cookies": [], "queryString": [], "headersSize": -1, "bodySize": 0},
         "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/2",
                      "headers": [{"name": "content-type", "value": "application/json"}],
                      "content": {"size": len(doc), "mimeType": "application/json",
                                  "text": doc},
                      "redirectURL": "", "headersSize": -1, "bodySize": -1},
         "cache": {}, "timings": {"send": 0, "wait": 80, "receive": 0}},
        {"startedDateTime": "2026-11-25T10:37:45.000+01:00", "time": 5,
         "request": {"method": "GET", "url": "https://example.com/other", "httpVersion": "HTTP/1.1",
                     "headers": [], "cookies": [], "queryString": [], "headersSize": -1,
                     "bodySize": 0},
         "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                      "headers": [], "content": {"size": 0, "mimeType": ""},
                      "redirectURL": "", "headersSize": -1, "bodySize": -1},
         "cache": {}, "timings": {"send": 0, "wait": 5, "receive": 0}},
    ]}}


def test_a_browser_har_imports_redacted_and_classified(tmp_path: Path) -> None:
    src = tmp_path / "devtools.har"
    src.write_text(json.dumps(browser_har()))
    out = str(tmp_path / "imported.jsonl")
    result = interchange.import_file(str(src), out, hosts=[HOST], formats=ALL)
    assert result.count == 1
    assert result.skipped == []
    assert result.kept_by_host == {HOST: 1}
    assert result.dropped_by_host == {"example.com": 1}
    [rec] = list(recording.read(out, strict=True))
    assert rec["start"] == "2026-11-25T09:37:44.123000Z"
    assert rec["end"] == "2026-11-25T09:37:44.203000Z"
    assert dict(rec["request"]["headers"])["Authorization"] == recording.redact_value(
        "XBL3.0 x=1;secret")
    assert rec["classification"]["id"] == "200.ok"
    assert rec["provenance"] == {"source": "imported", "format": "har", "file": "devtools.har"}
    assert rec["resource"]["kind"] == "session"


def fiddler_saz(path: Path) -> None:
    """A capture as Fiddler saves it: local-time timers, chunked gzip, a CONNECT tunnel."""
    body = gzip.compress(json.dumps(session_doc()).encode())
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    meta = ('<?xml version="1.0" encoding="utf-8"?><Session SID="{n}" BitFlags="0">'
            '<SessionTimers ClientBeginRequest="2016-09-20T13:50:00.5180901-07:00" '
            'ClientDoneRequest="2016-09-20T13:50:00.5180901-07:00" '
            'GotResponseHeaders="2016-09-20T13:50:00.6000000-07:00" '
            'ClientDoneResponse="2016-09-20T13:50:00.6180901-07:00" />'
            '<SessionFlags><SessionFlag N="X-CLIENTIP" V="::ffff:10.0.0.5" />'
            '<SessionFlag N="x-clientport" V="50999" /></SessionFlags></Session>')
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("[Content_Types].xml", "<Types />")
        z.writestr("raw/01_c.txt", f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n")
        z.writestr("raw/01_m.xml", meta.format(n=1))
        z.writestr("raw/01_s.txt", "HTTP/1.1 200 Connection Established\r\n\r\n")
        z.writestr("raw/02_c.txt", f"GET {SESSION} HTTP/1.1\r\nHost: {HOST}\r\n"
                   "Authorization: XBL3.0 x=2533274800000002;token\r\n\r\n")
        z.writestr("raw/02_m.xml", meta.format(n=2))
        z.writestr("raw/02_s.txt", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
                   b"ETag: \"415f\"\r\n\r\n" + chunked)


def test_a_fiddler_saz_imports(tmp_path: Path) -> None:
    src = tmp_path / "capture.saz"
    fiddler_saz(src)
    out = str(tmp_path / "imported.jsonl")
    result = interchange.import_file(str(src), out, formats=ALL)
    assert (result.count, result.skipped) == (1, ["session 1: CONNECT"])
    [rec] = list(recording.read(out, strict=True))
    assert rec["request"]["url"] == SESSION
    assert rec["start"] == "2016-09-20T20:50:00.518090Z"
    assert rec["duration_ms"] == pytest.approx(100.0, abs=0.002)
    assert rec["client"] == "10.0.0.5:50999"
    assert json.loads(recording.decode_body(rec["response"]["body"]))["changeNumber"] == 1
    assert rec["classification"] == {"id": "200.ok", "meaning": rec["classification"]["meaning"],
                                     "anomalies": []}
    assert secrets.is_redacted(dict(rec["request"]["headers"])["Authorization"])


@pytest.mark.parametrize("name, content, expected", [
    ("x.har", b"", "har"),
    ("x.MITM", b"", "mitm"),
    ("x.saz", b"", "saz"),
    ("capture", b"PK\x03\x04", "saz"),
    ("capture", b"\xef\xbb\xbf{\"log\"", "har"),
    ("capture", b"1234:", "mitm"),
])
def test_guess_format(tmp_path: Path, name: str, content: bytes, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert interchange.guess_format(str(path), ALL) == expected


@pytest.mark.parametrize("fmt, content, message", [
    ("har", b'{"no": "log"}', "not a HAR file"),
    ("saz", b"not a zip", "not a SAZ archive"),
    ("mitm", b"12:not a tnetstring", "not a mitmproxy flow file"),
])
def test_import_rejects_files_not_in_the_format(tmp_path: Path, fmt: str, content: bytes,
                                                message: str) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        interchange.import_file(str(src), str(tmp_path / "out.jsonl"), fmt, formats=ALL)


def test_a_truncated_flow_file_keeps_the_flows_before_the_cut(sample_recording: str,
                                                              tmp_path: Path) -> None:
    whole = tmp_path / "whole.mitm"
    interchange.export_file(sample_recording, str(whole), "mitm", formats=ALL)
    cut = tmp_path / "cut.mitm"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) - 40])  # as a killed mitmdump leaves it
    result = interchange.import_file(str(cut), str(tmp_path / "out.jsonl"), formats=ALL)
    assert result.count == 6
    assert len(result.skipped) == 1 and "unreadable" in result.skipped[0]


def test_unknown_format_is_refused(tmp_path: Path, sample_recording: str) -> None:
    with pytest.raises(ValueError, match="one of csv, har, mitm, saz, not 'pcap'"):
        interchange.export_file(sample_recording, str(tmp_path / "x"), "pcap", formats=ALL)
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="cannot tell the format"):
        interchange.guess_format(str(tmp_path / "x.bin"), ALL)


# --- a flow file written by plain mitmdump ---------------------------------------------------

@contextlib.contextmanager
def upstream() -> Iterator[int]:
    """A tiny session directory: PUT creates, GET reads, DELETE leaves."""
    doc = faults.encode_json(session_doc())

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: bytes = b"", ctype: str = "application/json"
                    ) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            if body:
                self.send_header("Content-Type", ctype)
                self.send_header("ETag", '"1"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            self._answer(201, doc)

        def do_GET(self) -> None:
            self._answer(200, doc)

        def do_DELETE(self) -> None:
            self._answer(204)

        def log_message(self, *args: Any) -> None:
            pass

    with http_server(Handler) as port:
        yield port


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mitmdump exited early: {proc.stderr.read().decode()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise AssertionError(f"mitmdump did not listen on {port} within {seconds} s")


@pytest.fixture
def mitmdump_capture(tmp_path: Path) -> str:
    """Three exchanges captured by plain `mitmdump -w` in reverse mode."""
    out = tmp_path / "capture.mitm"
    mitmdump = Path(sys.executable).with_name("mitmdump")
    with upstream() as up:
        port = free_port()
        proc = subprocess.Popen(
            [str(mitmdump), "--mode", f"reverse:http://127.0.0.1:{up}", "--listen-host",
             "127.0.0.1", "--listen-port", str(port), "-w", str(out), "-q",
             "--set", f"confdir={tmp_path / 'conf'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port, proc)
            base = f"http://127.0.0.1:{port}{SESSION.removeprefix('https://' + HOST)}"
            headers = {"Authorization": "XBL3.0 x=2533274800000002;secret-token",
                       "x-xbl-contract-version": "107"}
            with httpx.Client(timeout=10) as client:
                assert client.put(base, json={"members": {"me": {}}},
                                  headers=headers).status_code == 201
                assert client.get(base, headers=headers).status_code == 200
                assert client.delete(base + "/members/me", headers=headers).status_code == 204
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stderr:
                proc.stderr.close()
    assert out.stat().st_size > 0
    return str(out)


def test_a_plain_mitmdump_capture_imports_classified(mitmdump_capture: str,
                                                     tmp_path: Path) -> None:
    out = str(tmp_path / "imported.jsonl")
    result = interchange.import_file(mitmdump_capture, out, formats=ALL)
    assert (result.count, result.skipped) == (3, [])
    records = list(recording.read(out, strict=True))
    assert [r["request"]["method"] for r in records] == ["PUT", "GET", "DELETE"]
    assert [r["classification"]["id"] for r in records] == [
        "201.created", "200.ok", "204.element-gone"]
    assert [r["resource"]["kind"] for r in records] == ["session", "session", "member"]
    for r in records:
        auth = dict(r["request"]["headers"])["Authorization"]
        assert auth == recording.redact_value("XBL3.0 x=2533274800000002;secret-token")
        assert r["provenance"] == {"source": "imported", "format": "mitm",
                                   "file": "capture.mitm"}
        assert r["start"] and r["end"] and r["duration_ms"] >= 0
    assert records[0]["request"]["body"] == {"json": {"members": {"me": {}}}}
    assert records[1]["response"]["body"]["json"]["changeNumber"] == 1

    # and on to the other formats, and back, without loss
    for fmt in ("har", "saz"):
        exported = str(tmp_path / f"capture.{fmt}")
        interchange.export_file(out, exported, fmt, formats=ALL)
        again = str(tmp_path / f"again-{fmt}.jsonl")
        interchange.import_file(exported, again, formats=ALL)
        assert_same_exchanges(out, again)


def test_flow_files_keep_the_exchanges_of_the_recording(sample_recording: str) -> None:
    exchanges = list(interchange.exchanges_of(recording.read(sample_recording)))
    buffer = io.BytesIO()
    assert flowfile.write_flows(exchanges, buffer) == 7
    buffer.seek(0)
    back = list(flowfile.read_flows(buffer, {"source": "imported"}))
    assert [e.request for e in back] == [e.request for e in exchanges]
    assert [e.response for e in back] == [e.response for e in exchanges]
    assert [e.provenance for e in back] == [e.provenance for e in exchanges]
    assert [e.seq for e in back] == [1, 2, 3, 4, 5, 6, 7]


def test_write_har_streams_to_any_text_file(sample_recording: str) -> None:
    buffer = io.StringIO()
    count = interchange.write_har(interchange.exchanges_of(recording.read(sample_recording)),
                                  buffer)
    assert count == 7
    assert len(json.loads(buffer.getvalue())["log"]["entries"]) == 7


# --- real captures (public test data beside the clone; read in place, never copied) -----------

CAPTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "captures"


@pytest.mark.parametrize("fmt", EXACT)
def test_a_real_fiddler_capture_imports_and_round_trips(fmt: str, tmp_path: Path) -> None:
    capture = CAPTURES / "x49_mp_cs21.saz"
    if not capture.exists():
        pytest.skip(f"{capture} is not beside the clone")
    imported = str(tmp_path / "capture.jsonl")
    result = interchange.import_file(str(capture), imported, formats=ALL)
    assert result.count > 0
    assert result.skipped and all(s.endswith(": CONNECT") for s in result.skipped)
    records = list(recording.read(imported, strict=True))
    mpsd = [r for r in records if r["resource"]["kind"] == "session"]
    assert [r["classification"]["id"] for r in mpsd].count("412.if-match-session") == 2
    for r in records:
        for name, value in r["request"]["headers"]:
            if name.lower() in ("authorization", "signature"):
                assert secrets.is_redacted(value)
    exported = str(tmp_path / f"capture.{fmt}")
    assert interchange.export_file(imported, exported, fmt, formats=ALL).count == result.count
    again = str(tmp_path / "again.jsonl")
    assert interchange.import_file(exported, again, formats=ALL).count == result.count
    assert_same_exchanges(imported, again)


def test_an_export_redacts_a_private_recording(tmp_path: Path) -> None:
    """A recording made with redaction off still exports safe to share, unless told."""
    token = "XBL3.0 x=1001;" + "eyJ" + "q" * 60 + "." + "r" * 80 + "." + "s" * 43
    exchange = model.Exchange(
        model.Request("GET", f"https://{HOST}/serviceconfigs/s/sessiontemplates/t/sessions/n",
                      [("Authorization", token)]),
        model.Response(204, "No Content"), start=1.0, end=1.5)
    private = tmp_path / "private.jsonl"
    with recording.Writer(private) as w:
        w.write(recording.to_record(exchange, recording.Redactor(enabled=False)))
    for fmt in ALL:
        out = tmp_path / f"shared.{fmt}"
        interchange.export_file(str(private), str(out), fmt, formats=ALL)
        assert token.encode() not in out.read_bytes(), fmt
    kept = tmp_path / "kept.har"
    interchange.export_file(str(private), str(kept), "har", formats=ALL,
                            redactor=recording.Redactor(enabled=False))
    assert token.encode() in kept.read_bytes()
