"""The Xbox Live Trace Analyzer's CSV trace, both ways: so an analyzer trace can be
replayed and classified here, and a recording can go to the analyzer.

Followed: `Source/RulesEngine/ServiceCallData.cs` (`DeserializeCSV`),
`Source/RulesEngine/ServiceCallItem.cs` (`FromCSV1509`, `FromFiddlerFrame`),
`Source/RulesEngine/Utils.cs` (`GetCSVValues`) and `Source/RulesEngine/Constants.cs`
(`Version1509`, `Version1510`, `CSVValueIndex`) of the public repository
`microsoft/xbox-live-trace-analyzer`. What the analyzer's reader does, and so what
this module writes:

- the first line is the version, `v1509` or `v1510`; the second, the header row, is
  skipped unread; then one call per line (`StreamReader.ReadLine`: CR, LF and CRLF
  all end a row, so no field may hold a line break);
- a row is split on `","` with `""` standing for `"`, and its values are taken by
  position (`CSVValueIndex`): Host, Uri, XboxUserId, MultiplayerCorrelationId,
  RequestHeaders, RequestBody, ResponseHeaders, ResponseBody, HttpStatusCode,
  EllapsedCallTimeMs, ReqTimeUTC, IsGet, LoggerId, IsShoulderTap, ChangeNumber,
  SessionReferenceUriPath, IsInGameEvent, EventName, EventPlayerSessionId,
  EventVersion, EventDimensionData, EventMeasurementData, BreadCrumb. Values past
  the 23rd are never read;
- headers are `Name: value` texts each followed by two spaces; bodies are text
  (the analyzer inflates deflated bodies of a capture itself, so a body here is the
  decoded content, as a recording keeps it).

Method: the analyzer keeps only `IsGet` (`FromFiddlerFrame` sets it from the request
line and drops the method). So a file written here carries the method in a 24th
column, `Method`, after BreadCrumb: the analyzer reads by position and skips the
header row, so it never sees it, and a round trip keeps PUT, POST and DELETE apart.
A trace without that column gets GET when IsGet is true, else, as the session
directory's own conventions go: PUT for a session or session element with a body,
POST for anything else with a body, DELETE without one.

Times: ReqTimeUTC is the start, to the millisecond; the end is the start plus
EllapsedCallTimeMs (written as the difference of the two times rounded to the
millisecond, so both come back to the millisecond). HttpStatusCode 0 is a call
without a response. Rows with IsShoulderTap true are RTA notifications, not HTTP
calls: they are noted in `skipped`. The client library's trace writer never sets the
flag (`Source/Shared/service_call_logger_data.cpp` has no shoulder-tap constructor)
and the analyzer's rules leave such rows out (`RepeatedCallsRule.cs`, and
`Utils.GetExcessCallsForTimeWindow` for the frequency rules), so a trace's RTA side is
read from SAZ, HAR or flow files.
"""

from __future__ import annotations

import csv
import datetime
import http
import io
import json
import re
import uuid
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import IO
from typing import Any
from urllib.parse import urlsplit

from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.interchange.common import UNWRITABLE
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.common import skip_record

__all__ = ["COLUMNS", "VERSION", "looks_like", "read_csv", "write_csv", "parse_headers",
           "format_headers", "analyzer_values"]

#: The version line this module writes; `v1509` files are read too.
VERSION = "v1510"
VERSIONS = ("v1509", "v1510")

#: The analyzer's columns, in its order (`CSVValueIndex`), as the header row names them.
COLUMNS: tuple[str, ...] = (
    "Host", "Uri", "XboxUserId", "MultiplayerCorrelationId", "RequestHeaders",
    "RequestBody", "ResponseHeaders", "ResponseBody", "HttpStatusCode",
    "EllapsedCallTimeMs", "ReqTimeUTC", "IsGet", "LoggerId", "IsShoulderTap",
    "ChangeNumber", "SessionReferenceUriPath", "IsInGameEvent", "EventName",
    "EventPlayerSessionId", "EventVersion", "EventDimensionData",
    "EventMeasurementData", "BreadCrumb",
)
#: The column past the analyzer's that keeps the method (see the module docstring).
METHOD = "Method"

_UTF8_BOM = b"\xef\xbb\xbf"
#: How much of the first two lines is read: a file that is no trace is not read whole.
_VERSION_LINE = 64
_HEADER_LINE = 64 * 1024
_LOOKS = re.compile(rb"v(?:\d|$)")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HEADER_START = re.compile(rf"(?:^|(?<=  ))({_TOKEN}):")
_XUID = re.compile(r"xuid\((\d+)\)", re.IGNORECASE)
_SESSION_KINDS = frozenset({resources.Kind.SESSION, *resources.ELEMENT_KINDS})


def looks_like(head: bytes) -> bool:
    """A file whose first line is a version such as `v1510` (a UTF-8 BOM allowed)."""
    return bool(_LOOKS.match(head.removeprefix(_UTF8_BOM)))


# -- headers -----------------------------------------------------------------------

def format_headers(headers: model.Headers) -> str:
    """`Name: value` texts, each followed by two spaces, as the analyzer's trace has them."""
    return "".join(f"{name}: {value}  " for name, value in headers)


def parse_headers(text: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a two-space-joined header text. A header starts at
    the start or after two spaces with `Name:`; what lies between is its value.
    ValueError when the text does not start with a header."""
    if not text.strip():
        return []
    starts = list(_HEADER_START.finditer(text))
    if not starts or starts[0].start() != 0:
        raise ValueError(f"headers do not start with 'Name:': {model.printable(text[:40])!r}")
    pairs = []
    for match, following in zip(starts, [*starts[1:], None], strict=True):
        end = following.start() - 2 if following else len(text)
        value = text[match.end():end]
        if following is None:
            value = value.removesuffix("  ")
        pairs.append((match[1], value.removeprefix(" ")))
    return pairs


# -- the analyzer's row splitting ----------------------------------------------------

def analyzer_values(row: str) -> list[str]:
    """The values the analyzer gets from one row line (its `GetCSVValues`): split on
    `","`, a piece ending in a quote glued to the following pieces that start with
    one, `""` made `"`, the outer quotes cut. Used to refuse rows it would misread."""
    pieces = row.split('","')
    values = []
    i = 0
    while i < len(pieces):
        merged = pieces[i]
        i += 1
        if len(merged) > 1 and merged.endswith('"'):
            while i < len(pieces) and len(pieces[i]) > 1 and pieces[i].startswith('"'):
                merged += '","' + pieces[i]
                i += 1
        values.append(merged.replace('""', '"'))
    values[0] = values[0][1:]
    values[-1] = values[-1][:-1]
    return values


# -- writing -------------------------------------------------------------------------

def _one_line(body: bytes, what: str, seq: object, skipped: list[str]) -> str:
    """A body as text on one line. Line breaks become spaces (same length, so
    Content-Length holds): in JSON they are whitespace, so only other bodies get a note."""
    text = model.from_bytes(body)
    if "\r" not in text and "\n" not in text:
        return text
    flat = text.replace("\r", " ").replace("\n", " ")
    try:
        json.loads(text)
    except ValueError:
        skip(skipped, f"record {seq}: {what} body line breaks written as spaces "
                      f"(the analyzer's trace holds one call per line)")
    return flat


def _timestamp(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


def _times(exchange: model.Exchange) -> tuple[str, str]:
    """(ReqTimeUTC, EllapsedCallTimeMs): start and end both to the millisecond."""
    if exchange.start is None:
        return "", "0"
    start = round(exchange.start * 1000)
    end = round(exchange.end * 1000) if exchange.end is not None else start
    return _timestamp(start), str(max(0, end - start))


def _check_headers(headers: model.Headers, what: str) -> str:
    text = format_headers(headers)
    if parse_headers(text) != list(headers):
        raise ValueError(f"{what} headers hold two spaces before a 'Name:', which the "
                         f"trace's header text cannot tell from a new header")
    return text


def _breadcrumb(name: str) -> str:
    """A call id like the analyzer's (a GUID), the same for the same record, so two
    exports of one recording are the same file."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, model.printable(name))).upper()


def _row(exchange: model.Exchange, number: int, skipped: list[str]) -> list[str]:
    """The 24 values of one exchange (ValueError when the trace cannot hold it)."""
    check_exportable(exchange)
    request, response = exchange.request, exchange.response
    seq = exchange.seq
    url = request.url
    xuid = _XUID.search(url)
    start, elapsed = _times(exchange)
    values = {
        "Host": urlsplit(url).hostname or "",
        "Uri": url,
        "XboxUserId": xuid[1] if xuid else "",
        "MultiplayerCorrelationId": "",
        "RequestHeaders": _check_headers(request.headers, "request"),
        "RequestBody": _one_line(request.body, "request", seq, skipped),
        "ResponseHeaders": _check_headers(response.headers, "response") if response else "",
        "ResponseBody": _one_line(response.body, "response", seq, skipped) if response else "",
        "HttpStatusCode": str(response.status) if response else "0",
        "EllapsedCallTimeMs": elapsed,
        "ReqTimeUTC": start,
        "IsGet": "true" if request.method == "GET" else "false",
        "LoggerId": str(number),
        "IsShoulderTap": "false",
        "ChangeNumber": "0",
        "IsInGameEvent": "false",
        "EventVersion": "0",
        "BreadCrumb": _breadcrumb(f"{seq}|{start}|{url}"),
    }
    return [values.get(name, "") for name in COLUMNS] + [request.method]


def _line(values: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(values)
    return out.getvalue()


def write_csv(exchanges: Iterable[model.Exchange], fo: IO[bytes], skipped: list[str],
              total: int) -> int:
    """Write exchanges as the analyzer's trace (version line, quoted header row, one
    quoted row per call); the number written. An exchange the trace cannot hold, or
    whose row the analyzer would split wrongly, is noted in `skipped`."""
    text = io.TextIOWrapper(fo, encoding="utf-8", errors="surrogateescape", newline="")
    count = 0
    try:
        text.write(VERSION + "\n")
        text.write(_line([*COLUMNS, METHOD]))
        for exchange in exchanges:
            try:
                values = _row(exchange, count + 1, skipped)
            except UNWRITABLE as e:
                skip_record(skipped, exchange.seq, e)
                continue
            line = _line(values)
            if analyzer_values(line.rstrip("\n"))[:len(COLUMNS)] != values[:len(COLUMNS)]:
                skip(skipped, f"record {exchange.seq}: the analyzer would split its row "
                              f"wrongly (a quote next to a column boundary)")
                continue
            text.write(line)
            count += 1
    finally:
        text.flush()
        text.detach()
    return count


# -- reading -------------------------------------------------------------------------

def _flag(value: str, column: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"{column} is {value!r}, not true or false")
    return lowered == "true"


def _integer(value: str, column: str) -> int:
    if not value.strip():
        return 0
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{column} is {value!r}, not a whole number") from None
    if number < 0:
        raise ValueError(f"{column} is {value!r}, below 0")
    return number


def _start(value: str) -> float | None:
    if not value.strip():
        return None
    try:
        when = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"ReqTimeUTC is {value!r}, not a date and time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _method(row: Mapping[str, str], body: bytes, url: str, headers: model.Headers) -> str:
    """The row's method: its Method column, else worked out (module docstring)."""
    named = row.get(METHOD, "").strip()
    if named:
        return named
    if _flag(row["IsGet"], "IsGet"):
        return "GET"
    if not body:
        return "DELETE"
    probe = model.Request("POST", url, headers, body)
    return "PUT" if probe.resource.kind in _SESSION_KINDS else "POST"


def _response(row: Mapping[str, str]) -> model.Response | None:
    status = _integer(row["HttpStatusCode"], "HttpStatusCode")
    if status == 0:
        return None
    if not 100 <= status <= 599:
        raise ValueError(f"HttpStatusCode is {status}, not an HTTP status")
    try:
        reason = http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    return model.Response(status, reason, parse_headers(row["ResponseHeaders"]),
                          model.to_bytes(row["ResponseBody"]))


def _exchange(row: Mapping[str, str], provenance: Mapping[str, Any]) -> model.Exchange:
    url = row["Uri"]
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"Uri is {model.printable(url)[:80]!r}, not an absolute http(s) URL")
    headers = model.Headers(parse_headers(row["RequestHeaders"]))
    body = model.to_bytes(row["RequestBody"])
    request = model.Request(_method(row, body, url, headers), url, headers, body)
    response = _response(row)
    start = _start(row["ReqTimeUTC"])
    elapsed = _integer(row["EllapsedCallTimeMs"], "EllapsedCallTimeMs")
    end = None if start is None else (round(start * 1000) + elapsed) / 1000
    return model.Exchange(request, response, error=None if response else "no response in the trace",
                          start=start, end=end, provenance=provenance)


def _header_row(line: str) -> list[str]:
    """The header row's names; ValueError unless the analyzer's columns lead it."""
    try:
        names = next(csv.reader([line]), [])
    except csv.Error:
        names = []
    if [n.strip().lower() for n in names[:len(COLUMNS)]] != [c.lower() for c in COLUMNS]:
        raise ValueError("not a Trace Analyzer CSV trace: the second line is not its "
                         "header row (\"Host\",\"Uri\",\"XboxUserId\",...)")
    return [*COLUMNS, *names[len(COLUMNS):]]


def _rows(text: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text, start=3):
        line = line.rstrip("\r\n")
        if line.strip():
            yield number, line


def read_csv(fo: IO[bytes], provenance: Mapping[str, Any], skipped: list[str]
             ) -> Iterator[model.Exchange]:
    """The calls of an analyzer trace, one exchange per row. Raises ValueError (on
    the first `next`) when the file is not such a trace; a row that cannot be read,
    and every shoulder tap, is a line in `skipped` naming its line number."""
    text = io.TextIOWrapper(fo, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    try:
        version = text.readline(_VERSION_LINE).strip()
        if version not in VERSIONS:
            raise ValueError(f"not a Trace Analyzer CSV trace: the first line is "
                             f"{model.printable(version[:20])!r}, not {' or '.join(VERSIONS)}")
        names = _header_row(text.readline(_HEADER_LINE))
        for number, line in _rows(text):
            exchange = _read_row(number, line, names, provenance, skipped)
            if exchange is not None:
                yield exchange
    finally:
        text.detach()


def _read_row(number: int, line: str, names: Sequence[str], provenance: Mapping[str, Any],
              skipped: list[str]) -> model.Exchange | None:
    """One row's exchange, or None with a line in `skipped`."""
    try:
        values = next(csv.reader([line], strict=True))
    except csv.Error as e:
        skip(skipped, f"line {number}: not a CSV row ({e})")
        return None
    if len(values) < len(COLUMNS):
        skip(skipped, f"line {number}: {len(values)} columns, the trace has {len(COLUMNS)}")
        return None
    row = dict(zip(names, values, strict=False))
    try:
        if _flag(row["IsShoulderTap"], "IsShoulderTap"):
            skip(skipped, f"line {number}: shoulder tap (an RTA notification, not an HTTP "
                          f"call): a CSV trace holds no RTA message")
            return None
        return _exchange(row, provenance)
    except ValueError as e:  # model.ModelError is one
        skip(skipped, f"line {number}: {e}")
        return None
