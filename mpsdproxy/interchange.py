"""Recordings to and from HAR, mitmproxy flow files and Fiddler SAZ archives.

So a recording opens in browser devtools (HAR 1.2), in mitmweb (`mitmweb -r
FILE.mitm`) and in Fiddler or the Xbox Live Trace Analyzer (SAZ), and so
captures made with those tools, or with plain `mitmdump -w`, replay and
classify here. Every format goes through a mitmproxy `HTTPFlow`: a record
becomes a flow (`record_to_flow`), mitmproxy's own HAR and flow-file code
writes and reads it where it can, and a flow becomes a record the way the
recorder makes one (`mpsdproxy.addons.recorder.flow_record`).

What a round trip keeps: method, URL, headers (order and repeats), bodies,
status and reason, start and end time (to the microsecond), the client
address, and, when the file came from here, each record's provenance. Bodies
follow the recorder's convention: a record keeps the body with any
Content-Encoding undone and the header as it was; an exported message is
re-encoded with its Content-Encoding so the file is what the wire carried.
Redacted values stay redacted (exports write what the recording holds;
imports redact with the default Redactor unless told otherwise), and an
imported exchange is classified afresh with `classify.classify`.

Provenance of an imported exchange: the one carried in the file when it was
exported from a recording (HAR `_mpsd`, flow metadata, SAZ session flags),
otherwise `{"source": "imported", "format": "har"|"mitm"|"saz", "file": NAME}`.

SAZ layout (as Fiddler writes it and the Trace Analyzer reads it): a zip with
`[Content_Types].xml` and, per exchange N, `raw/N_c.txt` (request line with
the absolute URL, headers, body), `raw/N_m.xml` (session timers and flags)
and `raw/N_s.txt` (status line, headers, body; empty when no response came),
in that order. The Trace Analyzer needs a `Host:` header and the
`x-clientip` flag: a missing Host is added (and flagged, so import removes it
again) and an unknown client is written as 127.0.0.1.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import time
import zipfile
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from importlib import metadata
from typing import IO
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from mitmproxy import connection
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import io as mio
from mitmproxy import version as mversion
from mitmproxy.addons import savehar
from mitmproxy.io import har
from mitmproxy.net import encoding
from mitmproxy.net.http.http1 import assemble
from mitmproxy.net.http.http1 import read as http1_read

from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.addons import common
from mpsdproxy.addons import recorder

__all__ = [
    "FORMATS",
    "guess_format",
    "record_to_flow",
    "flow_to_record",
    "write_har",
    "write_mitm",
    "write_saz",
    "read_har",
    "read_mitm",
    "read_saz",
    "ExportResult",
    "ImportResult",
    "export_file",
    "import_file",
]

FORMATS: tuple[str, ...] = ("har", "mitm", "saz")

_EXTENSIONS = {".har": "har", ".mitm": "mitm", ".flows": "mitm", ".flow": "mitm",
               ".dump": "mitm", ".saz": "saz"}

_FLAG_PREFIX = "x-mpsd-"

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="utf-8" ?>\r\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="htm" ContentType="text/html" />'
    '<Default Extension="xml" ContentType="application/xml" />'
    '<Default Extension="txt" ContentType="text/plain" />'
    "</Types>"
)


def guess_format(path: str) -> str:
    """The interchange format of a file, by extension, else by its first bytes."""
    ext = os.path.splitext(path)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK"):
        return "saz"
    if head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"):
        return "har"
    if head[:1].isdigit():
        return "mitm"  # a tnetstring starts with its length
    raise ValueError(f"cannot tell the format of {path}: use one of {', '.join(FORMATS)}")


# --- record -> flow -------------------------------------------------------------------------

def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return recording.parse_timestamp(value)
    except ValueError:
        return None


def _address(value: Any) -> tuple[str, int] | None:
    """`127.0.0.1:50412` or `[::1]:50412` -> (host, port)."""
    if not isinstance(value, str) or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _headers(pairs: Iterable[Any] | None) -> http.Headers:
    return http.Headers([
        (str(k).encode("utf-8", "surrogateescape"), str(v).encode("utf-8", "surrogateescape"))
        for k, v in pairs or ()
    ])


def wire_body(body: bytes, content_encoding: str | None) -> bytes:
    """A decoded body (as records keep it) encoded back with its Content-Encoding."""
    if not body or not content_encoding:
        return body
    try:
        return encoding.encode(body, content_encoding)
    except ValueError:
        return body


def _wire(body: bytes, headers: http.Headers) -> bytes:
    return wire_body(body, headers.get("content-encoding"))


def _connections(record: dict[str, Any], host: str, port: int, start: float, end: float
                 ) -> tuple[connection.Client, connection.Server]:
    client = connection.Client(peername=_address(record.get("client")) or ("127.0.0.1", 0),
                               sockname=("127.0.0.1", 0), timestamp_start=start)
    client.timestamp_end = end
    return client, connection.Server(address=(host, port))


def _response(resp: dict[str, Any], end: float) -> http.Response:
    headers = _headers(resp.get("headers"))
    reason = (resp.get("reason") or "").encode("utf-8", "surrogateescape")
    body = _wire(recording.decode_body(resp.get("body")), headers)
    return http.Response(b"HTTP/1.1", resp["status"], reason, headers, body, None, end, end)


def record_to_flow(record: dict[str, Any]) -> http.HTTPFlow:
    """A finished, not-live mitmproxy flow for a record, its mpsd mark included.

    Raises ValueError when the record's URL is not an absolute http(s) URL.
    """
    req = record["request"]
    url = req["url"]
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"record {record.get('seq')}: not an absolute http(s) URL: {url!r}")
    start = _epoch(record.get("start")) or time.time()
    end = _epoch(record.get("end")) or start
    port = split.port or (443 if split.scheme == "https" else 80)
    flow = http.HTTPFlow(*_connections(record, split.hostname, port, start, end))
    flow.timestamp_created = start
    request = http.Request.make(req["method"], url)
    request.headers = _headers(req.get("headers"))
    request.raw_content = _wire(recording.decode_body(req.get("body")), request.headers)
    request.timestamp_start = request.timestamp_end = start
    flow.request = request
    if record.get("response"):
        flow.response = _response(record["response"], end)
    else:
        flow.error = mflow.Error(record.get("error") or "no response", timestamp=end)
    flow.metadata[common.KEY] = {
        "url": url,
        "resource": record.get("resource") or resources.parse(url).to_dict(),
        "provenance": record.get("provenance") or dict(common.FORWARDED),
        "classification": record.get("classification"),
        "seq": record.get("seq"),
    }
    flow.live = False
    return flow


# --- flow -> record -------------------------------------------------------------------------

def flow_to_record(flow: http.HTTPFlow, redactor: recording.Redactor,
                   provenance: dict[str, Any]) -> dict[str, Any]:
    """The record for an imported flow: redacted, classified afresh.

    `provenance` is used unless the flow carries one of its own (a flow
    exported from a recording).
    """
    mark = common.mark(flow) or {}
    flow.metadata[common.KEY] = {
        "url": mark.get("url") or flow.request.url,
        "resource": resources.parse(flow.request.path).to_dict(),
        "provenance": mark.get("provenance") or provenance,
    }
    try:
        return recorder.flow_record(flow, redactor)
    finally:
        if mark:
            flow.metadata[common.KEY] = mark
        else:
            del flow.metadata[common.KEY]


# --- HAR ------------------------------------------------------------------------------------

def _creator() -> dict[str, str]:
    try:
        own = metadata.version("mpsdproxy")
    except metadata.PackageNotFoundError:  # an uninstalled checkout still exports
        own = "0"
    return {"name": "mpsdproxy", "version": own, "comment": f"mitmproxy {mversion.VERSION}"}


def _post_data(body: bytes, content_type: str) -> dict[str, Any]:
    try:
        return {"mimeType": content_type, "text": body.decode("utf-8"), "params": []}
    except UnicodeDecodeError:
        return {"mimeType": content_type, "text": base64.b64encode(body).decode("ascii"),
                "encoding": "base64", "params": []}


def _har_entry(saver: savehar.SaveHar, record: dict[str, Any]) -> dict[str, Any]:
    flow = record_to_flow(record)
    entry = saver.flow_entry(flow, set())
    entry["request"]["url"] = record["request"]["url"]
    body = recording.decode_body(record["request"].get("body"))
    if body:
        entry["request"]["postData"] = _post_data(
            body, flow.request.headers.get("content-type", ""))
    if flow.response is None:  # HAR times only answered requests: keep the wait for an error
        waited = (flow.error.timestamp - flow.request.timestamp_start) * 1000 if flow.error else 0
        entry["time"] = entry["timings"]["wait"] = max(0.0, waited)
    entry["_mpsd"] = {"seq": record.get("seq"), "client": record.get("client"),
                      "provenance": record.get("provenance")}
    return entry


def write_har(records: Iterable[dict[str, Any]], fo: IO[str],
              skipped: list[str] | None = None) -> int:
    """Write records as a HAR 1.2 log, one entry at a time (memory stays flat).

    Entries come from mitmproxy's own `SaveHar.flow_entry`, plus what HAR
    leaves out: request bodies of any method (binary ones as base64 with
    `"encoding": "base64"`), and an `_mpsd` object with the record's seq,
    client and provenance. Returns the number of entries written.
    """
    saver = savehar.SaveHar()
    head = {"version": "1.2", "creator": _creator(), "pages": []}
    fo.write('{"log": ' + json.dumps(head)[:-1] + ', "entries": [\n')
    count = 0
    for record in records:
        try:
            entry = _har_entry(saver, record)
        except ValueError as e:
            _skip(skipped, str(e))
            continue
        fo.write((",\n" if count else "") + json.dumps(entry, ensure_ascii=False))
        count += 1
    fo.write("\n]}}\n")
    return count


def _skip(skipped: list[str] | None, reason: str) -> None:
    if skipped is not None:
        skipped.append(reason)


def _har_body(post: dict[str, Any] | None) -> bytes:
    if not post or not post.get("text"):
        return b""
    text = post["text"]
    if post.get("encoding") == "base64":
        return base64.b64decode(text)
    return str(text).encode("utf-8", "surrogateescape")


def _har_flow(entry: dict[str, Any]) -> http.HTTPFlow:
    """One HAR entry -> a flow, with mitmproxy's reader, then exact headers and bodies."""
    flow = har.request_to_flow(entry)
    request = flow.request
    request.headers = har.fix_headers(entry["request"]["headers"])
    request.raw_content = _wire(_har_body(entry["request"].get("postData")), request.headers)
    extra = entry.get("_mpsd") if isinstance(entry.get("_mpsd"), dict) else {}
    client = _address(extra.get("client"))
    if client:
        flow.client_conn.peername = client
    response = entry.get("response") or {}
    if not response.get("status"):
        end = flow.response.timestamp_end if flow.response else request.timestamp_end
        flow.response = None
        flow.error = mflow.Error(response.get("_error") or "no response", timestamp=end or 0)
    elif flow.response is not None and response.get("statusText"):
        flow.response.reason = response["statusText"]
    mark: dict[str, Any] = {"url": entry["request"]["url"]}
    if isinstance(extra.get("provenance"), dict):
        mark["provenance"] = extra["provenance"]
    flow.metadata[common.KEY] = mark
    return flow


def read_har(fo: IO[bytes], skipped: list[str] | None = None) -> Iterator[http.HTTPFlow]:
    """Flows of a HAR file (ours, a browser's, Fiddler's); CONNECT entries are skipped.

    Raises ValueError when the file is not a HAR log.
    """
    data = fo.read()
    try:
        log = json.loads(data.decode("utf-8-sig"))["log"]
        entries = log["entries"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a HAR file: {e}") from None
    for number, entry in enumerate(entries, start=1):
        try:
            if entry["request"]["method"].upper() == "CONNECT":
                _skip(skipped, f"entry {number}: CONNECT")
                continue
            yield _har_flow(entry)
        except (KeyError, TypeError, ValueError, exceptions.OptionsError) as e:
            _skip(skipped, f"entry {number}: cannot read it ({type(e).__name__}: {e})")


# --- mitmproxy flow files -------------------------------------------------------------------

def write_mitm(records: Iterable[dict[str, Any]], fo: IO[bytes],
               skipped: list[str] | None = None) -> int:
    """Write records as a mitmproxy flow file (`mitmweb -r`, `mitmdump -nr`)."""
    writer = mio.FlowWriter(fo)
    count = 0
    for record in records:
        try:
            writer.add(record_to_flow(record))
        except ValueError as e:
            _skip(skipped, str(e))
            continue
        count += 1
    return count


def read_mitm(fo: IO[bytes], skipped: list[str] | None = None) -> Iterator[http.HTTPFlow]:
    """HTTP flows of a mitmproxy flow file; other flows (TCP, DNS, ...) are skipped.

    Raises ValueError when the file is not a flow file.
    """
    number = 0
    try:
        for number, item in enumerate(mio.FlowReader(fo).stream(), start=1):
            if not isinstance(item, http.HTTPFlow):
                _skip(skipped, f"flow {number}: a {item.type} flow, not HTTP")
            elif item.request.method.upper() == "CONNECT":
                _skip(skipped, f"flow {number}: CONNECT")
            else:
                yield item
    except exceptions.FlowReadException as e:
        if not number:
            raise ValueError(f"not a mitmproxy flow file: {e}") from None
        # what a killed mitmdump leaves behind: keep the flows before it
        _skip(skipped, f"after flow {number}: the rest of the file is unreadable ({e})")


# --- Fiddler SAZ ----------------------------------------------------------------------------

def _fiddler_time(epoch: float) -> str:
    """Fiddler's timer format: ISO 8601 with 7 fractional digits and an offset."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


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


def _saz_request(flow: http.HTTPFlow, url: str) -> tuple[bytes, bool]:
    """`raw/N_c.txt`: the request with its absolute URL; True when Host was added."""
    request = flow.request
    headers = request.headers.copy()
    added = "host" not in headers
    if added:
        headers.insert(0, "Host", request.host_header or request.authority or request.host)
    line = f"{request.method} {url} {request.http_version}\r\n".encode(
        "utf-8", "surrogateescape")
    body = b"".join(assemble.assemble_body(headers, [request.raw_content or b""], None))
    return line + bytes(headers) + b"\r\n" + body, added


def _saz_response(flow: http.HTTPFlow) -> bytes:
    response = flow.response
    if response is None:
        return b""
    body = b"".join(assemble.assemble_body(response.headers, [response.raw_content or b""],
                                           None))
    return assemble.assemble_response_head(response) + body


def _saz_meta(number: int, flow: http.HTTPFlow, record: dict[str, Any], added_host: bool
              ) -> bytes:
    start = flow.request.timestamp_start
    end = flow.response.timestamp_end if flow.response else flow.error.timestamp
    first, last = _fiddler_time(start), _fiddler_time(end or start)
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
    for name, value in _saz_flags(flow, record, added_host):
        ElementTree.SubElement(flags, "SessionFlag", N=name, V=value)
    body = ElementTree.tostring(session, encoding="unicode")
    return ('<?xml version="1.0" encoding="utf-8"?>\r\n' + body).encode("utf-8")


def _saz_flags(flow: http.HTTPFlow, record: dict[str, Any], added_host: bool
               ) -> Iterator[tuple[str, str]]:
    host, port = flow.client_conn.peername or ("127.0.0.1", 0)
    yield "x-clientip", host
    yield "x-clientport", str(port)
    classification = record.get("classification") or {}
    comment = classification.get("id") or "unclassified"
    codes = [a.get("code") for a in classification.get("anomalies") or () if isinstance(a, dict)]
    if codes:
        comment += " (" + ", ".join(str(c) for c in codes) + ")"
    yield "ui-comments", comment
    yield _FLAG_PREFIX + "seq", str(record.get("seq"))
    if record.get("provenance"):
        yield _FLAG_PREFIX + "provenance", json.dumps(record["provenance"], ensure_ascii=False)
    if flow.error is not None:
        yield _FLAG_PREFIX + "error", flow.error.msg
    if added_host:
        yield _FLAG_PREFIX + "added-host", "true"


def write_saz(records: Iterable[dict[str, Any]], fo: IO[bytes] | str, width: int = 3,
              skipped: list[str] | None = None) -> int:
    """Write records as a Fiddler SAZ archive; `width` zero-pads the session numbers."""
    count = 0
    with zipfile.ZipFile(fo, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", _CONTENT_TYPES)
        for record in records:
            try:
                flow = record_to_flow(record)
            except ValueError as e:
                _skip(skipped, str(e))
                continue
            count += 1
            stem = f"raw/{count:0{width}d}"
            request, added_host = _saz_request(flow, record["request"]["url"])
            archive.writestr(f"{stem}_c.txt", request)
            archive.writestr(f"{stem}_m.xml", _saz_meta(count, flow, record, added_host))
            archive.writestr(f"{stem}_s.txt", _saz_response(flow))
    return count


def _split_message(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    return [line for line in lines if line], body


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


def _message_body(headers: http.Headers, body: bytes) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        try:
            return _dechunk(body)
        except ValueError:
            return body  # saved already de-chunked
    return body


def _saz_flags_of(meta: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(timers, flags) of a `_m.xml`; flag names are case-insensitive in Fiddler."""
    if not meta:
        return {}, {}
    root = ElementTree.fromstring(meta)
    timers_el = root.find("SessionTimers")
    timers = dict(timers_el.attrib) if timers_el is not None else {}
    flags = {
        (el.get("N") or "").lower(): el.get("V") or ""
        for el in root.iter("SessionFlag")
    }
    return timers, flags


def _saz_request_of(data: bytes) -> tuple[http.Request, str]:
    lines, body = _split_message(data)
    request = http1_read.read_request_head(lines)
    target = lines[0].split()[1].decode("utf-8", "surrogateescape")
    if not request.host:  # origin-form: the URL comes from Host (SAZ captures are HTTPS)
        request.url = f"https://{request.headers.get('host', '')}{request.path}"
        target = request.url
    request.raw_content = _message_body(request.headers, body)
    return request, target


def _saz_response_of(data: bytes) -> http.Response | None:
    if not data.strip():
        return None
    lines, body = _split_message(data)
    response = http1_read.read_response_head(lines)
    response.raw_content = _message_body(response.headers, body)
    return response


def _saz_flow(archive: zipfile.ZipFile, names: dict[str, str]) -> http.HTTPFlow:
    request, url = _saz_request_of(archive.read(names["c"]))
    response = _saz_response_of(archive.read(names["s"])) if "s" in names else None
    timers, flags = _saz_flags_of(archive.read(names["m"]) if "m" in names else b"")
    if flags.get(_FLAG_PREFIX + "added-host") == "true":
        del request.headers["host"]
    start = _parse_fiddler_time(timers.get("ClientBeginRequest")) or time.time()
    end = _parse_fiddler_time(timers.get("ClientDoneResponse")) or start
    request.timestamp_start = start
    request.timestamp_end = _parse_fiddler_time(timers.get("ClientDoneRequest")) or start
    ip = flags.get("x-clientip", "127.0.0.1").removeprefix("::ffff:")
    port = int(flags.get("x-clientport") or 0) if flags.get("x-clientport", "").isdigit() else 0
    client = connection.Client(peername=(ip, port), sockname=("127.0.0.1", 0),
                               timestamp_start=start)
    flow = http.HTTPFlow(client, connection.Server(address=(request.host, request.port)))
    flow.request = request
    if response is not None:
        response.timestamp_start = _parse_fiddler_time(timers.get("GotResponseHeaders")) or end
        response.timestamp_end = end
        flow.response = response
    else:
        flow.error = mflow.Error(flags.get(_FLAG_PREFIX + "error") or "no response in the capture",
                                 timestamp=end)
    mark: dict[str, Any] = {"url": url}
    try:
        provenance = json.loads(flags.get(_FLAG_PREFIX + "provenance") or "null")
    except ValueError:
        provenance = None
    if isinstance(provenance, dict):
        mark["provenance"] = provenance
    flow.metadata[common.KEY] = mark
    return flow


_SAZ_NAME = re.compile(r"^raw/(\d+)_([csm])\.(?:txt|xml)$", re.IGNORECASE)


def read_saz(fo: IO[bytes] | str, skipped: list[str] | None = None) -> Iterator[http.HTTPFlow]:
    """Flows of a Fiddler SAZ archive, in session-number order; CONNECT tunnels skipped.

    Raises ValueError when the file is not a zip archive.
    """
    try:
        archive = zipfile.ZipFile(fo)
    except zipfile.BadZipFile as e:
        raise ValueError(f"not a SAZ archive: {e}") from None
    with archive:
        sessions: dict[int, dict[str, str]] = {}
        for name in archive.namelist():
            match = _SAZ_NAME.match(name)
            if match:
                sessions.setdefault(int(match.group(1)), {})[match.group(2).lower()] = name
        for number in sorted(sessions):
            names = sessions[number]
            if "c" not in names:
                _skip(skipped, f"session {number}: no request (_c.txt)")
                continue
            try:
                flow = _saz_flow(archive, names)
            except (ValueError, KeyError, ElementTree.ParseError) as e:
                _skip(skipped, f"session {number}: cannot read it ({e})")
                continue
            if flow.request.method.upper() == "CONNECT":
                _skip(skipped, f"session {number}: CONNECT")
                continue
            yield flow


# --- files ----------------------------------------------------------------------------------

@dataclass
class ExportResult:
    count: int = 0
    skipped: list[str] = field(default_factory=list)
    issues: list[recording.ReadIssue] = field(default_factory=list)


@dataclass
class ImportResult:
    count: int = 0
    skipped: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None


def _check_format(fmt: str) -> str:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"format should be one of {', '.join(FORMATS)}, not {fmt!r}")
    return fmt


def export_file(recording_path: str, out_path: str, fmt: str) -> ExportResult:
    """Write the recording at `recording_path` to `out_path` as har, mitm or saz.

    The recording is streamed; unreadable lines are listed in `issues`,
    records that cannot be expressed (no absolute URL) in `skipped`.
    """
    fmt = _check_format(fmt)
    result = ExportResult()
    records = recording.read(recording_path, issues=result.issues)
    if fmt == "har":
        with open(out_path, "w", encoding="utf-8") as f:
            result.count = write_har(records, f, result.skipped)
    elif fmt == "mitm":
        with open(out_path, "wb") as f:
            result.count = write_mitm(records, f, result.skipped)
    else:
        total = sum(1 for _ in recording.read(recording_path))
        with open(out_path, "wb") as f:
            result.count = write_saz(records, f, max(3, len(str(total))), result.skipped)
    return result


def _wanted(flow: http.HTTPFlow, hosts: Collection[str] | None) -> bool:
    if not hosts:
        return True
    wanted = {h.lower() for h in hosts}
    host_header = (flow.request.host_header or "").lower().rsplit(":", 1)[0]
    return flow.request.host.lower() in wanted or host_header in wanted


def import_file(
    path: str,
    out_path: str,
    fmt: str | None = None,
    *,
    redactor: recording.Redactor | None = None,
    hosts: Collection[str] | None = None,
) -> ImportResult:
    """Append the exchanges of a HAR, mitmproxy or SAZ file to the recording `out_path`.

    `fmt` is guessed from the file when None. `hosts` keeps only exchanges
    with those hosts (say, the session directory's) out of a whole-machine
    capture; every exchange is kept when it is empty. Raises ValueError when
    the file is not in the format.
    """
    fmt = _check_format(fmt) if fmt else guess_format(path)
    redactor = redactor or recording.Redactor()
    provenance = {"source": "imported", "format": fmt, "file": os.path.basename(path)}
    result = ImportResult()
    readers = {"har": read_har, "mitm": read_mitm, "saz": read_saz}
    with open(path, "rb") as f, recording.Writer(out_path) as writer:
        for flow in readers[fmt](f, result.skipped):
            if not _wanted(flow, hosts):
                result.skipped.append(f"{flow.request.method} {flow.request.url}: other host")
                continue
            seq = writer.write(flow_to_record(flow, redactor, provenance))
            result.count += 1
            result.first_seq = result.first_seq or seq
            result.last_seq = seq
    return result
