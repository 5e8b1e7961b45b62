"""Server replay: answer requests from a recording, in recorded order, and explain misses.

Loading is one streaming pass over the recording files into an `Index` that
keeps, per exchange, only where its line starts (file, byte offset) and a few
numbers; a response is read back with a seek when it is served. So a recording
of 100,000 exchanges costs a few megabytes, not the flows themselves. The answers
served last stay decoded (a bounded cache), so one served again is not read again.

Matching compares method, host, path (case-insensitive), query and the body
(as JSON when it is JSON: key order and whitespace do not matter), plus the
precondition headers. Volatile parts are left out: nonce-like query
parameters, correlation ids and timestamps in the body, the title's per-run
RTA connection and subscription ids, and the credential headers (Authorization
and Signature are redacted in recordings and never compared).

Identical requests get the recorded answers in recorded order; what happens
past the last one, and to requests the recording never saw, is a policy
(`Player.exhausted`, `Player.unmatched`). A miss names the closest recorded
request and how it differs, so a tester sees why a replay drifted.

Conditional requests: an If-Match or If-None-Match carrying an ETag the replay
handed out (in a recorded answer, or from the stand-in that takes over
unmatched requests) matches the recorded request whatever ETag that one
carried. Answers are the recorded bytes, so ETag and changeNumber follow the
recording and a replay never makes up a 412.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import json
import math
import os
from array import array
from collections.abc import Container
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import Any
from typing import Generic
from typing import NamedTuple
from typing import Protocol
from typing import TypeVar
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import recording
from mpsdproxy import resources

__all__ = [
    "DEFAULT_IGNORE_PARAMS",
    "DEFAULT_IGNORE_PAYLOAD_PARAMS",
    "EXHAUSTED_CHOICES",
    "UNMATCHED_CHOICES",
    "PACE_CHOICES",
    "KeyPattern",
    "parse_key_pattern",
    "parse_choice",
    "parse_header_name",
    "MatchOptions",
    "Request",
    "MatchKey",
    "match_key",
    "Difference",
    "compare",
    "differences",
    "Index",
    "NearMiss",
    "Serve",
    "Pass",
    "Decision",
    "Player",
    "reply_from_record",
    "reply_from_response",
    "error_reply",
]

EXHAUSTED_CHOICES: tuple[str, ...] = ("repeat-last", "error", "forward")
UNMATCHED_CHOICES: tuple[str, ...] = ("forward", "emulate", "error")
PACE_CHOICES: tuple[str, ...] = ("fast", "recorded")

#: Cache busters and nonces: they differ on every run of a title by design.
DEFAULT_IGNORE_PARAMS: tuple[str, ...] = ("_", "cb", "nonce", "rnd", "timestamp", "ts")

#: Body keys that differ between two runs of the same title flow: correlation
#: ids and timestamps, and the per-run RTA connection, subscription and device
#: address a title writes into its member (protocol notes §3.3).
DEFAULT_IGNORE_PAYLOAD_PARAMS: tuple[str, ...] = (
    "correlationId",
    "timestamp",
    "members.*.properties.system.connection",
    "members.*.properties.system.subscription.id",
    "members.*.properties.system.secureDeviceAddress",
)

#: Redacted in every recording (protocol notes §2.3), so never a match criterion.
NEVER_MATCHED: frozenset[str] = frozenset({"authorization", "signature"})

#: Precondition headers: always compared, with replay ETags treated as recorded ones.
CONDITION_HEADERS: tuple[str, ...] = ("If-Match", "If-None-Match")

#: What a precondition value becomes when it is an ETag the replay knows.
REPLAY_ETAG = "<an ETag of the replay>"

#: Connection-level headers (RFC 9110 §7.6.1): they described the recorded
#: connection, not the answer, and must not be replayed onto another one.
HOP_BY_HOP: frozenset[str] = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: Recorded response headers a replayed answer never carries as they are.
_DROPPED: frozenset[str] = HOP_BY_HOP | {"content-length"}

#: Not an MPSD answer but the proxy's own: "the replay had nothing for this".
ERROR_STATUS = 502
ERROR_REASON = "Bad Gateway"

_DEFAULT_PORTS = {"http": 80, "https": 443}
_MISSING: Any = object()


# -- matching options ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPattern:
    """A JSON body key to leave out of matching.

    One segment (`correlationId`) is that key at any depth; a dotted path
    (`members.*.properties.system.connection`) is anchored at the document
    root, `*` standing for any one key or list index.
    """

    parts: tuple[str, ...]

    @property
    def anywhere(self) -> bool:
        return len(self.parts) == 1

    def __str__(self) -> str:
        return ".".join(self.parts)


def parse_key_pattern(text: str) -> KeyPattern:
    """`name` or `dotted.path.with.*` -> KeyPattern; ValueError when it names nothing."""
    text = text.strip()
    if not text:
        raise ValueError("should be a JSON key or a dotted path of keys, not empty")
    parts = tuple(text.split("."))
    if any(not p for p in parts):
        raise ValueError(f"should not have an empty segment, as {text!r} does")
    if parts == ("*",):
        raise ValueError("a lone '*' would ignore every key; name a key or a path")
    return KeyPattern(parts)


def parse_choice(value: str, choices: Sequence[str]) -> str:
    """`value` when it is one of `choices`; ValueError listing them otherwise."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{value!r} is not a valid choice. Valid choices are: {valid}.")
    return value


def parse_header_name(text: str) -> str:
    """A request header to match on, lower-cased; ValueError for the redacted auth headers."""
    name = text.strip().lower()
    if not name or any(c.isspace() or c == ":" for c in name):
        raise ValueError(f"should be a header name, not {text!r}")
    if name in NEVER_MATCHED:
        raise ValueError(
            f"{text.strip()} is redacted in every recording and is never matched on"
        )
    return name


@dataclass(frozen=True)
class MatchOptions:
    """What two requests must share to be the same request (see the module docstring)."""

    ignore_params: frozenset[str] = frozenset(DEFAULT_IGNORE_PARAMS)
    ignore_payload: tuple[KeyPattern, ...] = tuple(
        parse_key_pattern(p) for p in DEFAULT_IGNORE_PAYLOAD_PARAMS
    )
    use_headers: tuple[str, ...] = ()
    ignore_host: bool = False

    def __post_init__(self) -> None:
        # Parameter names compare without case; preconditions are always compared already.
        object.__setattr__(self, "ignore_params", frozenset(p.lower() for p in self.ignore_params))
        names = tuple(h.lower() for h in self.use_headers if h.lower() not in _CONDITIONS_LOWER)
        object.__setattr__(self, "use_headers", names)

    @functools.cached_property
    def wanted_headers(self) -> frozenset[str]:
        """Every request header a match key reads, lower-cased."""
        return frozenset(self.use_headers) | frozenset(_CONDITIONS_LOWER)

    @functools.cached_property
    def strip(self) -> _Stripper:
        """Leaves the ignored keys out of a parsed JSON body."""
        return _Stripper(self.ignore_payload)


_CONDITIONS_LOWER = tuple(h.lower() for h in CONDITION_HEADERS)


#: Marks the end of a pattern in a _Stripper trie (patterns have no empty segments).
_LEAF = ""

_Trie = dict[str, "_Trie"]


def _trie(paths: Iterable[tuple[str, ...]]) -> _Trie:
    root: _Trie = {}
    for parts in paths:
        node = root
        for part in parts:
            node = node.setdefault(part, {})
        node[_LEAF] = {}
    return root


def _merge(a: _Trie, b: _Trie) -> _Trie:
    out = dict(a)
    for key, node in b.items():
        out[key] = _merge(out[key], node) if key in out else node
    return out


class _Stripper:
    """Leaves ignored keys out of a JSON body, cheaply.

    Rooted patterns are a trie followed down their own paths only, copying
    just the containers they change; keys ignored at any depth are looked for
    in the canonical text first, and the whole document is walked only when
    one is there.
    """

    def __init__(self, patterns: Iterable[KeyPattern]) -> None:
        patterns = tuple(patterns)
        self.names = frozenset(p.parts[0] for p in patterns if p.anywhere)
        self.rooted = _trie(p.parts for p in patterns if not p.anywhere)
        #: How each name shows in canonical JSON text.
        self.markers = tuple(_canonical(n) + ":" for n in self.names)

    def __call__(self, value: Any) -> Any:
        """`value` without the ignored keys."""
        value = self._rooted(value, self.rooted)
        return self._named(value) if self.names else value

    def canonical(self, value: Any) -> str:
        """The canonical JSON text of `value` without the ignored keys."""
        value = self._rooted(value, self.rooted)
        text = _canonical(value)
        if any(m in text for m in self.markers):
            text = _canonical(self._named(value))
        return text

    def _named(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._named(v) for k, v in value.items() if k not in self.names}
        if isinstance(value, list):
            return [self._named(v) for v in value]
        return value

    def _rooted(self, value: Any, node: _Trie) -> Any:
        if not node:
            return value
        if isinstance(value, dict):
            return self._rooted_dict(value, node)
        if isinstance(value, list):
            return self._rooted_list(value, node)
        return value

    def _rooted_list(self, value: list[Any], node: _Trie) -> list[Any]:
        out: list[Any] = []
        changed = False
        for i, child in enumerate(value):
            below = _below(node, str(i))
            if below is not None and _LEAF in below:
                changed = True  # the element itself is ignored
                continue
            new = self._rooted(child, below) if below else child
            changed = changed or new is not child
            out.append(new)
        return out if changed else value

    def _rooted_dict(self, value: dict[str, Any], node: _Trie) -> dict[str, Any]:
        keys = list(value) if "*" in node else [k for k in node if k in value]
        drop: set[str] = set()
        changed: dict[str, Any] = {}
        for key in keys:
            below = _below(node, key)
            if below is None:
                continue
            if _LEAF in below:
                drop.add(key)
                continue
            new = self._rooted(value[key], below)
            if new is not value[key]:
                changed[key] = new
        if not drop and not changed:
            return value
        return {k: changed.get(k, v) for k, v in value.items() if k not in drop}


def _below(node: _Trie, key: str) -> _Trie | None:
    """The trie one level below `key`: its own branch and the wildcard's, merged."""
    own = node.get(key) if key != _LEAF else None  # an empty JSON key is no pattern's end
    wild = node.get("*")
    if own is None or wild is None:
        return own if wild is None else wild
    return _merge(own, wild)


# -- requests and their match keys -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """A request as matching sees it: from a live flow or from a recorded line."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    #: The body already parsed (recordings keep JSON bodies as JSON), or _MISSING.
    document: Any = field(default=_MISSING, compare=False, repr=False)

    @classmethod
    def from_record(cls, part: dict[str, Any]) -> Request:
        """The request half of a record (`record["request"]`)."""
        headers = tuple((str(k), str(v)) for k, v in part.get("headers") or ())
        body = part.get("body")
        if body and "json" in body:
            return cls(part["method"], part["url"], headers, b"", body["json"])
        return cls(part["method"], part["url"], headers, recording.decode_body(body))

    def header(self, name: str) -> str | None:
        return recording.header(self.headers, name)


class MatchKey(NamedTuple):
    """The normalised parts of a request that matching compares."""

    method: str
    authority: str | None  # None when hosts are ignored
    path: str
    query: tuple[tuple[str, str], ...]
    body: str | bytes | None  # canonical JSON text, raw bytes, or None for no body
    headers: tuple[tuple[str, str], ...]
    conditions: tuple[tuple[str, str], ...]

    def digest(self) -> int:
        """A 64-bit digest, stable across processes: what the index stores per exchange."""
        data = tuple.__repr__(self).encode("utf-8", "surrogateescape")  # as repr(tuple(self))
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _authority(scheme: str, host: str | None, port: int | None) -> str:
    host = (host or "").lower()
    if port is None or port == _DEFAULT_PORTS.get(scheme.lower()):
        return host
    return f"{host}:{port}"


@functools.lru_cache(maxsize=4096)
def _split(url: str) -> tuple[str, str, str]:
    """url -> (authority, lower-cased path, raw query). Never raises.

    Cached: a recording asks for the same few session URLs over and over.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "", url.split("?", 1)[0].lower(), url.partition("?")[2]
    return _authority(parts.scheme, parts.hostname, port), (parts.path or "/").lower(), parts.query


def route_of(method: str, url: str) -> tuple[str, str, str]:
    """(METHOD, authority, path): the coarse shape near misses are searched by."""
    authority, path, _ = _split(url)
    return method.upper(), authority, path


def _json_body(request: Request) -> Any:
    """The parsed JSON body, or _MISSING when the body is not JSON."""
    if request.document is not _MISSING:
        return request.document
    raw = request.body.lstrip()
    if not raw or raw[:1] not in b"{[":
        return _MISSING
    try:
        return json.loads(request.body)
    except (ValueError, RecursionError):
        return _MISSING


#: Canonical JSON (sorted keys, compact, UTF-8 as is): built once, as `json.dumps` with
#: options would build an encoder on every call. The same text `json.dumps` gives.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)



def _canonical(value: Any) -> str:
    return _CANONICAL.encode(value)


def _condition(value: str, etags: Container[str] | None) -> str:
    value = value.strip()
    if value == "*":
        return "*"
    if etags is None or value in etags:
        return REPLAY_ETAG
    return value


def match_key(request: Request, options: MatchOptions,
              etags: Container[str] | None = None) -> MatchKey:
    """The match key of a request.

    `etags` is None for a recorded request (its precondition ETags are by
    definition the recorded ones); for a live request it holds every ETag the
    replay knows, and a precondition naming one of them counts as the recorded one.
    """
    authority, path, query = _split(request.url)
    pairs: tuple[tuple[str, str], ...] = ()
    if query:
        ignored = options.ignore_params
        pairs = tuple(sorted(
            (k, v) for k, v in parse_qsl(query, keep_blank_values=True)
            if k.lower() not in ignored
        ))
    body: str | bytes | None = None
    if request.body or request.document is not _MISSING:
        document = _json_body(request)
        if document is not _MISSING:
            body = options.strip.canonical(document)
        else:
            body = request.body or None
    # One pass over the headers: the first value of each compared one (as `header` finds).
    wanted = options.wanted_headers
    found: dict[str, str] = {}
    for pair in request.headers:
        low = str(pair[0]).lower()
        if low in wanted and low not in found:
            found[low] = str(pair[1])
    headers: tuple[tuple[str, str], ...] = ()
    conditions: tuple[tuple[str, str], ...] = ()
    if found:
        headers = tuple(
            (name, recording.redact_value(found[name]))
            for name in options.use_headers if name in found
        )
        conditions = tuple(
            (name, _condition(found[low], etags))
            for name, low in zip(CONDITION_HEADERS, _CONDITIONS_LOWER, strict=True)
            if low in found
        )
    return MatchKey(request.method.upper(), None if options.ignore_host else authority,
                    path, pairs, body, headers, conditions)


# -- how two keys differ ----------------------------------------------------------------------


class Difference(NamedTuple):
    """One criterion on which two requests part ways."""

    phrase: str
    weight: int  # how far apart: a near miss is the candidate with the least in total


#: A different method or path is further away than a differing body key.
_WEIGHTS = {"method": 4, "authority": 2, "path": 4}


def compare(live: MatchKey, recorded: MatchKey, limit: int = 4) -> list[Difference]:
    """What keeps `live` from matching `recorded`, one Difference per criterion."""
    out: list[Difference] = []
    for name, weight in _WEIGHTS.items():
        here, there = getattr(live, name), getattr(recorded, name)
        if here != there:
            label = "host" if name == "authority" else name
            out.append(Difference(f"{label} ({here} here, {there} recorded)", weight))
    if live.query != recorded.query:
        notes = _pairs_notes(live.query, recorded.query)
        out.append(Difference(f"query ({_clip(notes, limit)})", len(notes)))
    if live.body != recorded.body:
        notes = _body_notes(live.body, recorded.body)
        out.append(Difference(f"body ({_clip(notes, limit)})", len(notes)))
    if live.headers != recorded.headers:
        names = sorted({k for k, _ in set(live.headers) ^ set(recorded.headers)})
        out.extend(Difference(f"header {n}", 1) for n in names)
    out.extend(Difference(p, 1) for p in _conditions_diff(dict(live.conditions),
                                                          dict(recorded.conditions)))
    return out


def differences(live: MatchKey, recorded: MatchKey, limit: int = 4) -> list[str]:
    """What keeps `live` from matching `recorded`, one short phrase per criterion."""
    return [d.phrase for d in compare(live, recorded, limit)]


def _pairs_notes(here: Sequence[tuple[str, str]], there: Sequence[tuple[str, str]]) -> list[str]:
    mine, theirs = dict(here), dict(there)
    notes = []
    for k in sorted(mine.keys() | theirs.keys()):
        if k not in theirs:
            notes.append(f"{k} only here")
        elif k not in mine:
            notes.append(f"{k} only recorded")
        elif mine[k] != theirs[k]:
            notes.append(f"{k}={mine[k]} here, {k}={theirs[k]} recorded")
    return notes or ["repeated parameters differ"]


def _clip(notes: list[str], limit: int) -> str:
    more = len(notes) - limit
    return "; ".join(notes[:limit]) + (f"; and {more} more" if more > 0 else "")


def _body_notes(here: str | bytes | None, there: str | bytes | None) -> list[str]:
    if here is None or there is None:
        return ["none here" if here is None else "none recorded"]
    if isinstance(here, str) and isinstance(there, str):
        notes: list[str] = []
        _json_diff(json.loads(here), json.loads(there), "", notes)
        return notes or ["values differ"]
    kind_here = "JSON" if isinstance(here, str) else f"{len(here)} bytes, not JSON"
    kind_there = "JSON" if isinstance(there, str) else f"{len(there)} bytes, not JSON"
    return [f"{kind_here} here, {kind_there} recorded"]


def _json_diff(here: Any, there: Any, path: str, notes: list[str]) -> None:
    """Dotted paths where two JSON values part ways (at most a few dozen collected)."""
    if len(notes) > 32:
        return
    if isinstance(here, dict) and isinstance(there, dict):
        for key in sorted(here.keys() | there.keys()):
            child = f"{path}.{key}" if path else key
            if key not in there:
                notes.append(f"{child} only here")
            elif key not in here:
                notes.append(f"{child} only recorded")
            else:
                _json_diff(here[key], there[key], child, notes)
    elif isinstance(here, list) and isinstance(there, list) and len(here) == len(there):
        for i, (a, b) in enumerate(zip(here, there, strict=True)):
            _json_diff(a, b, f"{path}.{i}" if path else str(i), notes)
    elif here != there:
        notes.append(f"{path or 'the document'}: {_short(here)} here, {_short(there)} recorded")


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def _conditions_diff(here: dict[str, str], there: dict[str, str]) -> list[str]:
    out = []
    for name in CONDITION_HEADERS:
        mine, theirs = here.get(name), there.get(name)
        if mine != theirs:
            out.append(f"{name} ({_describe_condition(mine)} here, "
                       f"{_describe_condition(theirs)} recorded)")
    return out


def _describe_condition(value: str | None) -> str:
    if value is None:
        return "none"
    if value == REPLAY_ETAG:
        return "an ETag of the replay"
    if value == "*":
        return "*"
    return f"{value}, an ETag the replay never handed out"


# -- the index --------------------------------------------------------------------------------


_END = -1


class Index:
    """Where each recorded exchange lives, grouped by match key.

    Per exchange it keeps a handful of numbers in typed arrays (file, line,
    offset, seq, duration, the next exchange with the same key, ...), never
    the record itself: `read` seeks back to the line when an answer is needed.
    Exchange numbers (`entry`) are positions in load order, stable across a
    rehash of the same files.
    """

    def __init__(self, paths: Sequence[str], options: MatchOptions) -> None:
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
        self._next = array("i")  # the next entry with the same match key, or -1
        self._route_next = array("i")  # the next entry with the same route, or -1
        self._session = array("i")  # the session whose document the answer carries, or -1
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

    @classmethod
    def load(cls, paths: Sequence[str], options: MatchOptions | None = None) -> Index:
        """One streaming pass over `paths`. Unreadable lines land in `issues`.

        Raises OSError when a file cannot be opened.
        """
        index = cls(paths, options or MatchOptions())
        index._build()
        return index

    def __len__(self) -> int:
        return len(self._offset)

    def _build(self) -> None:
        heads_tail: dict[int, int] = {}
        routes: dict[tuple[str, str, str], int] = {}
        route_tail: list[int] = []
        sessions: dict[str, int] = {}
        for file_no, path in enumerate(self.paths):
            for line, offset, item in _scan(path):
                if isinstance(item, recording.ReadIssue):
                    self.issues.append(item)
                    continue
                entry = len(self._offset)
                self._append(file_no, line, offset, item)
                self._chain_key(entry, item, heads_tail)
                self._chain_route(entry, item, routes, route_tail)
                self._note_session(entry, item, sessions)

    def _append(self, file_no: int, line: int, offset: int, record: dict[str, Any]) -> None:
        self._file.append(file_no)
        self._line.append(line)
        self._offset.append(offset)
        self._seq.append(record["seq"])
        duration = record.get("duration_ms")
        self._duration.append(float(duration) if isinstance(duration, int | float) else math.nan)
        self._next.append(_END)
        self._route_next.append(_END)
        self._session.append(_END)
        self._has_response.append("response" in record)

    def _chain_key(self, entry: int, record: dict[str, Any], tails: dict[int, int]) -> None:
        request = Request.from_record(record["request"])
        for name in CONDITION_HEADERS:
            value = request.header(name)
            if value and value.strip() != "*":
                self.etags.add(value.strip())
        digest = match_key(request, self.options).digest()
        last = tails.get(digest)
        if last is None:
            self._heads[digest] = entry
        else:
            self._next[last] = entry
        tails[digest] = entry

    def _chain_route(self, entry: int, record: dict[str, Any],
                     routes: dict[tuple[str, str, str], int], tails: list[int]) -> None:
        route = route_of(record["request"]["method"], record["request"]["url"])
        number = routes.get(route)
        if number is None:
            number = routes[route] = len(self.routes)
            self.routes.append(route)
            self._route_first.append(entry)
            tails.append(entry)
            self._by_path.setdefault(route[2], []).append(number)
            siblings = self._by_parent.setdefault(_parent(route[2]), [])
            if len(siblings) < ROUTES_PER_PARENT:
                siblings.append(number)
        else:
            self._route_next[tails[number]] = entry
            tails[number] = entry

    def _note_session(self, entry: int, record: dict[str, Any], sessions: dict[str, int]) -> None:
        if not record.get("response") or not _carries_whole_session(record):
            return
        resource = _resource(record)
        key, path = resource.key, resource.session_path
        if key is None or path is None:
            return
        number = sessions.get(key)
        if number is None:
            number = sessions[key] = len(self.sessions)
            self.sessions.append((key, path))
            self.session_last.append(entry)
        else:
            self.session_last[number] = entry
        self._session[entry] = number

    # -- per-entry facts

    def first(self, digest: int) -> int | None:
        """The first entry with this match key, or None when the recording has none."""
        return self._heads.get(digest)

    def next_same(self, entry: int) -> int:
        """The next entry with the same match key, or -1."""
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
        """The session whose whole document this entry's response carries, or -1."""
        return self._session[entry]

    def similar_routes(self, path: str) -> list[int]:
        """Routes worth comparing with a request for `path`: the same path, else its
        siblings, else (rarely) every route."""
        found = self._by_path.get(path) or self._by_parent.get(_parent(path))
        return list(found) if found else list(range(len(self.routes)))

    def route_entries(self, route: int, limit: int) -> Iterator[int]:
        """Entries of one route in recorded order, at most `limit` of them."""
        entry = self._route_first[route]
        while entry != _END and limit > 0:
            yield entry
            entry = self._route_next[entry]
            limit -= 1

    def read(self, entry: int) -> dict[str, Any]:
        """The full record of an entry, read back from its file.

        Raises RecordError when the line is no longer the one indexed (the
        file was rewritten while replaying).
        """
        return self._parse(entry, self._read_line(entry).decode("utf-8", "surrogateescape"))

    def response(self, entry: int) -> dict[str, Any] | None:
        """The response of an entry's record (`read(entry).get("response")`), parsing
        only that part of the line when it can tell which part that is: the line starts
        with the entry's seq, as the Writer puts it, and names "response" only once (so
        that one is the record's own key). Raises RecordError as `read` does.
        """
        text = self._read_line(entry).decode("utf-8", "surrogateescape")
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
        except ValueError:
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


#: How a record names its response, as the Writer writes it (compact).
_RESPONSE_KEY = '"response":'
_DECODER = json.JSONDecoder()

#: Routes remembered per parent path, for near misses on a path the recording lacks.
ROUTES_PER_PARENT = 8


def _parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


def _scan(path: str) -> Iterator[tuple[int, int, dict[str, Any] | recording.ReadIssue]]:
    """(line number, byte offset, record or ReadIssue) per non-blank line.

    The same checks and messages as `recording.iter_records`, plus the offset
    each line starts at.
    """
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            yield number, start, _parse_line(path, number, raw)


def _parse_line(path: str, number: int, raw: bytes) -> dict[str, Any] | recording.ReadIssue:
    try:
        item = json.loads(raw.decode("utf-8", "surrogateescape"))
    except ValueError as e:
        if not raw.endswith(b"\n"):
            return recording.ReadIssue(path, number, "truncated last line (writer stopped "
                                       "mid-record)", truncated=True)
        return recording.ReadIssue(path, number, f"not valid JSON: {e}")
    if not isinstance(item, dict):
        return recording.ReadIssue(
            path, number, f"a record should be a JSON object, not {type(item).__name__}")
    problem = recording.check_outline(item)
    if problem:
        return recording.ReadIssue(path, number, problem)
    return item


def _header(pairs: Iterable[Sequence[str]] | None, name: str) -> str | None:
    low = name.lower()
    for pair in pairs or ():
        if len(pair) == 2 and str(pair[0]).lower() == low:
            return str(pair[1])
    return None


#: resources.parse, cached: a recording names the same few sessions over and over.
_parse_resource = functools.lru_cache(maxsize=4096)(resources.parse)


def _resource(record: dict[str, Any]) -> resources.Resource:
    data = record.get("resource")
    if isinstance(data, dict):
        return resources.Resource.from_dict(data)
    return _parse_resource(record["request"]["url"])


def _carries_whole_session(record: dict[str, Any]) -> bool:
    """Whether the response is a row that returns the session, with the whole document."""
    entry_id = (record.get("classification") or {}).get("id")
    entry = catalog.BY_ID.get(entry_id) if isinstance(entry_id, str) else None
    if entry is None or not entry.returns_session:
        return False
    body = record["response"].get("body") or {}
    document = body.get("json")
    return isinstance(document, dict) and catalog.SESSION_DOCUMENT_KEYS <= document.keys()


# -- answers ----------------------------------------------------------------------------------


def replay_headers(pairs: Iterable[Sequence[str]], status: int,
                   body: bytes) -> list[tuple[str, str]]:
    """Recorded response headers fit for a new connection.

    Hop-by-hop headers (and any the Connection header names) go; Content-Length
    is set to the body actually sent (none on 1xx, 204 and 304). Everything
    else, ETag first of all, stays verbatim and in order.
    """
    pairs = [(str(k), str(v)) for k, v in pairs]
    drop = _DROPPED
    if any(k.lower() == "connection" for k, _ in pairs):
        drop = drop | {t.strip().lower() for k, v in pairs if k.lower() == "connection"
                       for t in v.split(",")}
    headers = [(k, v) for k, v in pairs if k.lower() not in drop]
    if not (status < 200 or status in (204, 304)):
        headers.append(("Content-Length", str(len(body))))
    return headers


def reply_from_record(record: dict[str, Any]) -> faults.Reply | None:
    """The recorded answer as a Reply, or None when the recorded exchange had none."""
    return reply_from_response(record.get("response"))


def reply_from_response(response: dict[str, Any] | None) -> faults.Reply | None:
    """`reply_from_record` given only the record's response."""
    if response is None:
        return None
    body = recording.decode_body(response.get("body"))
    status = int(response["status"])
    reason = str(response.get("reason") or "")
    return faults.Reply(status, reason, replay_headers(response.get("headers") or (), status,
                                                       body), body)


def error_reply(decision: Pass) -> faults.Reply:
    """The proxy's own answer when the replay has none: a 502 that says why.

    Deliberately not a row of the MPSD table, so neither the title nor the
    report can mistake it for something the service said.
    """
    body = f"mpsdproxy replay: {decision.message}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Mpsdproxy-Replay", decision.reason),
        ("Content-Length", str(len(body))),
    ]
    return faults.Reply(ERROR_STATUS, ERROR_REASON, headers, body)


# -- consumption and policies -----------------------------------------------------------------


@dataclass(frozen=True)
class NearMiss:
    """The recorded request closest to one that matched nothing, and how it differs."""

    seq: int
    where: str
    method: str
    url: str
    differences: tuple[str, ...]
    consumed: bool

    def __str__(self) -> str:
        served = ", already served" if self.consumed else ""
        what = "; ".join(self.differences) or "nothing visible"
        return (f"closest recorded request is #{self.seq} ({self.where}{served}) "
                f"{self.method} {self.url}, which differs in: {what}")


@dataclass(frozen=True, slots=True)
class Serve:
    """Answer with the recorded response of `entry`."""

    entry: int
    seq: int
    file: str
    repeat: bool = False  # served again after its key's answers ran out


@dataclass(frozen=True, slots=True)
class Pass:
    """The recording has no answer to give; `action` is what the policy wants instead."""

    action: str  # "error" | "forward" | "emulate"
    reason: str  # "unmatched" | "exhausted"
    message: str


Decision = Serve | Pass


class Emulating(Protocol):
    """What the player needs of the stand-in (`mpsdproxy.emulator.Emulator`)."""

    def handle(self, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes) -> faults.Reply: ...

    def seed(self, path: str, document: dict[str, Any], etag: str | None) -> None: ...


#: Answers kept decoded: a repeated answer (repeat-last, a poll the recording holds
#: many times) is served without reading and decoding its line again.
ANSWER_CACHE_ENTRIES = 1024
ANSWER_CACHE_BYTES = 8 * 2**20  # of bodies; an answer larger than this is never kept

_V = TypeVar("_V")


class Recent(Generic[_V]):
    """The values last put or got, per entry: at most `entries` of them and `budget`
    bytes in all (as their `size` said); the least recently used go first."""

    def __init__(self, entries: int, budget: int) -> None:
        self.entries = entries
        self.budget = budget
        self.bytes = 0
        self._items: dict[int, tuple[_V, int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        """Entries, the least recently used first."""
        return iter(self._items)

    def get(self, entry: int) -> _V | None:
        item = self._items.pop(entry, None)
        if item is None:
            return None
        self._items[entry] = item  # now the most recently used
        return item[0]

    def put(self, entry: int, value: _V, size: int) -> None:
        """Keep `value` (unless it alone is over the budget), forgetting the least
        recently used ones as needed."""
        old = self._items.pop(entry, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.budget:
            return
        items = self._items
        items[entry] = (value, size)
        self.bytes += size
        while len(items) > self.entries or self.bytes > self.budget:
            self.bytes -= items.pop(next(iter(items)))[1]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class _Answer(NamedTuple):
    reply: faults.Reply | None
    etag: str | None


#: How many recorded requests a near miss reads back from disk, at most.
NEAR_MISS_ROUTES = 3
NEAR_MISS_PER_ROUTE = 8
NEAR_MISS_WALK = 256


class Player:
    """Consumes an Index: which answer each request gets, and what to do when none.

    Consumption is explicit: each entry is served once, in recorded order per
    match key; past the last one `exhausted` decides (repeat-last, error,
    forward). A request with no recorded match gets `unmatched` (forward,
    emulate, error), whether or not the rest of the recording is used up.
    """

    def __init__(self, index: Index, exhausted: str = "repeat-last",
                 unmatched: str = "error") -> None:
        self.index = index
        self.exhausted = exhausted
        self.unmatched = unmatched
        self.consumed = bytearray(len(index))
        #: ETags handed out so far: by served answers, and by the stand-in.
        self.learned: set[str] = set()
        self._cursor: dict[int, int] = {}
        self._last: dict[int, tuple[int, int]] = {}
        #: Per session: the entry of the last whole document served (what the title has seen).
        self._seen: dict[int, int] = {}
        self._seeded: dict[int, int] = {}
        self._seeded_into: Emulating | None = None
        self._dirty: set[int] = set(range(len(index.sessions)))
        self._known = _Known(self)
        #: entry -> its decoded answer, for the answers served last.
        self._answers: Recent[_Answer] = Recent(ANSWER_CACHE_ENTRIES, ANSWER_CACHE_BYTES)

    # -- index lifecycle

    def rebind(self, index: Index) -> None:
        """Adopt a rehashed index of the same files, keeping what was consumed."""
        if len(index) != len(self.index):
            raise ValueError(f"the rehashed index has {len(index)} exchanges, "
                             f"not {len(self.index)}: the files changed")
        self.index.close()
        self.index = index
        self._cursor.clear()
        self._last.clear()
        self._dirty = set(range(len(index.sessions)))

    def close(self) -> None:
        self.index.close()
        self._answers.clear()

    def remaining(self) -> int:
        """Recorded answers not served yet."""
        return len(self.consumed) - sum(self.consumed)

    # -- deciding

    def known_etag(self, value: str) -> bool:
        return value in self.index.etags or value in self.learned

    def key(self, request: Request) -> MatchKey:
        return match_key(request, self.index.options, self._known)

    def decide(self, request: Request) -> Decision:
        """Which recorded answer `request` gets (consuming it), or what to do instead."""
        key = self.key(request)
        digest = key.digest()
        if self.index.first(digest) is None:
            return self._unmatched(request, key)
        entry = self._take(digest)
        if entry is not None:
            return self._serve(entry)
        last, count = self._chain_end(digest)
        if self.exhausted == "repeat-last":
            return self._serve(last, repeat=True)
        message = (f"all {count} recorded answers to {request.method} {request.url} were "
                   f"served (the last is #{self.index.seq(last)}, {self.index.where(last)}); "
                   f"mpsd_replay_exhausted={self.exhausted}")
        return Pass(self.exhausted, "exhausted", message)

    def _serve(self, entry: int, repeat: bool = False) -> Serve:
        return Serve(entry, self.index.seq(entry), self.index.file(entry), repeat)

    def _unmatched(self, request: Request, key: MatchKey) -> Pass:
        near = self.near_miss(request, key)
        because = str(near) if near else "the recording holds no requests"
        message = (f"no recorded answer for {request.method} {request.url} "
                   f"(mpsd_replay_unmatched={self.unmatched}); {because}")
        return Pass(self.unmatched, "unmatched", message)

    def _take(self, digest: int) -> int | None:
        """The first unconsumed entry with this key, consumed; None when all are."""
        entry = self._cursor.get(digest)
        if entry is None:
            entry = self.index.first(digest)
            assert entry is not None
        while entry != _END and self.consumed[entry]:
            entry = self.index.next_same(entry)
        if entry == _END:
            self._cursor[digest] = _END
            return None
        self.consumed[entry] = 1
        self._cursor[digest] = self.index.next_same(entry)
        return entry

    def _chain_end(self, digest: int) -> tuple[int, int]:
        """(last entry, number of entries) of a key, walked once then remembered."""
        cached = self._last.get(digest)
        if cached is None:
            entry = self.index.first(digest)
            assert entry is not None
            count = 1
            while (following := self.index.next_same(entry)) != _END:
                entry, count = following, count + 1
            cached = self._last[digest] = (entry, count)
        return cached

    # -- answering

    def answer(self, entry: int) -> faults.Reply | None:
        """The recorded answer of `entry` (None: the recorded exchange got no response).

        Recently served answers are kept decoded (a bounded cache), so the Reply
        may be the one handed out before: read it, never change it.
        """
        cached = self._answers.get(entry)
        if cached is None:
            reply = reply_from_response(self.index.response(entry))
            cached = _Answer(reply, reply.header("ETag") if reply else None)
            self._answers.put(entry, cached, len(reply.body) if reply else 0)
        session = self.index.session_of(entry)
        if session != _END:
            self._seen[session] = entry
            self._dirty.add(session)
        if cached.etag:
            self.learned.add(cached.etag)
        return cached.reply

    def emulate(self, request: Request, emulator: Emulating) -> faults.Reply:
        """Let the stand-in answer, after bringing it up to what the title has seen."""
        self._seed(emulator)
        parts = urlsplit(request.url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = request.body
        if not body and request.document is not _MISSING:
            body = faults.encode_json(request.document)
        reply = emulator.handle(request.method, target, list(request.headers), body)
        etag = reply.header("ETag")
        if etag:
            self.learned.add(etag)
        return reply

    def _seed(self, emulator: Emulating) -> None:
        """Seed each session whose latest document (served, else last recorded) is new to it."""
        if emulator is not self._seeded_into:  # a fresh stand-in knows nothing yet
            self._seeded_into = emulator
            self._seeded.clear()
            self._dirty = set(range(len(self.index.sessions)))
        for session in sorted(self._dirty):
            entry = self._seen.get(session, self.index.session_last[session])
            if self._seeded.get(session) == entry:
                continue
            response = self.index.read(entry)["response"]
            _, path = self.index.sessions[session]
            emulator.seed(path, response["body"]["json"], _header(response.get("headers"), "ETag"))
            self._seeded[session] = entry
        self._dirty.clear()

    # -- near misses

    def near_miss(self, request: Request, key: MatchKey | None = None) -> NearMiss | None:
        """The closest recorded request and how it differs (reads a few records back)."""
        key = key or self.key(request)
        best: tuple[tuple[int, int, int], NearMiss] | None = None
        for entry in self._candidates(request):
            record = self.index.read(entry)
            recorded = Request.from_record(record["request"])
            found = compare(key, match_key(recorded, self.index.options))
            consumed = bool(self.consumed[entry])
            rank = (sum(d.weight for d in found), int(consumed), entry)
            if best is None or rank < best[0]:
                near = NearMiss(self.index.seq(entry), self.index.where(entry), recorded.method,
                                recorded.url, tuple(d.phrase for d in found), consumed)
                best = (rank, near)
        return best[1] if best else None

    def _candidates(self, request: Request) -> list[int]:
        """Entries of the routes most like the request's, unconsumed ones first."""
        method, authority, path = route_of(request.method, request.url)
        segments = path.split("/")

        def closeness(number: int) -> tuple[bool, bool, int, bool]:
            m, a, p = self.index.routes[number]
            shared = 0
            for mine, theirs in zip(segments, p.split("/"), strict=False):
                if mine != theirs:
                    break
                shared += 1
            return p == path, m == method, shared, a == authority

        routes = self.index.similar_routes(path)
        picked: list[int] = []
        for number in heapq.nlargest(NEAR_MISS_ROUTES, routes, key=closeness):
            entries = list(self.index.route_entries(number, NEAR_MISS_WALK))
            entries.sort(key=lambda e: self.consumed[e])
            picked.extend(entries[:NEAR_MISS_PER_ROUTE])
        return picked


class _Known:
    """The ETags a player knows, as a Container (recorded ones and learned ones)."""

    __slots__ = ("player",)

    def __init__(self, player: Player) -> None:
        self.player = player

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.player.known_etag(value)
