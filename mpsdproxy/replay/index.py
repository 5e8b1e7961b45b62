"""Where each recorded exchange lives: one streaming pass, a few numbers per exchange.

Loading reads the recording files once, line by line, and keeps per exchange
only where its line starts (file, byte offset) and a few numbers in typed
arrays; a response is read back with a seek when it is served. So a recording
of 100,000 exchanges costs a few megabytes, not the exchanges themselves.

Every record is checked on the way (`recording.to_exchange`): one that no wire
could carry (CR/LF in a header, a status of 0 or 99999, CR/LF in a reason) is
an issue naming its file and line, as a line that is not JSON is.

The RTA websocket's server messages are kept as they are (they are small and few),
grouped by the handshake they followed (`rta_streams`), each with the exchange
recorded last before it in its file: what `replay.rta` serves them after.
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import IO
from typing import Any
from urllib.parse import urlsplit

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.recording import codec
from mpsdproxy.recording import messages
from mpsdproxy.replay.matching import CONDITION_HEADERS
from mpsdproxy.replay.matching import MatchKey
from mpsdproxy.replay.matching import MatchOptions
from mpsdproxy.replay.matching import recorded

__all__ = ["END", "Index", "ROUTES_PER_PARENT"]

#: "No entry": the end of a chain, or no session.
END = -1

#: Routes remembered per parent path, for near misses on a path the recording lacks.
ROUTES_PER_PARENT = 8

#: How a record names its response, as the Writer writes it (compact).
_RESPONSE_KEY = '"response":'
_DECODER = json.JSONDecoder()

_CONDITIONS = frozenset(h.lower() for h in CONDITION_HEADERS)


class Index:
    """Where each recorded exchange lives, grouped by match key.

    Per exchange it keeps a handful of numbers in typed arrays (file, line,
    offset, seq, duration, the next exchange with the same key, ...), never
    the record itself: `read` seeks back to the line when an answer is needed.
    Exchange numbers (`entry`) are positions in load order, stable across a
    rehash of the same files.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], options: MatchOptions) -> None:
        self.paths: tuple[str, ...] = tuple(os.fspath(p) for p in paths)
        self.options = options
        self.issues: list[recording.ReadIssue] = []
        #: ETags recorded requests sent as preconditions (some may predate the recording).
        self.etags: set[str] = set()
        # Typed arrays: a few bytes per exchange, where a list of ints costs ~36 each.
        self._file = array("H")
        self._line = array("I")
        self._offset = array("q")
        self._seq = array("q")
        self._duration = array("f")
        self._next = array("i")  # the next entry with the same match key, or END
        self._route_next = array("i")  # the next entry with the same route, or END
        self._session = array("i")  # the session whose document the answer carries, or END
        self._has_response = bytearray()  # 1 when the record has a top-level "response" key
        self._heads: dict[int, int] = {}
        #: (METHOD, authority, path) of every distinct recorded request shape.
        self.routes: list[tuple[str, str, str]] = []
        self._route_first: list[int] = []
        self._by_path: dict[str, list[int]] = {}
        self._by_parent: dict[str, list[int]] = {}
        #: (session key, canonical session path) per session that has a whole document.
        self.sessions: list[tuple[str, str]] = []
        #: The entry of each session's last whole document in the recording.
        self.session_last: list[int] = []
        self._handles: dict[int, IO[bytes]] = {}
        #: Per recorded RTA handshake (its entry): the server's messages on that websocket,
        #: in order, each with the entry of the exchange recorded last before it (END: none).
        self.rta_streams: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        #: (session key, changeNumber) -> the first entry whose answer carries the session
        #: at that changeNumber: the exchange a tap for it is about.
        self.changes: dict[tuple[str, int], int] = {}

    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]],
             options: MatchOptions | None = None) -> Index:
        """One streaming pass over `paths`. Unreadable or impossible lines land in `issues`.

        Raises OSError when a file cannot be opened.
        """
        index = cls(paths, options or MatchOptions())
        index._build()
        return index

    def __len__(self) -> int:
        return len(self._offset)

    # -- building

    def _build(self) -> None:
        builder = _Builder(self)
        for file_no, path in enumerate(self.paths):
            for line, offset, item in _scan(path):
                if isinstance(item, recording.ReadIssue):
                    self.issues.append(item)
                    continue
                if messages.is_message(item):
                    builder.add_message(file_no, item)
                    continue
                builder.add(file_no, line, offset, item)

    # -- per-entry facts

    def first(self, digest: int) -> int | None:
        """The first entry with this match key, or None when the recording has none."""
        return self._heads.get(digest)

    def next_same(self, entry: int) -> int:
        """The next entry with the same match key, or END."""
        return self._next[entry]

    def seq(self, entry: int) -> int:
        return self._seq[entry]

    def file(self, entry: int) -> str:
        return self.paths[self._file[entry]]

    def where(self, entry: int) -> str:
        """`file:line` of an entry, for messages."""
        return f"{self.file(entry)}:{self._line[entry]}"

    def duration_ms(self, entry: int) -> float | None:
        value = self._duration[entry]
        return None if math.isnan(value) else value

    def session_of(self, entry: int) -> int:
        """The session whose whole document this entry's response carries, or END."""
        return self._session[entry]

    def similar_routes(self, path: str) -> list[int]:
        """Routes worth comparing with a request for `path`: the same path, else its
        siblings, else (rarely) every route."""
        found = self._by_path.get(path) or self._by_parent.get(_parent(path))
        return list(found) if found else list(range(len(self.routes)))

    def route_entries(self, route: int, limit: int) -> Iterator[int]:
        """Entries of one route in recorded order, at most `limit` of them."""
        entry = self._route_first[route]
        while entry != END and limit > 0:
            yield entry
            entry = self._route_next[entry]
            limit -= 1

    # -- reading back

    def read(self, entry: int) -> dict[str, Any]:
        """The full record of an entry, read back from its file.

        Raises RecordError when the line is no longer the one indexed (the
        file was rewritten while replaying).
        """
        return self._parse(entry, model.from_bytes(self._read_line(entry)))

    def exchange(self, entry: int) -> model.Exchange:
        """The Exchange of an entry's record (checked at load; RecordError as `read`)."""
        record = self.read(entry)
        try:
            return recording.to_exchange(record)
        except (ValueError, TypeError, KeyError) as e:
            raise recording.RecordError(self.file(entry), self._line[entry], str(e)) from e

    def response(self, entry: int) -> dict[str, Any] | None:
        """The response of an entry's record (`read(entry).get("response")`), parsing
        only that part of the line when it can tell which part that is: the line starts
        with the entry's seq, as the Writer puts it, and names "response" only once (so
        that one is the record's own key). Raises RecordError as `read` does.
        """
        text = model.from_bytes(self._read_line(entry))
        if self._has_response[entry] and text.startswith(f'{{"seq":{self._seq[entry]},') \
                and text.count(_RESPONSE_KEY) == 1:
            try:
                value, _ = _DECODER.raw_decode(text, text.index(_RESPONSE_KEY)
                                               + len(_RESPONSE_KEY))
            except (ValueError, RecursionError):
                pass  # e.g. space after the colon: the whole line tells
            else:
                if value is None or isinstance(value, dict):
                    return value
        return self._parse(entry, text).get("response")

    def _read_line(self, entry: int) -> bytes:
        handle = self._handle(self._file[entry])
        handle.seek(self._offset[entry])
        return handle.readline()

    def _parse(self, entry: int, text: str) -> dict[str, Any]:
        try:
            record = json.loads(text)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict) or record.get("seq") != self._seq[entry]:
            raise recording.RecordError(
                self.file(entry), self._line[entry],
                f"no longer holds record #{self._seq[entry]}: the file changed after loading",
            )
        return record

    def _handle(self, file_no: int) -> IO[bytes]:
        handle = self._handles.get(file_no)
        if handle is None or handle.closed:
            handle = self._handles[file_no] = open(self.paths[file_no], "rb")  # noqa: SIM115
        return handle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


class _Builder:
    """The state of one loading pass: the tails of the chains being built."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.key_tails: dict[int, int] = {}
        self.routes: dict[tuple[str, str, str], int] = {}
        self.route_tails: list[int] = []
        self.sessions: dict[str, int] = {}
        #: Per file: the last exchange entry so far; per (file, client): its open websocket.
        self.last_exchange: dict[int, int] = {}
        self.websockets: dict[tuple[int, str | None], int] = {}

    def add_message(self, file_no: int, record: dict[str, Any]) -> None:
        """Keep a server message of an RTA websocket with its handshake (a message whose
        handshake the file does not hold, as a capture started mid-connection, is left)."""
        if record.get("direction") != "server" or messages.check_message(record) \
                or not messages.is_rta_url(record["url"]):
            return
        client = record.get("client") if isinstance(record.get("client"), str) else None
        handshake = self.websockets.get((file_no, client))
        if handshake is not None:
            after = self.last_exchange.get(file_no, END)
            self.index.rta_streams[handshake].append((after, record))

    def _note_websocket(self, file_no: int, entry: int, record: dict[str, Any]) -> None:
        response = record.get("response")
        if not isinstance(response, dict) or response.get("status") != 101 \
                or not messages.is_rta_url(str(record["request"].get("url", ""))):
            return
        client = record.get("client") if isinstance(record.get("client"), str) else None
        self.websockets[(file_no, client)] = entry
        self.index.rta_streams[entry] = []

    def add(self, file_no: int, line: int, offset: int, record: dict[str, Any]) -> None:
        index = self.index
        entry = len(index)
        index._file.append(file_no)
        index._line.append(line)
        index._offset.append(offset)
        index._seq.append(record["seq"])
        duration = codec.duration_of(record.get("duration_ms"))
        index._duration.append(math.nan if duration is None else duration)
        if math.isinf(index._duration[-1]):  # beyond what the array's floats hold: unknown
            index._duration[-1] = math.nan
        index._next.append(END)
        index._route_next.append(END)
        index._session.append(END)
        index._has_response.append("response" in record)
        shape = recorded(record["request"], index.options)
        self._note_etags(record["request"].get("headers") or ())
        self._chain_key(entry, shape.key)
        self._chain_route(entry, shape.route)
        self._note_session(entry, record)
        self._note_websocket(file_no, entry, record)
        self.last_exchange[file_no] = entry

    def _note_etags(self, headers: Iterable[Sequence[str]]) -> None:
        """Keep the ETags the recorded request sent as preconditions."""
        for name, value in headers:
            if name.lower() in _CONDITIONS and value.strip() not in ("", "*"):
                self.index.etags.add(value.strip())

    def _chain_key(self, entry: int, key: MatchKey) -> None:
        index = self.index
        digest = key.digest()
        last = self.key_tails.get(digest)
        if last is None:
            index._heads[digest] = entry
        else:
            index._next[last] = entry
        self.key_tails[digest] = entry

    def _chain_route(self, entry: int, route: tuple[str, str, str]) -> None:
        index = self.index
        number = self.routes.get(route)
        if number is None:
            number = self.routes[route] = len(index.routes)
            index.routes.append(route)
            index._route_first.append(entry)
            self.route_tails.append(entry)
            index._by_path.setdefault(route[2], []).append(number)
            siblings = index._by_parent.setdefault(_parent(route[2]), [])
            if len(siblings) < ROUTES_PER_PARENT:
                siblings.append(number)
        else:
            index._route_next[self.route_tails[number]] = entry
            self.route_tails[number] = entry

    def _note_session(self, entry: int, record: dict[str, Any]) -> None:
        if not _carries_whole_session(record):
            return
        resource = _resource(record)
        key, path = resource.key, resource.session_path
        if key is None or path is None:
            return
        index = self.index
        number = self.sessions.get(key)
        if number is None:
            number = self.sessions[key] = len(index.sessions)
            index.sessions.append((key, path))
            index.session_last.append(entry)
        else:
            index.session_last[number] = entry
        index._session[entry] = number
        change = record["response"]["body"]["json"].get("changeNumber")
        if isinstance(change, int) and not isinstance(change, bool):
            index.changes.setdefault((key, change), entry)


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


_Item = dict[str, Any] | recording.ReadIssue


def _scan(path: str) -> Iterator[tuple[int, int, _Item]]:
    """(line number, byte offset, record or ReadIssue) per record line.

    The same checks and messages as `recording.iter_records`, plus the offset each
    line starts at and the model's own check of what a wire can carry.
    """
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            item = _parse_line(path, number, raw)
            if item is not None:
                yield number, start, item


def _parse_line(path: str, number: int, raw: bytes) -> _Item | None:
    """One line's record (a websocket message's unchecked: `Index` keeps only RTA
    server messages, checked there), a ReadIssue, or None for the header line."""
    try:
        item = json.loads(model.from_bytes(raw))
    except (ValueError, RecursionError) as e:
        if not raw.endswith(b"\n"):
            return recording.ReadIssue(path, number, "truncated last line (writer stopped "
                                       "mid-record)", truncated=True)
        return recording.ReadIssue(path, number, f"not valid JSON: {e}")
    if not isinstance(item, dict):
        return recording.ReadIssue(
            path, number, f"a record should be a JSON object, not {type(item).__name__}")
    if codec.is_header_line(item):
        version = item.get("version")
        if isinstance(version, int) and version <= codec.FORMAT_VERSION:
            return None
        return recording.ReadIssue(path, number, (
            f"recording format version {version!r}: this mpsdproxy reads versions up to "
            f"{codec.FORMAT_VERSION}"))
    if messages.is_message(item):
        return item
    problem = recording.check_outline(item)
    if problem:
        return recording.ReadIssue(path, number, problem)
    problem = _unsendable(item)
    if problem:
        return recording.ReadIssue(path, number, problem)
    return item


def _unsendable(record: dict[str, Any]) -> str | None:
    """Why no wire could carry the record's exchange (CR/LF in a header or reason, a
    status outside 100-599, ...), as the model says; None when one could.

    Bodies and times cannot make an exchange unsendable, and decoding them is most
    of the cost of `to_exchange`: the check leaves them out.
    """
    request, response = record["request"], record.get("response")
    outline = {"request": {**request, "body": None},
               "response": None if response is None else {**response, "body": None}}
    try:
        recording.to_exchange(outline)
    except (ValueError, TypeError, KeyError) as e:  # model.ModelError is a ValueError
        return str(e)
    return None


def _resource(record: dict[str, Any]) -> resources.Resource:
    data = record.get("resource")
    if isinstance(data, dict):
        return resources.Resource.from_dict(data)
    return resources.parse(urlsplit(record["request"]["url"]).path)


def _carries_whole_session(record: dict[str, Any]) -> bool:
    """Whether the response is a row that returns the session, with the whole document."""
    response = record.get("response")
    if not response:
        return False
    entry_id = (record.get("classification") or {}).get("id")
    entry = catalog.BY_ID.get(entry_id) if isinstance(entry_id, str) else None
    if entry is None or not entry.returns_session:
        return False
    document = (response.get("body") or {}).get("json")
    return isinstance(document, dict) and catalog.SESSION_DOCUMENT_KEYS <= document.keys()
