"""`mpsdproxy scan`: anything credential-shaped left in a file the tool wrote or read.

Recordings (`.jsonl`: `where` is `line N request.headers[Authorization]`,
`line N response.body.json.Token`, ...), HAR (`entry N ...`), SAZ archives
(`raw/012_c.txt header Authorization`, bodies with their Content-Encoding
undone), the Trace Analyzer's CSV (`row N RequestHeaders[Authorization]`), and
any other text, line by line (reports). What counts is what the recording's
`Redactor` redacts: a header it names, a JSON field or query parameter whose
name says token, ticket, proof, secret or password (`secrets.secret_key`), and
every shape `secrets.find` knows. A value already `redacted:<hex>` is not a
finding, and an excerpt shows the kind and the first 4 characters only: a scan
report never holds the secret it found.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any
from typing import NamedTuple

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import secrets
from mpsdproxy.recording.redact import Redactor

__all__ = ["ScanFinding", "ScanError", "scan_file", "scan_text", "MAX_MEMBER"]

#: The most bytes of one archive member (or one decoded body) looked at.
MAX_MEMBER = 64 * 1024 * 1024


class ScanFinding(NamedTuple):
    """A credential left in `path` at `where`; `excerpt` is its first 4 characters."""

    path: str
    where: str
    kind: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.where}: {self.kind}: {self.excerpt}"


class ScanError(ValueError):
    """A file that cannot be scanned (unreadable, a broken archive); names the file."""


def _excerpt(value: str) -> str:
    return f"{model.terminal_safe(value[:4])}..."


class _Scanner:
    """Collects the findings of one file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.found: list[ScanFinding] = []
        self.names = Redactor()

    def add(self, where: str, kind: str, value: str) -> None:
        self.found.append(ScanFinding(self.path, where.strip(), kind, _excerpt(value)))

    def text(self, where: str, text: str) -> None:
        """Shapes anywhere in `text`."""
        if secrets.suspicious(text):
            for item in secrets.find(text):
                self.add(where, item.kind, text[item.start:item.end])

    def header(self, where: str, name: str, value: str) -> None:
        """One header: a named secret not redacted, or shapes in its value."""
        if self.names.secret(name) and value.strip() and not secrets.is_redacted(value):
            self.add(f"{where}[{name}]", "secret-header", value)
        else:
            self.text(f"{where}[{name}]", value)

    def value(self, where: str, value: Any) -> None:
        """A JSON value (a record, a HAR document, a body) walked without recursion:
        header pairs by name, secret fields by name, every string by shape, base64
        bodies decoded."""
        stack: list[tuple[str, Any, bool]] = [(where, value, False)]
        while stack:
            at, item, secret = stack.pop()
            if isinstance(item, str):
                if at.endswith(".text") and item[:1] in ("{", "[") and not secret:
                    self.body(at, model.to_bytes(item))  # a JSON body kept as text
                elif secret and item and not secrets.is_redacted(item):
                    self.add(at, "secret-field", item)
                else:
                    self.text(at, item)
            elif isinstance(item, list):
                if at.endswith(("headers", "queryString", "cookies", "params")):
                    self._pairs(at, item, stack, secret)
                else:
                    stack += reversed([(f"{at}[{i}]", child, secret)
                                       for i, child in enumerate(item)])
            elif isinstance(item, dict):
                self._object(at, item, stack, secret)

    def _object(self, at: str, item: dict[str, Any], stack: list[Any], secret: bool) -> None:
        if isinstance(item.get("base64"), str) and not secret:
            self.body(f"{at}.base64", _b64(item["base64"]))
        if item.get("encoding") == "base64" and isinstance(item.get("text"), str):
            self.body(f"{at}.text", _b64(item["text"]))  # a HAR content
            item = {k: v for k, v in item.items() if k != "text"}
        children = [(_join(at, str(key)), child, secret or secrets.secret_key(str(key)))
                    for key, child in item.items() if key != "base64" or secret]
        stack += reversed(children)

    def _pairs(self, at: str, items: list[Any], stack: list[Any], secret: bool) -> None:
        """[name, value] pairs (recordings) or {"name", "value"} objects (HAR)."""
        for i, pair in enumerate(items):
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
                name, value = pair
            elif isinstance(pair, dict) and isinstance(pair.get("value"), str):
                name, value = str(pair.get("name", "")), pair["value"]
            else:
                stack.append((f"{at}[{i}]", pair, secret))
                continue
            if at.endswith("headers"):
                self.header(at, name, value)
            elif (at.endswith("cookies") or secrets.secret_key(name)) and value \
                    and not secrets.is_redacted(value):
                self.add(f"{at}[{name}]", "secret-field", value)
            else:
                self.text(f"{at}[{name}]", value)

    def body(self, where: str, raw: bytes) -> None:
        """A body's bytes: JSON walked, anything else searched as text."""
        if raw[:1] in (b"{", b"[") and (value := jsonbody.parse(raw)) is not jsonbody.INVALID:
            self.value(where, value)
        else:
            self.text(where, model.from_bytes(raw))


def _join(at: str, key: str) -> str:
    """`line 3 ` + `request` -> `line 3 request`; `line 3 request` + `url` -> `...request.url`."""
    return at + key if not at or at.endswith(" ") else f"{at}.{key}"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return model.to_bytes(text)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            yield number, model.from_bytes(line.rstrip(b"\r\n"))


def _scan_recording(scanner: _Scanner) -> None:
    for number, line in _lines(scanner.path):
        try:
            item = json.loads(line) if line.strip() else None
        except ValueError:
            item = line  # not a record: searched as text all the same
        if isinstance(item, dict) and item.get("format") and "seq" not in item:
            continue  # the header line
        if item is not None:
            scanner.value(f"line {number} ", item)


def _scan_har(scanner: _Scanner) -> None:
    with open(scanner.path, "rb") as f:
        try:
            document = json.load(f)
        except (ValueError, RecursionError) as e:
            raise ScanError(f"{scanner.path}: not JSON: {e}") from None
    entries = document.get("log", {}).get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        scanner.value("", document)
        return
    for number, entry in enumerate(entries, 1):
        scanner.value(f"entry {number} ", entry)
    rest = {k: v for k, v in document["log"].items() if k != "entries"}
    scanner.value("log", rest)


def _bounded_inflate(data: bytes, wbits: int) -> bytes:
    return zlib.decompressobj(wbits).decompress(data, MAX_MEMBER)


def _decoded(headers: model.Headers, body: bytes) -> bytes:
    """A saved body with gzip or deflate undone (at most MAX_MEMBER bytes of it);
    the bytes as saved when that cannot be done."""
    coding = (headers.get("content-encoding") or "").strip().lower()
    for wbits in {"gzip": (31,), "x-gzip": (31,), "deflate": (15, -15)}.get(coding, ()):
        try:
            return _bounded_inflate(body, wbits)
        except zlib.error:
            continue
    return body


def _http_message(scanner: _Scanner, member: str, data: bytes) -> None:
    """One raw HTTP/1 message of a SAZ: first line, headers, body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = [model.from_bytes(line.rstrip(b"\r")) for line in head.split(b"\n")]
    fields: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        name, colon, value = line.partition(":")
        if number > 1 and colon and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
            fields.append((name, value.strip()))
            scanner.header(f"{member} header", name, value.strip())
        else:
            scanner.text(f"{member} line {number}", line)
    if body:
        try:
            headers = model.Headers(fields)
        except model.ModelError:
            headers = model.Headers()
        scanner.body(f"{member} body", _decoded(headers, body))


def _scan_saz(scanner: _Scanner) -> None:
    try:
        archive = zipfile.ZipFile(scanner.path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ScanError(f"{scanner.path}: not a zip archive: {e}") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as f:
                data = f.read(MAX_MEMBER)
            name = info.filename
            if re.search(r"_[cs]\.txt$", name):
                _http_message(scanner, name, data)
            else:
                scanner.text(name, model.from_bytes(data))


_HEADER_SPLIT = re.compile(r"(?:^|\s{2}|\r?\n)([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ")


def _csv_headers(scanner: _Scanner, where: str, cell: str) -> None:
    """A Trace Analyzer header cell: `Name: value` fields joined by two spaces."""
    marks = list(_HEADER_SPLIT.finditer(cell))
    if not marks:
        scanner.text(where, cell)
        return
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(cell)
        scanner.header(where, mark.group(1), cell[mark.end():end].strip())


def _csv_cell(scanner: _Scanner, where: str, column: str, cell: str) -> None:
    if column.endswith("Headers"):
        _csv_headers(scanner, where, cell)
    elif column.endswith("Body"):
        scanner.body(where, model.to_bytes(cell))
    else:
        scanner.text(where, cell)


def _scan_csv(scanner: _Scanner) -> None:
    # Bodies are cells: the csv module's 128 KiB default would refuse a large one.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_MEMBER))
    with open(scanner.path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        first = f.readline()
        if "," in first:
            f.seek(0)  # no version line: the first line is the column names
        try:
            for number, row in enumerate(csv.DictReader(f), 1):
                for column, cell in row.items():
                    if isinstance(cell, str) and cell:
                        _csv_cell(scanner, f"row {number} {column}", str(column), cell)
        except csv.Error as e:
            raise ScanError(f"{scanner.path}: not a CSV trace: {e}") from None


def _scan_lines(scanner: _Scanner) -> None:
    for number, line in _lines(scanner.path):
        scanner.text(f"line {number}", line)


def _kind(path: str) -> str:
    """recording, har, saz, csv or text: by the name, else by the first bytes."""
    low = path.lower()
    for ending, kind in ((".jsonl", "recording"), (".har", "har"), (".saz", "saz"),
                         (".csv", "csv")):
        if low.endswith(ending):
            return kind
    with open(path, "rb") as f:
        start = f.read(4096)
    if start.startswith(b"PK\x03\x04"):
        return "saz"
    stripped = start.lstrip()
    if stripped.startswith(b"{") and b'"log"' in start and b"\n{" not in stripped:
        return "har"
    if stripped.startswith(b"{"):
        return "recording"
    return "text"


_SCANNERS = {"recording": _scan_recording, "har": _scan_har, "saz": _scan_saz,
             "csv": _scan_csv, "text": _scan_lines}


def scan_file(path: str) -> list[ScanFinding]:
    """Everything credential-shaped in the file at `path`, in file order.

    Raises ScanError (a ValueError) for a file that cannot be read as its kind, and
    OSError when it cannot be opened.
    """
    scanner = _Scanner(str(path))
    _SCANNERS[_kind(str(path))](scanner)
    return scanner.found


def scan_text(text: str, path: str = "-") -> list[ScanFinding]:
    """The findings of any text, line by line (for output that is not a file yet)."""
    scanner = _Scanner(path)
    for number, line in enumerate(io.StringIO(text), 1):
        scanner.text(f"line {number}", line.rstrip("\n"))
    return scanner.found
