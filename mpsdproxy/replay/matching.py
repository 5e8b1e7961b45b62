"""When two requests are the same request, and how they differ when they are not.

Matching compares method, host, path (case-insensitive), query and the body
(as JSON when it is JSON: key order and whitespace do not matter), plus the
precondition headers. Volatile parts are left out: nonce-like query
parameters, correlation ids and timestamps in the body, the title's per-run
RTA connection and subscription ids, and the credential headers (Authorization
and Signature are redacted in recordings and never compared).

Conditional requests: an If-Match or If-None-Match carrying an ETag the replay
handed out matches the recorded request whatever ETag that one carried.

Every rule of "the same request" lives in this file: `match_key` builds the
key, `compare` says which of its parts differ, for near-miss messages.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Container
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import NamedTuple
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording

__all__ = [
    "DEFAULT_IGNORE_PARAMS",
    "DEFAULT_IGNORE_PAYLOAD_PARAMS",
    "NEVER_MATCHED",
    "CONDITION_HEADERS",
    "REPLAY_ETAG",
    "KeyPattern",
    "parse_key_pattern",
    "parse_choice",
    "parse_header_name",
    "MatchOptions",
    "MatchKey",
    "match_key",
    "Recorded",
    "recorded",
    "route_of",
    "Difference",
    "compare",
    "differences",
]

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
_CONDITIONS_LOWER = tuple(h.lower() for h in CONDITION_HEADERS)

#: What a precondition value becomes when it is an ETag the replay knows.
REPLAY_ETAG = "<an ETag of the replay>"

_DEFAULT_PORTS = {"http": 80, "https": 443}


# -- options ---------------------------------------------------------------------------------


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
    def strip(self) -> Stripper:
        """Leaves the ignored keys out of a parsed JSON body."""
        return Stripper(self.ignore_payload)


# -- leaving ignored body keys out -----------------------------------------------------------

#: Marks the end of a pattern in a Stripper trie (patterns have no empty segments).
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


#: Canonical JSON (sorted keys, compact, UTF-8 as is): the same text `json.dumps` gives
#: with these options, with the encoder built once rather than per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> str:
    return _CANONICAL.encode(value)


class Stripper:
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


# -- match keys ------------------------------------------------------------------------------


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
        data = model.to_bytes(tuple.__repr__(self))  # as repr(tuple(self))
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class _Url(NamedTuple):
    authority: str
    path: str  # lower-cased
    query: str


def _split(url: str) -> _Url:
    """url -> authority, lower-cased path, raw query. Never raises."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _Url("", url.split("?", 1)[0].lower(), url.partition("?")[2])
    host = (parts.hostname or "").lower()
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    return _Url(host, (parts.path or "/").lower(), parts.query)


def route_of(method: str, url: str) -> tuple[str, str, str]:
    """(METHOD, authority, path): the coarse shape near misses are searched by."""
    split = _split(url)
    return method.upper(), split.authority, split.path


def _body(request: model.Request, options: MatchOptions) -> str | bytes | None:
    """Canonical JSON text without the ignored keys; the raw bytes when the body is not
    JSON (or too deep to walk); None for no body."""
    if not request.body:
        return None
    return _document_key(request.json, request.body, options)


def _document_key(document: Any, raw: bytes, options: MatchOptions) -> str | bytes:
    if document is jsonbody.INVALID:
        return raw
    try:
        return options.strip.canonical(document)
    except (ValueError, RecursionError):
        return raw


def _recorded_body(body: Mapping[str, Any] | None, options: MatchOptions) -> str | bytes | None:
    """`_body` of a recorded body, without making bytes of a body kept as JSON."""
    if not body:
        return None
    if "json" in body:
        try:
            return options.strip.canonical(body["json"])
        except (ValueError, RecursionError):
            return recording.decode_body(body)
    raw = recording.decode_body(body)
    return _document_key(jsonbody.parse(raw), raw, options) if raw else None


def _condition(value: str, etags: Container[str] | None) -> str:
    value = value.strip()
    if value == "*":
        return "*"
    if etags is None or value in etags:
        return REPLAY_ETAG
    return value


def match_key(request: model.Request, options: MatchOptions,
              etags: Container[str] | None = None) -> MatchKey:
    """The match key of a request.

    `etags` is None for a recorded request (its precondition ETags are by
    definition the recorded ones); for a live request it holds every ETag the
    replay knows, and a precondition naming one of them counts as the recorded one.
    """
    return _key(request.method, _split(request.url), request.headers,
                _body(request, options), options, etags)


class Recorded(NamedTuple):
    """What the index keeps of a recorded request: its key and its route."""

    key: MatchKey
    route: tuple[str, str, str]


def recorded(part: Mapping[str, Any], options: MatchOptions) -> Recorded:
    """The match key and route of a record's request half (`record["request"]`), read
    straight from the record: what `match_key` gives for its Request."""
    url = _split(part["url"])
    method = part["method"]
    key = _key(method, url, part.get("headers") or (), _recorded_body(part.get("body"), options),
               options, None)
    return Recorded(key, (key.method, url.authority, url.path))


def _key(method: str, url: _Url, fields: Iterable[Sequence[str]], body: str | bytes | None,
         options: MatchOptions, etags: Container[str] | None) -> MatchKey:
    pairs: tuple[tuple[str, str], ...] = ()
    if url.query:
        ignored = options.ignore_params
        pairs = tuple(sorted(
            (k, v) for k, v in parse_qsl(url.query, keep_blank_values=True)
            if k.lower() not in ignored
        ))
    # One pass over the headers: the first value of each compared one.
    wanted = options.wanted_headers
    found: dict[str, str] = {}
    for name, value in fields:
        low = name.lower()
        if low in wanted and low not in found:
            found[low] = value
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
    return MatchKey(method.upper(), None if options.ignore_host else url.authority,
                    url.path, pairs, body, headers, conditions)


# -- how two keys differ ---------------------------------------------------------------------


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
        try:
            _json_diff(json.loads(here), json.loads(there), "", notes)
        except RecursionError:
            notes.append("deeply nested values differ")
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
