"""Fiddler SAZ archives (Fiddler, the Xbox Live Trace Analyzer), both ways.

Layout, as Fiddler writes it and the Trace Analyzer reads it: a zip with
`[Content_Types].xml` and, per exchange N, `raw/N_c.txt` (request line with
the absolute URL, headers, body), `raw/N_m.xml` (session timers and flags)
and `raw/N_s.txt` (status line, headers, body; empty when no response came),
in that order. The Trace Analyzer needs a `Host:` header and the
`x-clientip` flag: a missing Host is added (and flagged, so import removes it
again) and an unknown client is written as 127.0.0.1.

The messages are HTTP/1 as it was on the wire: header and URL bytes exactly
as recorded (a byte that is not UTF-8 stays that byte), bodies encoded with
their Content-Encoding, and chunked when their Transfer-Encoding says so.
Reading parses them here, leniently (captures hold what Fiddler saw), and
undoes chunking and Content-Encoding as the recorder does, keeping the
bytes that came (`encoded`) so a round trip gives them back exactly. A
message without them (a body changed by redaction) is encoded again, and its
Content-Length set to what is written.

Websocket sessions: the frames Fiddler saves in `raw/N_w.txt` become
`WebsocketMessage`s yielded right after their 101 handshake (the import puts
them among the exchanges by time), and are written back as the `_w.txt` of
their handshake's session wherever they stand in the recording. The Fiddler
process column (`x-ProcessInfo`, `x49.exe:1234`) comes with each session from
`read_sessions`.

Bounded reading: a member is read up to `max_body` (64 MiB by default) past
its head; the rest of a bigger one is cut off and named in `skipped`, and a
member that inflates more than `MAX_RATIO` times its stored size (a zip
bomb) is not read at all.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import IO
from typing import Any
from xml.etree import ElementTree

from mpsdproxy import encoding
from mpsdproxy import model
from mpsdproxy.interchange.common import UNWRITABLE
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import comment
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.common import skip_record
from mpsdproxy.interchange.common import split_address
from mpsdproxy.interchange.wsframes import Frame
from mpsdproxy.interchange.wsframes import fiddler_time
from mpsdproxy.interchange.wsframes import parse_time
from mpsdproxy.interchange.wsframes import read_frames
from mpsdproxy.interchange.wsframes import write_frames
from mpsdproxy.recording.messages import WebsocketMessage

__all__ = ["write_saz", "read_saz", "read_sessions", "process_name", "MAX_BODY", "MAX_RATIO"]

#: The most bytes read of one archive member past its head (`--max-body`).
MAX_BODY = 64 * 1024 * 1024
#: A member inflating more than this many times its stored size is refused (a zip
#: bomb): text compresses well, but not a thousandfold.
MAX_RATIO = 200
#: Members smaller than this are read whatever their ratio (nothing to fear).
_RATIO_FLOOR = 1024 * 1024
_HEAD_ALLOWANCE = 256 * 1024

Item = model.Exchange | WebsocketMessage

_FLAG_PREFIX = "x-mpsd-"

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="utf-8" ?>\r\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="htm" ContentType="text/html" />'
    '<Default Extension="xml" ContentType="application/xml" />'
    '<Default Extension="txt" ContentType="text/plain" />'
    "</Types>"
)


# --- writing ---------------------------------------------------------------------------------

def _chunked(headers: model.Headers) -> bool:
    return "chunked" in (headers.get("transfer-encoding") or "").lower()


def _message(first_line: bytes, headers: model.Headers, body: bytes,
             encoded: bytes | None) -> bytes:
    """One HTTP/1 message: the body as the wire carried it (`encoded`), else encoded
    again with its Content-Encoding; chunked when its Transfer-Encoding says so, else
    with a Content-Length that matches it. An empty body keeps the Content-Length it
    declared: a HEAD or 304 answer, or a capture that did not save the body."""
    wire = encoded if encoded is not None else encoding.wire_body(
        body, headers.get("content-encoding"))
    if _chunked(headers):
        wire = (b"%x\r\n%s\r\n" % (len(wire), wire) if wire else b"") + b"0\r\n\r\n"
    elif wire and headers.first("content-length") not in (None, str(len(wire))):
        headers = headers.with_value("Content-Length", str(len(wire)))
    head = b"".join(k + b": " + v + b"\r\n" for k, v in headers.raw())
    return first_line + b"\r\n" + head + b"\r\n" + wire


def _request_text(exchange: model.Exchange) -> tuple[bytes, bool]:
    """`raw/N_c.txt`: the request with its absolute URL; True when Host was added."""
    request = exchange.request
    headers = request.headers
    added = "host" not in headers
    if added:
        netloc = request.url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        headers = model.Headers([("Host", netloc), *headers])
    line = model.to_bytes(f"{request.method} {request.url} HTTP/1.1")
    return _message(line, headers, request.body, request.encoded), added


def _response_text(response: model.Response | None) -> bytes:
    if response is None:
        return b""
    line = b"HTTP/1.1 %d " % response.status + model.to_bytes(response.reason)
    return _message(line, response.headers, response.body, response.encoded)


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_value(text: str) -> str:
    """Text an XML attribute can hold: printable, without the control characters XML
    forbids."""
    return _XML_BAD.sub("?", model.printable(text))


def _flags(exchange: model.Exchange, added_host: bool) -> Iterator[tuple[str, str]]:
    host, port = split_address(exchange.client) or ("127.0.0.1", 0)
    yield "x-clientip", host
    yield "x-clientport", str(port)
    yield "ui-comments", comment(exchange)
    yield _FLAG_PREFIX + "seq", str(exchange.seq)
    yield _FLAG_PREFIX + "provenance", json.dumps(dict(exchange.provenance))
    if exchange.response is None:
        yield _FLAG_PREFIX + "error", exchange.error or "no response"
    if added_host:
        yield _FLAG_PREFIX + "added-host", "true"


def _meta(number: int, exchange: model.Exchange, added_host: bool) -> bytes:
    start = exchange.start if exchange.start is not None else time.time()
    end = exchange.end if exchange.end is not None else start
    first, last = fiddler_time(start), fiddler_time(end)
    session = ElementTree.Element("Session", SID=str(number), BitFlags="0")
    timers = {name: first for name in (
        "ClientConnected", "ClientBeginRequest", "GotRequestHeaders", "ClientDoneRequest")}
    timers.update({"GatewayTime": "0", "DNSTime": "0", "TCPConnectTime": "0",
                   "HTTPSHandshakeTime": "0", "ServerConnected": first,
                   "FiddlerBeginRequest": first, "ServerGotRequest": first})
    timers.update({name: last for name in (
        "ServerBeginResponse", "GotResponseHeaders", "ServerDoneResponse",
        "ClientBeginResponse", "ClientDoneResponse")})
    ElementTree.SubElement(session, "SessionTimers", timers)
    ElementTree.SubElement(session, "PipeInfo")
    flags = ElementTree.SubElement(session, "SessionFlags")
    for name, value in _flags(exchange, added_host):
        ElementTree.SubElement(flags, "SessionFlag", N=name, V=_xml_value(value))
    body = ElementTree.tostring(session, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\r\n' + body).encode("utf-8")


class _Frames:
    """The frames of each websocket session, waiting for its `_w.txt`.

    A live recording interleaves a websocket's messages with the exchanges that
    went on meanwhile, so a message finds its handshake by URL and client
    address (one TCP connection each), the latest such handshake first, else by
    URL alone. A session's file is written once both sides have sent a close,
    the rest when the archive ends.
    """

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.open: dict[tuple[str, str | None], _Socket] = {}
        self.by_url: dict[str, _Socket] = {}

    def start(self, stem: str, exchange: model.Exchange) -> None:
        """A handshake was written as session `stem`: its frames go there from now on."""
        if exchange.status != 101 and "upgrade" not in exchange.request.headers:
            return
        socket = _Socket(stem)
        key = (exchange.request.url, exchange.client)
        if key in self.open:
            self._flush(self.open[key])
        self.open[key] = self.by_url[exchange.request.url] = socket

    def add(self, message: WebsocketMessage, skipped: list[str] | None) -> None:
        socket = self.open.get((message.url, message.client)) or self.by_url.get(message.url)
        if socket is None:
            skip(skipped, f"record {message.seq}: a websocket message whose handshake "
                          f"({model.printable(message.url)}) is not in the archive")
            return
        socket.frames.append(Frame(message.direction, message.opcode, message.payload,
                                   message.start, message.fin))
        if message.opcode == "close":
            socket.closed.add(message.direction)
            if len(socket.closed) == 2:
                self._flush(socket)

    def _flush(self, socket: _Socket) -> None:
        if socket.frames:
            self.archive.writestr(f"{socket.stem}_w.txt", write_frames(socket.frames))
        socket.frames = []

    def finish(self) -> None:
        for socket in self.open.values():
            self._flush(socket)


class _Socket:
    """One websocket session's frames not written yet."""

    def __init__(self, stem: str) -> None:
        self.stem = stem
        self.frames: list[Frame] = []
        self.closed: set[str] = set()


def write_saz(exchanges: Iterable[Item], fo: IO[bytes] | str, width: int = 3,
              skipped: list[str] | None = None) -> int:
    """Write exchanges (and the websocket messages after their handshakes) as a SAZ
    archive; `width` zero-pads the session numbers; the number of sessions written.
    An exchange without an absolute URL is left out and noted in `skipped`."""
    count = 0
    with zipfile.ZipFile(fo, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        frames = _Frames(archive)
        for exchange in exchanges:
            if isinstance(exchange, WebsocketMessage):
                frames.add(exchange, skipped)
                continue
            try:
                check_exportable(exchange)
                request, added_host = _request_text(exchange)
                meta = _meta(count + 1, exchange, added_host)
                response = _response_text(exchange.response)
            except UNWRITABLE as e:  # worked out whole before any member is written
                skip_record(skipped, exchange.seq, e)
                continue
            count += 1
            stem = f"raw/{count:0{width}d}"
            frames.start(stem, exchange)
            archive.writestr(f"{stem}_c.txt", request)
            archive.writestr(f"{stem}_m.xml", meta)
            archive.writestr(f"{stem}_s.txt", response)
        frames.finish()
    return count


# --- reading ---------------------------------------------------------------------------------

def _split_message(data: bytes) -> tuple[bytes, model.Headers, bytes]:
    """(first line, headers, body as saved) of one HTTP/1 message."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError("empty message")
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"not a header line: {model.printable(model.from_bytes(line))!r}")
        fields.append((name.strip(), value.strip(b" \t")))
    return lines[0], model.Headers.from_raw(fields), body


def _dechunk(data: bytes) -> bytes:
    """A chunked body's payload (ValueError when it is not chunked after all)."""
    out = bytearray()
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("truncated chunk size line")
        size = int(data[pos:end].split(b";")[0].strip() or b"x", 16)
        pos = end + 2
        if size == 0:
            return bytes(out)
        if pos + size > len(data):
            raise ValueError("truncated chunk")
        out += data[pos:pos + size]
        pos += size + 2


def _content(headers: model.Headers, saved: bytes) -> tuple[bytes, bytes | None]:
    """(body as records keep it, the bytes that came when a Content-Encoding is
    present): chunking undone for both, the Content-Encoding for the body."""
    if _chunked(headers):
        try:
            saved = _dechunk(saved)
        except ValueError:
            pass  # saved already de-chunked
    coding = headers.get("content-encoding")
    return encoding.plain_body(saved, coding), saved if coding else None


def _read_request(data: bytes) -> model.Request:
    line, headers, body = _split_message(data)
    parts = line.split()
    if len(parts) < 2:
        raise ValueError(f"not a request line: {model.printable(model.from_bytes(line))!r}")
    method, target = model.from_bytes(parts[0]), model.from_bytes(parts[1])
    if method.upper() == "CONNECT":
        return model.Request(method, f"https://{target}/", headers)
    if not target.lower().startswith(("http://", "https://")):
        # origin-form: the URL comes from Host (SAZ captures are HTTPS)
        target = f"https://{headers.get('host') or ''}{target}"
    return model.Request(method, target, headers, *_content(headers, body))


def _read_response(data: bytes) -> model.Response | None:
    if not data.strip():
        return None
    line, headers, body = _split_message(data)
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not a status line: {model.printable(model.from_bytes(line))!r}")
    reason = model.from_bytes(parts[2]) if len(parts) > 2 else ""
    return model.Response(int(parts[1]), reason, headers, *_content(headers, body))


def _meta_of(meta: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(timers, flags) of a `_m.xml`; flag names are case-insensitive in Fiddler."""
    if not meta:
        return {}, {}
    root = ElementTree.fromstring(meta)
    timers_el = root.find("SessionTimers")
    timers = dict(timers_el.attrib) if timers_el is not None else {}
    flags = {(el.get("N") or "").lower(): el.get("V") or "" for el in root.iter("SessionFlag")}
    return timers, flags


def _client(flags: Mapping[str, str]) -> str:
    ip = flags.get("x-clientip", "127.0.0.1").removeprefix("::ffff:")
    port = flags.get("x-clientport", "")
    return f"{ip}:{int(port) if port.isdigit() else 0}"


def _provenance(flags: Mapping[str, str], default: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        own = json.loads(flags.get(_FLAG_PREFIX + "provenance") or "null")
    except ValueError:
        own = None
    return own if isinstance(own, dict) else default


class _Members:
    """Reads archive members with the caps: `max_body` past a head allowance, and no
    member that inflates more than MAX_RATIO times."""

    def __init__(self, archive: zipfile.ZipFile, max_body: int, skipped: list[str] | None
                 ) -> None:
        self.archive, self.max_body, self.skipped = archive, max_body, skipped

    def read(self, number: int, name: str) -> bytes:
        info = self.archive.getinfo(name)
        if info.file_size > _RATIO_FLOOR and \
                info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ValueError(f"{name} inflates {info.file_size // max(info.compress_size, 1)}"
                             f" times its stored size (over {MAX_RATIO}: a zip bomb?)")
        cap = self.max_body + _HEAD_ALLOWANCE
        with self.archive.open(info) as member:
            data = member.read(cap)
            more = bool(member.read(1))
        if more:
            skip(self.skipped, f"session {number}: {name} is over the {self.max_body}-byte "
                               f"cap (--max-body): its body is stored truncated")
        return data


def process_name(flags: Mapping[str, str]) -> str | None:
    """The Fiddler process column's program (`x49.exe:1234` -> `x49.exe`), or None."""
    value = flags.get("x-processinfo") or ""
    name = value.rsplit(":", 1)[0] if value.rsplit(":", 1)[-1].isdigit() else value
    return name.strip() or None


def _session(members: _Members, number: int, names: dict[str, str],
             provenance: Mapping[str, Any]) -> tuple[model.Exchange, str | None]:
    request = _read_request(members.read(number, names["c"]))
    response = _read_response(members.read(number, names["s"])) if "s" in names else None
    timers, flags = _meta_of(members.read(number, names["m"]) if "m" in names else b"")
    if flags.get(_FLAG_PREFIX + "added-host") == "true":
        request = model.Request(request.method, request.url, request.headers.without("host"),
                                request.body, request.encoded)
    start = parse_time(timers.get("ClientBeginRequest")) or time.time()
    end = parse_time(timers.get("ClientDoneResponse")) or start
    error = None
    if response is None:
        error = flags.get(_FLAG_PREFIX + "error") or "no response in the capture"
    exchange = model.Exchange(request=request, response=response, error=error, start=start,
                              end=end, client=_client(flags),
                              provenance=_provenance(flags, provenance))
    return exchange, process_name(flags)


def _messages(members: _Members, number: int, name: str, exchange: model.Exchange,
              skipped: list[str] | None) -> Iterator[WebsocketMessage]:
    """The websocket messages of a session's `_w.txt`; an unreadable frame is named in
    `skipped` with the rest of the file."""
    try:
        for frame in read_frames(members.read(number, name)):
            yield WebsocketMessage(
                url=exchange.request.url, direction=frame.direction, opcode=frame.opcode,
                payload=frame.payload, start=frame.time, client=exchange.client,
                provenance=exchange.provenance, fin=frame.fin)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
        skip(skipped, f"session {number}: {name}: {e} (the frames from there on are lost)")


_SAZ_NAME = re.compile(r"^raw/(\d+)_([csmw])\.(?:txt|xml)$", re.IGNORECASE)


def _sessions(archive: zipfile.ZipFile) -> dict[int, dict[str, str]]:
    """session number -> {"c"|"s"|"m"|"w": member name}"""
    sessions: dict[int, dict[str, str]] = {}
    for name in archive.namelist():
        match = _SAZ_NAME.match(name)
        if match:
            sessions.setdefault(int(match.group(1)), {})[match.group(2).lower()] = name
    return sessions


def _open(fo: IO[bytes] | str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fo)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise ValueError(f"not a SAZ archive: {e}") from None


def read_sessions(fo: IO[bytes] | str, provenance: Mapping[str, Any],
                  skipped: list[str] | None = None, *, max_body: int = MAX_BODY
                  ) -> Iterator[tuple[Item, str | None]]:
    """(exchange or websocket message, Fiddler process name or None) of each session
    of a SAZ archive, in session-number order, a session's websocket messages right
    after it. CONNECT tunnels and sessions that cannot be read are noted in `skipped`,
    by number. `provenance` is used unless a session carries its own (one exported
    from a recording).

    Raises ValueError when the file is not a zip archive.
    """
    with _open(fo) as archive:
        members = _Members(archive, max_body, skipped)
        sessions = _sessions(archive)
        for number in sorted(sessions):
            names = sessions[number]
            if "c" not in names:
                skip(skipped, f"session {number}: no request (_c.txt)")
                continue
            try:
                exchange, process = _session(members, number, names, provenance)
            except (ValueError, KeyError, ElementTree.ParseError, zipfile.BadZipFile,
                    OSError, EOFError, RecursionError) as e:
                skip(skipped, f"session {number}: cannot read it ({e})")
                continue
            if exchange.request.method.upper() == "CONNECT":
                skip(skipped, f"session {number}: CONNECT")
                continue
            yield exchange, process
            if "w" in names:
                for message in _messages(members, number, names["w"], exchange, skipped):
                    yield message, process


def read_saz(fo: IO[bytes] | str, provenance: Mapping[str, Any],
             skipped: list[str] | None = None, *, max_body: int = MAX_BODY
             ) -> Iterator[Item]:
    """Exchanges of a SAZ archive, each followed by its websocket messages (see
    `read_sessions`). Raises ValueError when the file is not a zip archive."""
    for item, _ in read_sessions(fo, provenance, skipped, max_body=max_body):
        yield item
