"""Export a recording to a file, import a file into a recording: the `export` and
`import` commands' work.

A record becomes an exchange through the recording codec (`recording.to_exchange`)
and an imported exchange becomes a record through it (`recording.to_record`),
redacted with the default Redactor unless told otherwise and classified afresh.
Records no format can hold (a relative URL, a header with CR/LF) are listed in
`skipped`, never silently dropped.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import Any
from typing import NamedTuple

from mpsdproxy import classify
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.har import read_har
from mpsdproxy.interchange.har import write_har
from mpsdproxy.interchange.saz import read_saz
from mpsdproxy.interchange.saz import write_saz

__all__ = ["Format", "FORMATS", "guess_format", "exchanges_of", "ExportResult",
           "ImportResult", "export_file", "import_file"]

Reader = Callable[[IO[bytes], Mapping[str, Any], list[str]], Iterator[model.Exchange]]
Writer = Callable[[Iterable[model.Exchange], IO[bytes], list[str], int], int]


class Format(NamedTuple):
    """One interchange format: how to recognise, read and write its files.

    `write(exchanges, fo, skipped, total)` gets the number of records ahead
    (SAZ pads its session numbers to it). The formats here need nothing but
    the standard library; mitmproxy's flow files are one more `Format`, in
    `mpsdproxy.addons.flowfile`, handed in by whoever assembles the command.
    """

    name: str
    extensions: tuple[str, ...]
    looks_like: Callable[[bytes], bool]
    read: Reader
    write: Writer


def _write_har(exchanges: Iterable[model.Exchange], fo: IO[bytes], skipped: list[str],
               total: int) -> int:
    text = io.TextIOWrapper(fo, encoding="utf-8", newline="")
    try:
        return write_har(exchanges, text, skipped)
    finally:
        text.flush()
        text.detach()


def _write_saz(exchanges: Iterable[model.Exchange], fo: IO[bytes], skipped: list[str],
               total: int) -> int:
    return write_saz(exchanges, fo, max(3, len(str(total))), skipped)


#: The formats this package reads and writes by itself.
FORMATS: dict[str, Format] = {
    "har": Format("har", (".har",),
                  lambda head: head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"),
                  read_har, _write_har),
    "saz": Format("saz", (".saz",), lambda head: head.startswith(b"PK"), read_saz, _write_saz),
}


def guess_format(path: str, formats: Mapping[str, Format] = FORMATS) -> str:
    """The interchange format of a file, by extension, else by its first bytes."""
    ext = os.path.splitext(path)[1].lower()
    for fmt in formats.values():
        if ext in fmt.extensions:
            return fmt.name
    with open(path, "rb") as f:
        head = f.read(4)
    for fmt in formats.values():
        if fmt.looks_like(head):
            return fmt.name
    raise ValueError(f"cannot tell the format of {path}: use one of {', '.join(formats)}")


def _check_format(fmt: str, formats: Mapping[str, Format]) -> Format:
    found = formats.get(fmt.lower())
    if found is None:
        raise ValueError(f"format should be one of {', '.join(formats)}, not {fmt!r}")
    return found


def _refuse_same_file(source: str, target: str) -> None:
    """A command never overwrites or empties one of its own inputs."""
    if os.path.exists(target) and os.path.samefile(source, target):
        raise ValueError(f"{target} is the file being read: choose another output")


def exchanges_of(records: Iterable[Mapping[str, Any]], skipped: list[str] | None = None
                 ) -> Iterator[model.Exchange]:
    """The exchanges of records that a file can hold; the others noted in `skipped`."""
    for record in records:
        try:
            exchange = recording.to_exchange(record)
            check_exportable(exchange)
        except (ValueError, KeyError, TypeError) as e:
            message = str(e)
            if not message.startswith("record "):
                message = f"record {record.get('seq')}: cannot be exported ({message})"
            skip(skipped, message)
            continue
        yield exchange


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


def export_file(recording_path: str, out_path: str, fmt: str,
                formats: Mapping[str, Format] = FORMATS) -> ExportResult:
    """Write the recording at `recording_path` to `out_path` in format `fmt`.

    The recording is streamed; unreadable lines are listed in `issues`,
    records that cannot be expressed (no absolute URL) in `skipped`.
    """
    chosen = _check_format(fmt, formats)
    _refuse_same_file(recording_path, out_path)
    result = ExportResult()
    total = sum(1 for _ in recording.read(recording_path))
    exchanges = exchanges_of(recording.read(recording_path, issues=result.issues),
                             result.skipped)
    with open(out_path, "wb") as f:
        result.count = chosen.write(exchanges, f, result.skipped, total)
    return result


def _wanted(request: model.Request, hosts: Collection[str] | None) -> bool:
    if not hosts:
        return True
    wanted = {h.lower() for h in hosts}
    host_header = (request.headers.first("host") or "").lower().rsplit(":", 1)[0]
    return request.host in wanted or host_header in wanted


def import_file(
    path: str,
    out_path: str,
    fmt: str | None = None,
    *,
    redactor: recording.Redactor | None = None,
    hosts: Collection[str] | None = None,
    formats: Mapping[str, Format] = FORMATS,
) -> ImportResult:
    """Append the exchanges of a HAR, mitmproxy or SAZ file to the recording `out_path`.

    `fmt` is guessed from the file when None. `hosts` keeps only exchanges
    with those hosts (say, the session directory's) out of a whole-machine
    capture; every exchange is kept when it is empty. Raises ValueError when
    the file is not in the format.
    """
    chosen = _check_format(fmt or guess_format(path, formats), formats)
    _refuse_same_file(path, out_path)
    redactor = redactor or recording.Redactor()
    provenance = {"source": "imported", "format": chosen.name,
                  "file": os.path.basename(path)}
    result = ImportResult()
    with open(path, "rb") as f:
        exchanges = chosen.read(f, provenance, result.skipped)
        first = next(exchanges, None)  # a file not in the format fails before the output opens
        with recording.Writer(out_path) as writer:
            for exchange in _chain(first, exchanges):
                request = exchange.request
                if not _wanted(request, hosts):
                    result.skipped.append(
                        f"{request.method} {model.printable(request.url)}: other host")
                    continue
                record = recording.to_record(exchange, redactor, classify.classify(exchange))
                seq = writer.write(record)
                result.count += 1
                result.first_seq = result.first_seq or seq
                result.last_seq = seq
    return result


def _chain(first: model.Exchange | None, rest: Iterator[model.Exchange]
           ) -> Iterator[model.Exchange]:
    if first is not None:
        yield first
        yield from rest
