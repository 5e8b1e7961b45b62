"""Tracked session state: the last whole session document and its ETag, per session.

A forced 412 must carry "the current session and its current ETag" (catalog
row `412.if-match-session`), and a title that handles it adopts both and
retries. The proxy never invents a session: it remembers the last whole
document the service (or a replay) returned for each session, keyed by
`Resource.key`, and answers from that.

What changes the state, row by row of the table:

- a response whose row returns the session (`catalog.Entry.returns_session`:
  200, 201, 403.read-only, 412.if-match-session) and whose body is a whole
  session document: stored, with the response's ETag;
- `204.get-session`, `204.put-session-deleted`, `204.element-gone`: the
  session is gone, forgotten;
- any other answer about the session that carries a different ETag (an element
  write, whose body is the element only): the stored document is out of date,
  forgotten, so the next 412 reads the real one instead of a stale one;
- a handle created for a session (POST /handles with a `sessionRef`): the
  service bumps that session's changeNumber and ETag (protocol notes §4.2), so
  it is forgotten too.

The tracker also knows the newest `changeNumber` it has seen for each session
(across every client, whatever the proxy itself handed out: a forced 412's
newer session counts), so a forced 412 can carry one higher, and which
sessions it saw go away (`exists`), so a rule waits until a session is known
before answering with a row that needs it.

Memory stays flat: at most `max_sessions` sessions and `max_bytes` of
documents, the least recently used forgotten first. Documents are kept as the
bytes that came over the wire and parsed only when a fault needs one.
Nothing here imports mitmproxy.
"""

from __future__ import annotations

import enum
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import classify
from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource

__all__ = [
    "DEFAULT_MAX_SESSIONS",
    "DEFAULT_MAX_BYTES",
    "GONE_ENTRIES",
    "Update",
    "TrackedSession",
    "SessionTracker",
    "whole_session",
    "change_number",
]

DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

#: Rows that say the session no longer exists (the catalog says which).
GONE_ENTRIES: frozenset[str] = frozenset(e.id for e in catalog.ENTRIES if e.session_gone)

#: Statuses with a row that returns the whole session.
_SESSION_STATUSES: frozenset[int] = frozenset(
    e.status for e in catalog.ENTRIES if e.returns_session)


class Update(enum.StrEnum):
    """What one observed exchange did to the tracked state."""

    NONE = "none"
    STORED = "stored"
    FORGOTTEN = "forgotten"


@dataclass(frozen=True, slots=True)
class TrackedSession:
    """The last whole document seen for one session, as received, and its ETag.

    `newest` is the highest changeNumber seen for the session so far (this document's
    or an earlier one's), None when no document said.
    """

    key: str
    path: str
    body: bytes
    etag: str | None
    newest: int | None = None

    def document(self) -> dict[str, Any]:
        """The session document (parsed on demand: most are never needed)."""
        value = json.loads(self.body)  # a fresh copy: the caller may build on it
        assert isinstance(value, dict)  # only whole documents are stored
        return value


def change_number(value: Any) -> int | None:
    """A session document's changeNumber (None when it has no integer one)."""
    number = value.get("changeNumber") if isinstance(value, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def _is_whole(value: Any) -> bool:
    return isinstance(value, dict) and catalog.SESSION_DOCUMENT_KEYS <= value.keys()


def whole_session(body: bytes | None) -> dict[str, Any] | None:
    """The body as a whole session document (every top-level key the table's note
    requires), or None when it is something else: an element, a handle, junk."""
    if not body or body[:1] not in (b"{", b" ", b"\n", b"\r", b"\t"):
        return None
    value = jsonbody.parse(body)
    return value if _is_whole(value) else None


def _referenced_session(message: model.Request | model.Response) -> Resource | None:
    """The session a handle's `sessionRef` names, from a handle request or response."""
    if not message.body:
        return None
    value = message.json
    ref = value.get("sessionRef") if isinstance(value, dict) else None
    if not isinstance(ref, dict):
        return None
    parts = [ref.get("scid"), ref.get("templateName"), ref.get("name")]
    if not all(isinstance(p, str) and p for p in parts):
        return None
    scid, template, name = parts
    return Resource(Kind.SESSION, scid, template, name)


def _session_of(resource: Resource, response: model.Response) -> Resource | None:
    """The session an exchange is about: the request's own, else the one its
    Content-Location names (GET /handles/{id}/session answers with it)."""
    if resource.is_session_or_element:
        return resource
    location = response.headers.first("Content-Location")
    if location:
        named = resources.parse(location)
        if named.is_session_or_element:
            return named
    return None


class SessionTracker:
    """The last whole document and ETag of each session, bounded (least recently used
    sessions are forgotten first). Thread-safe."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions should be at least 1, not {max_sessions}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes should be at least 1, not {max_bytes}")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._sessions: OrderedDict[str, TrackedSession] = OrderedDict()
        self._checked: set[str] = set()  # keys whose document `observe` found whole
        self._gone: OrderedDict[str, None] = OrderedDict()  # sessions seen going away
        self._bytes = 0
        self._lock = threading.Lock()

    # -- state -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._sessions

    @property
    def size(self) -> int:
        """Bytes of documents held."""
        return self._bytes

    def get(self, key: str) -> TrackedSession | None:
        """The tracked session with this `Resource.key`, or None."""
        with self._lock:
            tracked = self._sessions.get(key.lower())
            if tracked is not None:
                self._sessions.move_to_end(tracked.key)
            return tracked

    def exists(self, key: str) -> bool | None:
        """Whether the session exists as far as the proxy has seen: True when it holds its
        document, False when it saw it go away (and nothing since), None when it does not
        know."""
        key = key.lower()
        with self._lock:
            if key in self._sessions:
                return True
            return False if key in self._gone else None

    def remember(self, key: str, path: str, body: bytes, etag: str | None) -> bool:
        """Store a whole session document (bytes as received) and its ETag.

        Returns False, storing nothing, for a document larger than the whole budget.
        """
        return self._store(key.lower(), path, body, etag, checked=False,
                           number=change_number(jsonbody.parse(body)))

    def _store(self, key: str, path: str, body: bytes, etag: str | None,
               checked: bool, number: int | None) -> bool:
        with self._lock:
            old = self._sessions.get(key)
            if old is not None and old.newest is not None:
                number = old.newest if number is None else max(number, old.newest)
            self._drop(key)
            self._gone.pop(key, None)
            if len(body) > self.max_bytes:
                return False
            self._sessions[key] = TrackedSession(key, path, bytes(body), etag, number)
            self._bytes += len(body)
            if checked:
                self._checked.add(key)
            while len(self._sessions) > self.max_sessions or self._bytes > self.max_bytes:
                self._drop(next(iter(self._sessions)))
            return True

    def forget(self, key: str) -> bool:
        """Forget a session; whether it was tracked."""
        with self._lock:
            return self._drop(key.lower())

    def gone(self, key: str) -> bool:
        """Forget a session the service said no longer exists; whether it was tracked."""
        key = key.lower()
        with self._lock:
            self._gone[key] = None
            self._gone.move_to_end(key)
            while len(self._gone) > self.max_sessions:
                self._gone.popitem(last=False)
            return self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._checked.clear()
            self._gone.clear()
            self._bytes = 0

    def _drop(self, key: str) -> bool:
        tracked = self._sessions.pop(key, None)
        if tracked is None:
            return False
        self._checked.discard(key)
        self._bytes -= len(tracked.body)
        return True

    # -- learning from exchanges ---------------------------------------------------------

    def observe(self, exchange: model.Exchange) -> Update:
        """Learn from one exchange the title (or the proxy itself) had with the service.

        Never raises on odd input; an exchange without a response changes nothing.
        """
        response = exchange.response
        if response is None:
            return Update.NONE
        request, status = exchange.request, response.status
        resource = exchange.resource
        if resource.kind is Kind.HANDLE and request.method == "POST" and 200 <= status < 300:
            ref = _referenced_session(request) or _referenced_session(response)
            return self._forgotten(ref.key) if ref is not None and ref.key else Update.NONE
        session = _session_of(resource, response)
        key = session.key if session is not None else None
        if session is None or key is None:
            return Update.NONE
        if status == 204:
            if classify.classify(exchange).id not in GONE_ENTRIES:
                return Update.NONE
            return Update.FORGOTTEN if self.gone(key) else Update.NONE
        etag = response.headers.first("ETag")
        if status in _SESSION_STATUSES and response.body:
            path = session.session_path
            assert path is not None
            if self._refresh(key, path, response.body, etag):
                return Update.STORED
            if _is_whole(response.json):
                stored = self._store(key, path, response.body, etag, checked=True,
                                     number=change_number(response.json))
                return Update.STORED if stored else Update.NONE
        tracked = self._sessions.get(key)
        if etag is not None and tracked is not None and tracked.etag != etag:
            return self._forgotten(key)
        return Update.NONE

    def _refresh(self, key: str, path: str, body: bytes, etag: str | None) -> bool:
        """When the session is stored already, as a document `observe` found whole, with
        these very bytes, ETag and path (a title polling an unchanged session), mark it
        most recently used, as storing it again would, without parsing it again; whether
        it was."""
        with self._lock:
            tracked = self._sessions.get(key)
            if (tracked is None or key not in self._checked or tracked.etag != etag
                    or tracked.path != path or len(body) > self.max_bytes
                    or tracked.body != body):
                return False
            self._sessions.move_to_end(key)
            return True

    def _forgotten(self, key: str) -> Update:
        return Update.FORGOTTEN if self.forget(key) else Update.NONE
