"""One exchange, decoded once and valid by construction.

Every domain function (classify, verdicts, replay matching, the injector's
rules, the report, the exports) takes these types; only
`mpsdproxy/addons/flows.py` builds them from mitmproxy flows, and only the
recording codec builds them from record lines.

**One rule for bytes that are not UTF-8**, the one mitmproxy applies to header
fields: text is decoded as UTF-8 with `surrogateescape`, so a byte that is not
UTF-8 (0xE9 in a path, 0xFF in a header) becomes one lone surrogate, and
`to_bytes` gives the exact bytes back. Nothing else in the package decodes a
header, a URL or a reason: it calls `from_bytes` / `to_bytes` here (defined in
`wiretext`, below every module), and shows such text to people through `printable`.

**Valid by construction**, as h11's events are: a status outside 100-599, a
method that is not a token, or a header name, header value, URL or reason with
CR, LF or NUL cannot be built (`ModelError`). So nothing read from a hostile
recording or capture can smuggle a header or an early body to the title.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from itertools import chain
from types import MappingProxyType
from typing import Any
from typing import NamedTuple
from typing import TypeVar
from urllib.parse import urlsplit

from mpsdproxy import identity
from mpsdproxy import jsonbody
from mpsdproxy import resources
from mpsdproxy.wiretext import ENCODING
from mpsdproxy.wiretext import ERRORS
from mpsdproxy.wiretext import from_bytes
from mpsdproxy.wiretext import to_bytes

__all__ = [
    "ModelError",
    "from_bytes",
    "to_bytes",
    "printable",
    "terminal_safe",
    "clipped",
    "printable_data",
    "Headers",
    "Request",
    "Response",
    "Truncated",
    "KEPT_OF_TRUNCATED",
    "MAX_HELD_BODY",
    "Exchange",
    "FORWARDED",
]


#: Who answered when no addon did: the service (or the configured upstream).
FORWARDED: Mapping[str, Any] = MappingProxyType({"source": "forwarded"})


class ModelError(ValueError):
    """A request or response that cannot exist on the wire; says which part and why."""


def printable(text: str) -> str:
    """Text for people and for strict UTF-8 files: a byte that was not UTF-8 shows
    as `\\xNN`, and any other lone surrogate (JSON's `"\\ud800"`, which no UTF-8 can
    hold) as `\\uNNNN`; everything else is unchanged."""
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text)
    return text


#: What `from_bytes` makes of a byte that is not UTF-8 (surrogateescape), and every
#: other lone surrogate.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code - 0xdc00:02x}" if 0xdc80 <= code <= 0xdcff else f"\\u{code:04x}"


#: C0 controls, DEL, C1 controls (CSI is \x9b) and the bidirectional overrides and
#: isolates that reorder what a terminal shows; the same less the line feed, for texts
#: of many lines.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_LINES = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_control(m: re.Match[str]) -> str:
    code = ord(m[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


#: The most characters of one value a line for people shows (a URI, a path).
SHOWN_CHARS = 200


def clipped(text: str, most: int = SHOWN_CHARS) -> str:
    """`text` as one line for people shows it: whole up to `most` characters, else its
    start and how long it was (a title may send a URI of megabytes)."""
    if len(text) <= most:
        return text
    return f"{text[:most]}... ({len(text):,} characters)"


def terminal_safe(text: object, *, lines: bool = False) -> str:
    """`text` for a terminal: bytes that were not UTF-8 as `\\xNN` (`printable`), and every
    control character (ESC, CR, BEL, C1, bidi overrides) as `\\xNN` or `\\uNNNN`, so
    nothing a title or a file put in a URL, a header or a name acts on the terminal
    that shows it. With `lines`, line feeds stay: a whole report, written by the tool."""
    return (_UNSAFE_IN_LINES if lines else _UNSAFE).sub(_escape_control,
                                                        printable(str(text)))


def printable_data(value: Any) -> Any:
    """Plain data (dicts, lists, strings) with every string, keys too, made printable:
    what a strict UTF-8 file (JSON output, a flow file's metadata) can hold."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Mapping):
        return {printable_data(k): printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_data(v) for v in value]
    return value


#: The characters of an RFC 9110 token (a method, a header name), as a regex class body.
TOKEN_CHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
#: What no header, URL or reason may hold: a line break would let it smuggle more.
BREAKS = "\r\n\x00"
_TOKEN = re.compile(f"[{TOKEN_CHARS}]+")
#: Header names joined by NUL, each one a token.
_TOKENS = re.compile(f"[{TOKEN_CHARS}]+(?:\0[{TOKEN_CHARS}]+)*")
#: CR and LF as ints: `int in bytes` is one memchr, where `bytes in bytes` first tries
#: the needle as an int and builds and drops a TypeError.
_CR, _LF = b"\r\n"


def _breaks(value: str) -> bool:
    """Whether text holds CR, LF or NUL: three plain scans (a regex over a 1.5 KB
    token costs several times as much, and every request carries one)."""
    return "\r" in value or "\n" in value or "\x00" in value


def _check_text(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ModelError(f"{what} should be text, not {type(value).__name__}")
    if _breaks(value):
        raise ModelError(f"{what} holds CR, LF or NUL: {printable(value)[:60]!r}")
    return value


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        shown = printable(name)[:60] if isinstance(name, str) else type(name).__name__
        raise ModelError(f"header name {shown!r} is not a token")
    return name


class Headers(Sequence[tuple[str, str]]):
    """Header fields in order, repeats kept; names compare case-insensitively.

    Immutable: `with_value` and `without` return new Headers. `get` folds
    repeated fields with ", " as mitmproxy's `Headers.get` does.
    """

    __slots__ = ("fields", "_first", "_repeated")

    def __init__(self, fields: Iterable[Sequence[str]] = ()) -> None:
        checked: list[tuple[str, str]] = []
        for pair in fields:
            if isinstance(pair, str) or len(pair) != 2:
                raise ModelError(f"a header should be a [name, value] pair, not {pair!r}")
            name, value = pair
            if not isinstance(value, str) or _breaks(value):
                _check_text(f"header {_check_name(name)}", value)
            checked.append((_check_name(name), value))
        self.fields: tuple[tuple[str, str], ...] = tuple(checked)
        self._first: dict[str, str] | None = None
        self._repeated: frozenset[str] = frozenset()

    @classmethod
    def derived(cls, fields: Iterable[tuple[str, str]]) -> Headers:
        """Headers from fields taken out of checked Headers, values only narrowed by
        redaction (which writes `redacted:` and hex digits, never CR, LF or NUL): what
        the constructor would check holds already, so it is not checked twice on every
        record written."""
        headers = object.__new__(cls)
        headers.fields = tuple(fields)
        headers._first = None
        return headers

    @classmethod
    def from_raw(cls, fields: Iterable[tuple[bytes, bytes]]) -> Headers:
        """Raw wire fields (as mitmproxy keeps them) -> Headers, by the one rule.

        Every request and response passes here, so the fields are checked and decoded
        all at once, joined by NUL: UTF-8 never reads an ASCII NUL into a neighbouring
        character, so decoding the joined bytes is decoding each field; a byte that is
        not ASCII is never a line break nor a token character, so what the text holds
        is what the bytes hold. Anything wrong takes the field-by-field way, which
        says what it is."""
        fields = fields if type(fields) is tuple else tuple(fields)
        try:
            joined = b"\0".join(chain.from_iterable(fields))
        except TypeError:
            joined = b"\r"
        parts = joined.decode(ENCODING, ERRORS).split("\0")
        names = parts[::2]
        if (len(parts) != 2 * len(fields) or _CR in joined or _LF in joined
                or _TOKENS.fullmatch("\0".join(names)) is None):
            return cls((from_bytes(k), from_bytes(v)) for k, v in fields)
        return cls.derived(zip(names, parts[1::2], strict=False))  # counted above

    def raw(self) -> tuple[tuple[bytes, bytes], ...]:
        """The exact wire bytes of every field."""
        return tuple((to_bytes(k), to_bytes(v)) for k, v in self.fields)

    def pairs(self) -> list[list[str]]:
        """[[name, value], ...]: the form recordings store."""
        return [[k, v] for k, v in self.fields]

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.fields if k.lower() == low]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of every field of that name, folded with ", " (None, or
        `default`, for none). Answered from `first`'s index: only a name sent more
        than once (rare) needs a pass over the fields."""
        low = name.lower()
        value = (self._first or self._index()).get(low)
        if value is None:
            return default
        if low in self._repeated:
            return ", ".join([v for k, v in self.fields if k.lower() == low])
        return value

    def first(self, name: str) -> str | None:
        """The first field's value (not folded): for a header sent once, as a rule.

        The lower-cased names are indexed on the first call: the verdicts alone ask
        seven names of every request, each a pass over every field otherwise."""
        return (self._first or self._index()).get(name.lower())

    def _index(self) -> dict[str, str]:
        """Each lower-cased name's first value, and which names come more than once."""
        index: dict[str, str] = {}
        repeated: set[str] = set()
        for k, v in self.fields:
            low = k.lower()
            if low in index:
                repeated.add(low)
            else:
                index[low] = v
        self._first, self._repeated = index, frozenset(repeated)
        return index

    def with_value(self, name: str, value: str) -> Headers:
        """These headers with `name` set to `value`: the first field of that name takes
        it and the others are dropped; a new field goes last."""
        low, out, done = name.lower(), [], False
        for k, v in self.fields:
            if k.lower() != low:
                out.append((k, v))
            elif not done:
                out.append((k, value))
                done = True
        if not done:
            out.append((name, value))
        return Headers(out)

    def without(self, name: str) -> Headers:
        low = name.lower()
        return Headers((k, v) for k, v in self.fields if k.lower() != low)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.first(name) is not None

    def __getitem__(self, index: Any) -> Any:
        return self.fields[index]

    def __len__(self) -> int:
        return len(self.fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.fields)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self.fields == other.fields
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.fields)

    def __repr__(self) -> str:
        return f"Headers({list(self.fields)!r})"


def _headers(value: Headers | Iterable[Sequence[str]]) -> Headers:
    return value if isinstance(value, Headers) else Headers(value)


def _body(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise ModelError(f"a body should be bytes, not {type(value).__name__}")


def _encoded(value: Any, body: bytes) -> bytes | None:
    """The wire bytes, kept only when they differ from the body."""
    if value is None:
        return None
    value = _body(value)
    return None if value == body else value


_M = TypeVar("_M", bound="_Message")


class _Message:
    """What requests and responses share: a body, parsed as JSON at most once, and the
    bytes the wire carried for it when a Content-Encoding made them differ (`encoded`:
    an export gives them back exactly, so Content-Length holds)."""

    body: bytes
    headers: Headers
    encoded: bytes | None

    @functools.cached_property
    def json(self) -> Any:
        """The body's JSON value, or `jsonbody.INVALID` (None is a JSON value)."""
        return jsonbody.parse(self.body) if self.body else jsonbody.INVALID

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def knowing(self: _M, *, json: Any = jsonbody.INVALID,
                resource: resources.Resource | None = None) -> _M:
        """This message, told what was worked out from it elsewhere (a record keeps its
        body parsed, the router the request's resource), so it is not worked out again."""
        if json is not jsonbody.INVALID:
            self.__dict__["json"] = json
        if resource is not None:
            self.__dict__["resource"] = resource
        return self

    def with_headers(self: _M, headers: Headers) -> _M:
        """A copy with other (checked) headers and everything else the same, including
        what was worked out from the unchanged fields: nothing is parsed or checked
        again (redaction changes the headers of nearly every request it records)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__["headers"] = headers
        new.__dict__.pop("user", None)  # worked out from the headers
        return new

    def replace(self: _M, **changes: Any) -> _M:
        """A copy with `changes`, keeping what this one worked out from the fields the
        copy shares with it (the parsed body when the body is the same; the resource
        when the URL is)."""
        new = dataclasses.replace(self, **changes)  # type: ignore[type-var]
        known = self.__dict__
        return new.knowing(
            json=known.get("json", jsonbody.INVALID) if new.body == self.body
            else jsonbody.INVALID,
            resource=known.get("resource") if getattr(new, "url", None) == getattr(
                self, "url", None) else None)


@dataclass(frozen=True, eq=False, init=False)
class Request(_Message):
    """A request as the title sent it: `url` is absolute, `body` is the decoded content
    (no Content-Encoding left)."""

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    encoded: bytes | None = None

    def __init__(self, method: str, url: str,
                 headers: Headers | Iterable[Sequence[str]] = (), body: bytes = b"",
                 encoded: bytes | None = None) -> None:
        """Checked as h11 checks its events; the fields are set through `__dict__`, as
        a frozen value's own constructor may (every request builds one)."""
        if not isinstance(method, str) or not _TOKEN.fullmatch(method):
            raise ModelError(f"method {method!r} is not a token")
        if not isinstance(url, str) or _breaks(url) or " " in url or "\t" in url:
            _check_text("URL", url)
            raise ModelError(f"URL holds white space: {printable(url)[:60]!r}")
        try:
            split = urlsplit(url)
            if ":" in split.netloc:  # without one there is no port to be wrong
                split.port  # noqa: B018 - raises for a port that is not a number
        except ValueError as e:
            raise ModelError(f"URL {printable(url)[:60]!r} cannot be read: {e}") from None
        headers = _headers(headers)
        body = _body(body)
        self.__dict__.update(method=method, url=url, headers=headers, body=body,
                             encoded=_encoded(encoded, body), _split=split)

    @property
    def scheme(self) -> str:
        return self._split.scheme

    @functools.cached_property
    def host(self) -> str:
        """The host name the title addressed, lower case, without port (worked out once:
        the classifier, the injector and the verdicts each ask)."""
        return (self._split.hostname or "").lower()

    @property
    def path(self) -> str:
        """Path and query, as on the request line."""
        split = self._split
        return (split.path or "/") + (f"?{split.query}" if split.query else "")

    @functools.cached_property
    def resource(self) -> resources.Resource:
        return resources.parse(self._split.path)

    @property
    def opens_websocket(self) -> bool:
        """Whether it asks to become a websocket (`Upgrade: websocket`, the RTA's
        `GET /connect`): what follows is no HTTP answer but a conversation."""
        return "websocket" in (self.headers.get("upgrade") or "").lower()

    @functools.cached_property
    def user(self) -> str:
        """Who sent it, never in clear: `identity.user_of` of the (first) Authorization
        value, "" without one. Worked out once: the injector's throttling and the
        verdicts' budgets both key by it."""
        auth = self.headers.first("authorization")
        return identity.user_of(auth) if auth else ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.method, self.url, self.headers, self.body) == (
            other.method, other.url, other.headers, other.body)

    __hash__ = None  # type: ignore[assignment]


#: Bytes of a truncated body a record keeps: enough to see what it was.
KEPT_OF_TRUNCATED = 64 * 1024
#: The most of one answer's body a command holds (`run --body-cap` defaults to it): a
#: target that never ends an answer cannot fill the memory.
MAX_HELD_BODY = 16 * 1024 * 1024


class Truncated(NamedTuple):
    """A body too big to keep whole (over the proxy's body cap): the title got all of
    it, the exchange holds its first `kept` bytes. `size` is the whole body's length
    (None when it was streamed without a length); `wire` says the kept bytes are as
    they came on the wire (a streamed body is never decoded) rather than decoded."""

    size: int | None
    kept: int
    wire: bool = False


@dataclass(frozen=True, eq=False, init=False)
class Response(_Message):
    """A response as the title received it (`body` decoded, as for requests).

    `truncated` is set when `body` is only the start of what the title received.
    """

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    encoded: bytes | None = None
    truncated: Truncated | None = None

    def __init__(self, status: int, reason: str = "",
                 headers: Headers | Iterable[Sequence[str]] = (), body: bytes = b"",
                 encoded: bytes | None = None, truncated: Truncated | None = None) -> None:
        """Checked as h11 checks its events; set through `__dict__` (see `Request`)."""
        if type(status) is not int or not 100 <= status <= 599:
            raise ModelError(f"status should be an integer in 100-599, not {status!r}")
        _check_text("reason", reason)
        headers = _headers(headers)
        body = _body(body)
        self.__dict__.update(status=status, reason=reason, headers=headers, body=body,
                             encoded=_encoded(encoded, body), truncated=truncated)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.reason, self.headers, self.body) == (
            other.status, other.reason, other.headers, other.body)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, init=False)
class Exchange:
    """One request, what answered it (or why nothing did), and who answered.

    `provenance` is `{"source": "forwarded"}` unless an addon answered:
    `injected` (rule, scenario, phase), `replayed` (record, file), `emulated`,
    `replay-error`. `seq` is set once the exchange is in a recording.
    Times are epoch seconds.
    """

    request: Request
    response: Response | None = None
    error: str | None = None
    start: float | None = None
    end: float | None = None
    client: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=lambda: FORWARDED)
    seq: int | None = None

    def __init__(self, request: Request, response: Response | None = None,
                 error: str | None = None, start: float | None = None,
                 end: float | None = None, client: str | None = None,
                 provenance: Mapping[str, Any] = FORWARDED, seq: int | None = None) -> None:
        """The fields set through `__dict__`, as a frozen value's own constructor may:
        every flow builds two (the recorder's seq makes the second)."""
        self.__dict__.update(request=request, response=response, error=error, start=start,
                             end=end, client=client, provenance=provenance, seq=seq)

    @property
    def resource(self) -> resources.Resource:
        return self.request.resource

    @property
    def status(self) -> int | None:
        return self.response.status if self.response is not None else None

    @property
    def duration_ms(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return round((self.end - self.start) * 1000, 3)
