"""Export a recording to a file, import a file into a recording: the `export` and
`import` commands' work.

A record becomes an exchange through the recording codec (`recording.to_exchange`)
and an imported exchange becomes a record through it (`recording.to_record`),
redacted with the default Redactor unless told otherwise and classified afresh.
Records no format can hold (a relative URL, a header with CR/LF, a websocket
message in a format without a place for one) are listed in `skipped`, never
silently dropped.

Scope of an import: by default the session directory's, matchmaking's and
RTA's hosts (`resources.MPSD_HOSTS + resources.RTA_HOSTS`, the proxy's own
intercept list, plus any exchange `classify.is_mpsd` calls MPSD), and `hosts`
added to them; `all_hosts` keeps everything; `processes` (SAZ only) keeps the
sessions of those programs (Fiddler's process column). A websocket message
goes where its handshake goes, and is written among the exchanges by time
(before the first exchange that completed after it), as the live recorder
writes it, so a tap stands before the 412 it explains. An RTA text frame's
record carries the message decoded (`recording.messages`, field `"rta"`).

Files are never lost: an output that is one of the inputs (by path or inode)
is refused, an existing import output is refused unless `append`, and every
output is written to a temporary file beside it and renamed into place, so a
failed command leaves the old file (or none) behind.
"""

from __future__ import annotations

import functools
import heapq
import io
import math
import os
import zipfile
from collections import Counter
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
from mpsdproxy import resources
from mpsdproxy import safefiles
from mpsdproxy.interchange import saz
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.common import skip_record
from mpsdproxy.interchange.csvtrace import looks_like as csv_looks_like
from mpsdproxy.interchange.csvtrace import read_csv
from mpsdproxy.interchange.csvtrace import write_csv
from mpsdproxy.interchange.har import gather_messages
from mpsdproxy.interchange.har import read_har
from mpsdproxy.interchange.har import write_har
from mpsdproxy.interchange.saz import MAX_BODY
from mpsdproxy.interchange.saz import read_saz
from mpsdproxy.interchange.saz import write_saz
from mpsdproxy.recording import messages as ws

__all__ = ["Format", "FORMATS", "MAX_BODY", "DEFAULT_HOSTS", "guess_format", "exchanges_of",
           "items_of", "ExportResult", "ImportResult", "export_file", "import_file"]

Item = model.Exchange | ws.WebsocketMessage
Reader = Callable[[IO[bytes], Mapping[str, Any], list[str]], Iterator[Item]]
Writer = Callable[[Iterable[Item], IO[bytes], list[str], int], int]

#: What `import` keeps by default: the proxy's intercept list and the RTA host.
DEFAULT_HOSTS: tuple[str, ...] = resources.MPSD_HOSTS + resources.RTA_HOSTS


class Format(NamedTuple):
    """One interchange format: how to recognise, read and write its files.

    `write(exchanges, fo, skipped, total)` gets the number of records ahead
    (SAZ pads its session numbers to it). With `messages`, `write` takes
    websocket messages (`recording.messages.WebsocketMessage`) too, each after
    its handshake; otherwise they are named in `skipped`. With `gathers` it also
    takes `gathered` (handshake seq -> its messages, `gather_messages` over a first
    pass), for a format that keeps a websocket's messages inside its handshake (HAR's
    entry, mitmproxy's flow), written in its place. With `bounded`, `read`
    takes a `max_body` cap (an archive or a whole-document format, whose reader
    decides how much to hold); a line- or flow-at-a-time reader needs none. The
    formats here need nothing but the standard library; mitmproxy's flow files
    are one more `Format`, in `mpsdproxy.addons.flowfile`, handed in by whoever
    assembles the command.
    """

    name: str
    extensions: tuple[str, ...]
    looks_like: Callable[[bytes], bool]
    read: Reader
    write: Writer
    messages: bool = False
    bounded: bool = False
    gathers: bool = False


def _write_har(exchanges: Iterable[Item], fo: IO[bytes], skipped: list[str],
               total: int, gathered: Mapping[int, list[ws.WebsocketMessage]] | None = None
               ) -> int:
    text = io.TextIOWrapper(fo, encoding="utf-8", newline="")
    try:
        return write_har(exchanges, text, skipped, gathered)
    finally:
        text.flush()
        text.detach()


def _write_saz(exchanges: Iterable[Item], fo: IO[bytes], skipped: list[str],
               total: int) -> int:
    return write_saz(exchanges, fo, max(3, len(str(total))), skipped)


#: The formats this package reads and writes by itself.
FORMATS: dict[str, Format] = {
    "har": Format("har", (".har",),
                  lambda head: head.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"),
                  read_har, _write_har, messages=True, bounded=True, gathers=True),
    "saz": Format("saz", (".saz",), lambda head: head.startswith(b"PK"), read_saz, _write_saz,
                  messages=True, bounded=True),
    "csv": Format("csv", (".csv",), csv_looks_like, read_csv, write_csv),
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


def items_of(records: Iterable[Mapping[str, Any]], skipped: list[str] | None = None, *,
             messages: bool = True, fmt: str = "this format") -> Iterator[Item]:
    """The exchanges (and, with `messages`, websocket messages) of records that a file
    can hold; the others noted in `skipped`, each by its seq."""
    for record in records:
        if ws.is_message(record):
            if ws.is_dropped(record):
                skip(skipped, f"record {record.get('seq')}: a frame a fault kept from the "
                              "title (a note, not a message it received)")
                continue
            if not messages:
                skip(skipped, f"record {record.get('seq')}: a websocket message; "
                              f"{fmt} has no place for one")
                continue
            try:
                yield ws.from_record(record)
            except ValueError as e:
                skip(skipped, str(e))
            continue
        try:
            exchange = recording.to_exchange(record)
            check_exportable(exchange)
        except (ValueError, KeyError, TypeError) as e:
            skip_record(skipped, record.get("seq"), e)
            continue
        yield exchange


def exchanges_of(records: Iterable[Mapping[str, Any]], skipped: list[str] | None = None
                 ) -> Iterator[model.Exchange]:
    """The exchanges of records that a file can hold; the others noted in `skipped`."""
    for item in items_of(records, skipped, messages=False):
        if isinstance(item, model.Exchange):
            yield item


@dataclass
class ExportResult:
    count: int = 0
    skipped: list[str] = field(default_factory=list)
    issues: list[recording.ReadIssue] = field(default_factory=list)


@dataclass
class ImportResult:
    """What an import wrote: `count` exchanges and `messages` websocket messages,
    `kept_by_host` / `dropped_by_host` counting exchanges by host."""

    count: int = 0
    skipped: list[str] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    kept_by_host: dict[str, int] = field(default_factory=dict)
    dropped_by_host: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def summary(self) -> str:
        """One line for people: what was kept and what was dropped, by host."""
        def hosts(counts: Mapping[str, int]) -> str:
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            return ", ".join(f"{host} {n}" for host, n in ranked)

        line = f"kept {self.count} exchange(s)"
        if self.kept_by_host:
            line += f" ({hosts(self.kept_by_host)})"
        if self.messages:
            line += f" and {self.messages} websocket message(s)"
        dropped = sum(self.dropped_by_host.values())
        line += f"; dropped {dropped}"
        if dropped:
            line += f" ({hosts(self.dropped_by_host)})"
        if self.skipped:
            line += f"; skipped {len(self.skipped)} (listed above)"
        return line


def export_file(recording_path: str, out_path: str, fmt: str,
                formats: Mapping[str, Format] = FORMATS,
                redactor: recording.Redactor | None = None,
                progress: Callable[[int], None] | None = None) -> ExportResult:
    """Write the recording at `recording_path` to `out_path` in format `fmt`.

    The recording is streamed; unreadable lines are listed in `issues`,
    records that cannot be expressed (no absolute URL) in `skipped`. Every
    exchange is redacted again on its way out (`redactor`, the default one
    unless told otherwise), so even a private recording made with redaction off
    exports safe to share. A format that `gathers` (HAR, mitmproxy flows) reads the
    recording once more first and holds its websocket messages, so each handshake is
    written in its place with them. The output is written to a temporary file and
    renamed: a failed export leaves the old file as it was. Raises ValueError
    when `out_path` is the recording, and (`safefiles.BadFile`) when the file is not a
    recording or mostly unreadable, as `report` and `diff` refuse it. `progress`, when
    given, is told how many records have been read so far (the CLI shows a counter).
    """
    chosen = _check_format(fmt, formats)
    safefiles.refuse_overwrite_of_inputs([out_path], [recording_path])
    result = ExportResult()
    total = safefiles.refuse_unreadable_recording(recording_path)
    items = items_of(recording.read(recording_path, issues=result.issues, messages=True),
                     result.skipped, messages=chosen.messages, fmt=chosen.name.upper())
    hide = redactor if redactor is not None else recording.Redactor()
    items = (hide.exchange(i) if isinstance(i, model.Exchange) else i for i in items)
    if progress is not None:
        items = _counted(items, progress)
    write = chosen.write
    if chosen.gathers:  # its handshakes hold their messages
        gathered = gather_messages(items_of(recording.read(recording_path, messages=True)))
        write = functools.partial(chosen.write, gathered=gathered)
    with safefiles.atomic_output(out_path, "wb") as f:
        result.count = write(items, f, result.skipped, total)
    return result


def _host_of(request: model.Request) -> str:
    return (request.host or resources.bare_host(request.headers.first("host") or "")
            or "(no host)")


class _Scope:
    """Which exchanges an import keeps."""

    def __init__(self, hosts: Collection[str] | None, all_hosts: bool,
                 processes: Collection[str] | None) -> None:
        self.all_hosts = all_hosts
        self.hosts = {resources.bare_host(h) for h in (*DEFAULT_HOSTS, *(hosts or ()))}
        self.processes = {_program(p) for p in processes or ()}

    def keeps(self, exchange: model.Exchange, process: str | None) -> bool:
        """Whether the exchange is the title's session traffic: on a kept host, an MPSD
        path on any host (`classify.is_mpsd`), or the RTA websocket by the recorder's own
        rule (`messages.is_rta_url`: `/connect` on the stand-in's host too), so a
        recording made in front of the stand-in comes back whole from its export."""
        if self.processes and _program(process or "") not in self.processes:
            return False
        if self.all_hosts:
            return True
        request = exchange.request
        return (request.host in self.hosts
                or resources.bare_host(request.headers.first("host") or "") in self.hosts
                or classify.is_mpsd(exchange)
                or (request.opens_websocket and ws.is_rta_url(request.url)))


def _program(name: str) -> str:
    """A program name as the process filter compares it: lower case, no `.exe`."""
    return name.strip().lower().removesuffix(".exe")


def _items(chosen: Format, f: IO[bytes], provenance: Mapping[str, Any], skipped: list[str],
           processes: Collection[str] | None, max_body: int
           ) -> Iterator[tuple[Item, str | None]]:
    """(item, Fiddler process or None) of the file."""
    if processes:
        if chosen.name != "saz":
            raise ValueError("selecting by process needs a SAZ capture (Fiddler's process "
                             f"column), not {chosen.name}")
        yield from saz.read_sessions(f, provenance, skipped, max_body=max_body)
        return
    cap = {"max_body": max_body} if chosen.bounded else {}
    items = chosen.read(f, provenance, skipped, **cap)
    for item in items:
        yield item, None


def _guarded(items: Iterator[tuple[Item, str | None]], path: str
             ) -> Iterator[tuple[Item, str | None]]:
    """The items, with any reading error turned into one line naming the file."""
    try:
        yield from items
    except (ValueError, KeyError, TypeError, RecursionError, zipfile.BadZipFile,
            EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {e}") from None


def import_file(
    path: str,
    out_path: str,
    fmt: str | None = None,
    *,
    redactor: recording.Redactor | None = None,
    hosts: Collection[str] | None = None,
    all_hosts: bool = False,
    processes: Collection[str] | None = None,
    append: bool = False,
    formats: Mapping[str, Format] = FORMATS,
    max_body: int = MAX_BODY,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Write the exchanges of a HAR, SAZ, CSV (or flow) file in scope to the recording
    `out_path` (see the module's docstring for the scope).

    `fmt` is guessed from the file when None. An existing `out_path` is refused
    unless `append`; the output is written to a temporary copy and renamed, so a
    failed import changes nothing. Raises ValueError (one line, naming the file)
    when the file is not in the format or cannot be read. `progress`, when given, is
    told how many items have been read so far (the CLI shows a counter with it).
    """
    chosen = _check_format(fmt or guess_format(path, formats), formats)
    safefiles.refuse_overwrite_of_inputs([out_path], [path])
    if os.path.lexists(out_path) and not append:
        raise ValueError(f"{out_path} exists: choose another output, or append to it")
    problem = recording.foreign_file(out_path)  # appended to through a copy: named here
    if problem is not None:
        raise recording.ForeignFileError(problem, os.fspath(out_path))
    redactor = redactor or recording.Redactor()
    scope = _Scope(hosts, all_hosts, processes)
    provenance = {"source": "imported", "format": chosen.name,
                  "file": os.path.basename(path)}
    result = ImportResult()
    kept, dropped = Counter[str](), Counter[str]()
    with open(path, "rb") as f:
        items = _guarded(_items(chosen, f, provenance, result.skipped, processes, max_body),
                         path)
        if progress is not None:
            items = _counted(items, progress)
        first = next(items, None)  # a file not in the format fails before the output opens
        if first is None and result.skipped:
            raise safefiles.BadFile(f"{path}: holds no exchange to import "
                                    f"({result.skipped[0]})")
        with safefiles.atomic_path(out_path, append=append) as temporary, \
                recording.Writer(temporary) as w:
            waiting = _Interleave()
            keeping = False
            for item, process in _chain(first, items):
                if isinstance(item, ws.WebsocketMessage):
                    if keeping:
                        waiting.push(item)
                    continue
                keeping = scope.keeps(item, process)
                host = _host_of(item.request)
                if not keeping:
                    dropped[host] += 1
                    continue
                kept[host] += 1
                result.messages += _write_messages(w, waiting.before(item), redactor)
                seq = w.write(recording.to_record(item, redactor, classify.classify(item)))
                result.count += 1
                result.first_seq = result.first_seq or seq
                result.last_seq = seq
            result.messages += _write_messages(w, waiting.rest(), redactor)
    result.kept_by_host, result.dropped_by_host = dict(kept), dict(dropped)
    return result


def _write_messages(w: recording.Writer, messages: Iterable[ws.WebsocketMessage],
                    redactor: recording.Redactor) -> int:
    count = 0
    for message in messages:
        w.write(ws.to_record(message, redactor))
        count += 1
    return count


def _moment(exchange: model.Exchange) -> float | None:
    """When an exchange is written in a live recording: at its response (the end); a
    websocket handshake at its start, since its end is when the socket closed."""
    if exchange.status == 101 or exchange.end is None:
        return exchange.start
    return exchange.end


class _Interleave:
    """Puts websocket messages among the exchanges by time, as the live recorder does.

    SAZ and HAR keep a websocket's frames with its handshake, so a tap that came
    in the middle of a lobby's writes would land before all of them. A message
    waits here and is written before the first later exchange that completed
    after it came (`_moment`), so a recording of an import reads in the order
    things happened: the handle write, then the tap it caused, then the 412.
    Messages keep their order among themselves; one without a time goes at once.
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, ws.WebsocketMessage]] = []
        self.count = 0
        self.last = -math.inf

    def push(self, message: ws.WebsocketMessage) -> None:
        when = message.start if message.start is not None else self.last
        self.last = max(self.last, when)  # a connection's frames never go back in time
        self.count += 1
        heapq.heappush(self.heap, (when, self.count, message))

    def before(self, exchange: model.Exchange) -> Iterator[ws.WebsocketMessage]:
        """The messages that came before `exchange` was recorded, in order."""
        moment = _moment(exchange)
        while self.heap and (moment is None or self.heap[0][0] < moment):
            yield heapq.heappop(self.heap)[2]

    def rest(self) -> Iterator[ws.WebsocketMessage]:
        while self.heap:
            yield heapq.heappop(self.heap)[2]


def _counted(items: Iterable[Any], progress: Callable[[int], None]) -> Iterator[Any]:
    """The items, telling `progress` how many have gone by (after each one)."""
    for count, item in enumerate(items, 1):
        yield item
        progress(count)


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
        yield from rest
