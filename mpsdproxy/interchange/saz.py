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
undoes chunking and Content-Encoding as the recorder does.
"""

from __future__ import annotations

import datetime
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

from mpsdproxy import classify
from mpsdproxy import encoding
from mpsdproxy import model
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.common import split_address

__all__ = ["write_saz", "read_saz"]

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

def _fiddler_time(epoch: float) -> str:
    """Fiddler's timer format: ISO 8601 with 7 fractional digits and an offset."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


def _chunked(headers: model.Headers) -> bool:
    return "chunked" in (headers.get("transfer-encoding") or "").lower()


def _message(first_line: bytes, headers: model.Headers, body: bytes) -> bytes:
    """One HTTP/1 message: the body encoded with its Content-Encoding, chunked when
    its Transfer-Encoding says so."""
    wire = encoding.wire_body(body, headers.get("content-encoding"))
    if _chunked(headers):
        wire = (b"%x\r\n%s\r\n" % (len(wire), wire) if wire else b"") + b"0\r\n\r\n"
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
    return _message(line, headers, request.body), added


def _response_text(response: model.Response | None) -> bytes:
    if response is None:
        return b""
    line = b"HTTP/1.1 %d " % response.status + model.to_bytes(response.reason)
    return _message(line, response.headers, response.body)


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_value(text: str) -> str:
    """Text an XML attribute can hold: printable, without the control characters XML
    forbids."""
    return _XML_BAD.sub("?", model.printable(text))


def _flags(exchange: model.Exchange, added_host: bool) -> Iterator[tuple[str, str]]:
    host, port = split_address(exchange.client) or ("127.0.0.1", 0)
    yield "x-clientip", host
    yield "x-clientport", str(port)
    classification = classify.classify(exchange)
    comment = classification.id or "unclassified"
    codes = [a.code for a in classification.anomalies]
    if codes:
        comment += " (" + ", ".join(codes) + ")"
    yield "ui-comments", comment
    yield _FLAG_PREFIX + "seq", str(exchange.seq)
    yield _FLAG_PREFIX + "provenance", json.dumps(dict(exchange.provenance))
    if exchange.response is None:
        yield _FLAG_PREFIX + "error", exchange.error or "no response"
    if added_host:
        yield _FLAG_PREFIX + "added-host", "true"


def _meta(number: int, exchange: model.Exchange, added_host: bool) -> bytes:
    start = exchange.start if exchange.start is not None else time.time()
    end = exchange.end if exchange.end is not None else start
    first, last = _fiddler_time(start), _fiddler_time(end)
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


def write_saz(exchanges: Iterable[model.Exchange], fo: IO[bytes] | str, width: int = 3,
              skipped: list[str] | None = None) -> int:
    """Write exchanges as a SAZ archive; `width` zero-pads the session numbers.
    An exchange without an absolute URL is left out and noted in `skipped`."""
    count = 0
    with zipfile.ZipFile(fo, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        for exchange in exchanges:
            try:
                check_exportable(exchange)
            except ValueError as e:
                skip(skipped, str(e))
                continue
            count += 1
            stem = f"raw/{count:0{width}d}"
            request, added_host = _request_text(exchange)
            archive.writestr(f"{stem}_c.txt", request)
            archive.writestr(f"{stem}_m.xml", _meta(count, exchange, added_host))
            archive.writestr(f"{stem}_s.txt", _response_text(exchange.response))
    return count


# --- reading ---------------------------------------------------------------------------------

def _parse_fiddler_time(value: str | None) -> float | None:
    if not value or value.startswith("0001-01-01"):
        return None
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


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


def _content(headers: model.Headers, saved: bytes) -> bytes:
    """The body as records keep it: chunking and Content-Encoding undone."""
    if _chunked(headers):
        try:
            saved = _dechunk(saved)
        except ValueError:
            pass  # saved already de-chunked
    return encoding.plain_body(saved, headers.get("content-encoding"))


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
    return model.Request(method, target, headers, _content(headers, body))


def _read_response(data: bytes) -> model.Response | None:
    if not data.strip():
        return None
    line, headers, body = _split_message(data)
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not a status line: {model.printable(model.from_bytes(line))!r}")
    reason = model.from_bytes(parts[2]) if len(parts) > 2 else ""
    return model.Response(int(parts[1]), reason, headers, _content(headers, body))


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


def _session(archive: zipfile.ZipFile, names: dict[str, str],
             provenance: Mapping[str, Any]) -> model.Exchange:
    request = _read_request(archive.read(names["c"]))
    response = _read_response(archive.read(names["s"])) if "s" in names else None
    timers, flags = _meta_of(archive.read(names["m"]) if "m" in names else b"")
    if flags.get(_FLAG_PREFIX + "added-host") == "true":
        request = model.Request(request.method, request.url, request.headers.without("host"),
                                request.body)
    start = _parse_fiddler_time(timers.get("ClientBeginRequest")) or time.time()
    end = _parse_fiddler_time(timers.get("ClientDoneResponse")) or start
    error = None
    if response is None:
        error = flags.get(_FLAG_PREFIX + "error") or "no response in the capture"
    return model.Exchange(request=request, response=response, error=error, start=start,
                          end=end, client=_client(flags),
                          provenance=_provenance(flags, provenance))


_SAZ_NAME = re.compile(r"^raw/(\d+)_([csm])\.(?:txt|xml)$", re.IGNORECASE)


def _sessions(archive: zipfile.ZipFile) -> dict[int, dict[str, str]]:
    """session number -> {"c"|"s"|"m": member name}"""
    sessions: dict[int, dict[str, str]] = {}
    for name in archive.namelist():
        match = _SAZ_NAME.match(name)
        if match:
            sessions.setdefault(int(match.group(1)), {})[match.group(2).lower()] = name
    return sessions


def read_saz(fo: IO[bytes] | str, provenance: Mapping[str, Any],
             skipped: list[str] | None = None) -> Iterator[model.Exchange]:
    """Exchanges of a SAZ archive, in session-number order. CONNECT tunnels and
    sessions that cannot be read are noted in `skipped`. `provenance` is used unless
    a session carries its own (one exported from a recording).

    Raises ValueError when the file is not a zip archive.
    """
    try:
        archive = zipfile.ZipFile(fo)
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a SAZ archive: {e}") from None
    with archive:
        sessions = _sessions(archive)
        for number in sorted(sessions):
            names = sessions[number]
            if "c" not in names:
                skip(skipped, f"session {number}: no request (_c.txt)")
                continue
            try:
                exchange = _session(archive, names, provenance)
            except (ValueError, KeyError, ElementTree.ParseError) as e:
                skip(skipped, f"session {number}: cannot read it ({e})")
                continue
            if exchange.request.method.upper() == "CONNECT":
                skip(skipped, f"session {number}: CONNECT")
                continue
            yield exchange
