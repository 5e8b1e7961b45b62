"""What a re-sent request changes: names, carried-over ids and ETags, credentials.

Values of the original run (ETags, handle and ticket ids) are mapped to the
ones the target hands out; session names are renamed when asked; a redacted
Authorization becomes a stand-in token. Everything else goes as recorded.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from urllib.parse import unquote

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import resources
from mpsdproxy.resources import Kind

__all__ = ["HOP_BY_HOP", "stand_in_authorization", "Renamer", "Carry", "SentHeaders",
           "request_headers", "request_body"]

#: Headers that describe one connection, not the request: never copied.
HOP_BY_HOP: frozenset[str] = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "content-length", "host",
})

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
#: A GUID anywhere in a text: handle, ticket and connection ids are GUIDs.
_GUID_IN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def stand_in_authorization(value: str) -> str | None:
    """The token sent for a redacted Authorization value (None when not redacted).

    `redacted:ab12...` -> `XBL3.0 x=ab12...;resent`: the hash stands for the
    user, so two users of the original run are two users of the resend.
    """
    if not value.startswith(recording.REDACTED_PREFIX):
        return None
    return f"XBL3.0 x={value[len(recording.REDACTED_PREFIX):]};resent"


def _fresh_name(original: str) -> str:
    if _GUID.match(original):
        fresh = str(uuid.uuid4())
        return fresh.upper() if original.upper() == original else fresh
    return f"{original}-{uuid.uuid4().hex[:8]}"


class Renamer:
    """One fresh name per distinct session name, case-insensitively; inert when disabled."""

    def __init__(self, enabled: bool, fresh: Callable[[str], str] = _fresh_name) -> None:
        self.enabled = enabled
        self.fresh = fresh
        self.names: dict[str, str] = {}  # lower-case original -> fresh name

    def __call__(self, name: str) -> str:
        if not self.enabled:
            return name
        low = name.lower()
        if low not in self.names:
            self.names[low] = self.fresh(name)
        return self.names[low]


def _segment(segment: str, change: Callable[[str], str]) -> str:
    """A path segment with its decoded value changed; the same text when unchanged."""
    value = unquote(segment, errors="surrogateescape")
    new = change(value)
    return segment if new == value else quote(model.to_bytes(new), safe="")


class Carry:
    """Values of the original run mapped to the target's: ETags, handle and ticket ids,
    RTA ConnectionIds."""

    def __init__(self, renamer: Renamer) -> None:
        self.rename = renamer
        self.etags: dict[str, str] = {}
        self.ids: dict[str, str] = {}  # handle and ticket ids, lower-case original -> new

    def path(self, path: str) -> str:
        """The request path with session name, handle and ticket ids carried over."""
        raw_path, sep, query = path.partition("?")
        resource = resources.parse(raw_path)
        segs = raw_path.split("/")
        # segs[0] is "" (the path starts with "/"); indexes follow the URI grammar.
        low = [s.lower() for s in segs]
        if resource.is_session_or_element and low[5:6] == ["sessions"]:
            segs[6] = _segment(segs[6], self.rename)
        elif resource.kind in (Kind.HANDLE, Kind.HANDLE_SESSION) and resource.element \
                and low[1:2] == ["handles"]:
            segs[2] = _segment(segs[2], self.id)
        elif resource.kind is Kind.TICKET and resource.element and low[5:6] == ["tickets"]:
            segs[6] = _segment(segs[6], self.id)
        return "/".join(segs) + sep + query

    def id(self, value: str) -> str:
        """The target's id for a handle or ticket id (or RTA ConnectionId) of the original
        run."""
        return self.ids.get(value.lower(), value)

    def same_as(self, original: str, new: str) -> None:
        """From now on `new`, the target's, goes wherever the original run had `original`."""
        self.ids[original.lower()] = new

    def body(self, value: Any) -> Any:
        """A JSON body with session refs renamed and carried-over ids replaced."""
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k.lower().endswith("sessionref") and isinstance(v, dict) \
                        and isinstance(v.get("name"), str):
                    v = {**v, "name": self.rename(v["name"])}
                out[k] = self.body(v)
            return out
        if isinstance(value, list):
            return [self.body(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def text(self, value: str) -> str:
        """A string with each carried-over id in it replaced, the whole string or a GUID
        inside it: a title writes the handle it made into its session as
        `completed~<handle id>` (the public capture's GameSessionTransferHandle)."""
        whole = self.id(value)
        if whole != value or not self.ids:
            return whole
        return _GUID_IN.sub(lambda found: self.id(found[0]), value)

    def condition(self, value: str) -> str:
        """An If-Match/If-None-Match value, ETag by ETag."""
        tags = [t.strip() for t in value.split(",")]
        return ", ".join(self.etags.get(t, t) for t in tags)

    def learn(self, method: str, path: str, original: model.Response | None,
              answer: model.Response) -> None:
        """Pair what the original run got with what the target just answered."""
        if original is None:
            return
        old_etag, new_etag = original.headers.first("etag"), answer.headers.first("etag")
        if old_etag and new_etag:
            self.etags[old_etag] = new_etag
        if method != "POST" or answer.status >= 300 or original.status >= 300:
            return
        kind = resources.parse(path.partition("?")[0]).kind
        key = {Kind.HANDLE: "id", Kind.HOPPER: "ticketId"}.get(kind)
        if key is None:
            return
        old_id, new_id = _json_field(original, key), _json_field(answer, key)
        if old_id and new_id:
            self.same_as(old_id, new_id)


def _json_field(message: model.Response, key: str) -> str | None:
    value = message.json
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, str) else None


def request_body(request: model.Request, carry: Carry) -> bytes:
    """The body to send: the recorded bytes, re-encoded only when something was
    carried over."""
    value = request.json
    if value is jsonbody.INVALID:
        return request.body
    try:
        carried = carry.body(value)
        if carried == value:
            return request.body
        return json.dumps(carried, separators=(",", ":"), ensure_ascii=False).encode()
    except RecursionError:  # nested past what can be rewritten: nothing to carry over in it
        return request.body


class SentHeaders:
    """The headers to send, and the headers to record.

    They differ only where a stand-in token replaced a redacted Authorization:
    the record keeps the redacted value, so a user keeps one identity however
    many times a recording is re-sent.
    """

    def __init__(self) -> None:
        self.send: list[tuple[str, str]] = []
        self.record: list[tuple[str, str]] = []

    def add(self, name: str, value: str, sent: str | None = None) -> None:
        self.send.append((name, value if sent is None else sent))
        self.record.append((name, value))


def request_headers(headers: model.Headers, carry: Carry, host: str | None) -> SentHeaders:
    """What goes with a re-sent request (see the package docstring); `host` names the
    target, or None to keep the recorded Host."""
    out = SentHeaders()
    if host is not None:
        out.add("Host", host)
    for name, value in headers:
        low = name.lower()
        if low in HOP_BY_HOP:
            if low == "host" and host is None:
                out.add(name, value)
            continue
        token = stand_in_authorization(value) if low == "authorization" else None
        if token:
            out.add(name, value, sent=token)
            continue
        if value.startswith(recording.REDACTED_PREFIX):
            continue
        if low in ("if-match", "if-none-match"):
            value = carry.condition(value)
        out.add(name, value)
    return out
