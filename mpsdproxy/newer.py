"""A forced 412 is a session someone else changed: the newer version, and staying true to it.

A real 412 to `If-Match: <etag>` means another client wrote first: the
service answers with the whole current session, whose `changeNumber` is
higher than the caller's, and its new ETag (catalog row
`412.if-match-session`). A forced 412 must say the same, or it cannot tell a
title that adopts the newer session from one that blindly resends its old
ETag. So `NewerSessions.make` builds the newer version from the tracked
document: `changeNumber` one higher than the newest the proxy has seen for
that session (from any client), and a fresh ETag.

From then on the proxy keeps the title's world consistent with that version,
until the session really changes on the service (an answer with an ETag other
than the one the service had):

- a write with the newer ETag goes to the service with the ETag the service
  knows (`Outgoing.request`): the title's retry succeeds;
- a write with a superseded ETag (the one the 412 refused, or an earlier
  newer one) is answered 412 again with the newer session (`Outgoing.answer`),
  as the service would answer a stale ETag;
- an answer that carries the service's ETag for that version (a read, a 304)
  reaches the title with the newer ETag and document (`incoming`).

Why only `If-Match`/`If-None-Match` may be mapped: the client library's
request signer hashes the policy version and timestamp, the method, the path
and query, the `Authorization` value, the extra headers the signature policy
names, and the body (xbox-live-api `Source/System/auth/Desktop/request_signer.cpp`,
`request_signer::hash_request`, ~L64-101). The precondition headers are not
among them (a policy's extra headers come from the title's network security
configuration; a policy naming If-Match would make the service refuse the
mapped write with 403, which the report then shows). So mapping `If-Match`
leaves the `Signature` valid, while the method, path, Authorization and body
never change. Nothing here imports mitmproxy.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from dataclasses import field

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy import sessions
from mpsdproxy.sessions import SessionTracker
from mpsdproxy.sessions import TrackedSession

__all__ = ["Newer", "Outgoing", "NewerSessions", "PRECONDITION_HEADERS"]

#: The request headers that carry an ETag the proxy may map (outside the signature).
PRECONDITION_HEADERS: tuple[str, ...] = ("If-Match", "If-None-Match")


@dataclass(slots=True)
class Newer:
    """The newer version of one session the proxy handed out, and the ETags it replaced."""

    key: str
    etag: str  # the newer version's ETag, made by the proxy
    real_etag: str  # the ETag the service knows for the version underneath
    rule: str  # the rule whose 412 handed it out (for provenance)
    superseded: set[str] = field(default_factory=set)  # ETags a title may no longer use


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What becomes of a request to a session with a newer version: sent with the ETag the
    service knows (`request`), answered 412 at once (`answer`), or left alone (neither)."""

    request: model.Request | None = None
    answer: model.Response | None = None
    newer: Newer | None = None


LEAVE = Outgoing()


def fresh_etag() -> str:
    """A quoted ETag no session has had."""
    return f'"{uuid.uuid4().hex}"'


def _document_with(tracked: TrackedSession, number: int) -> bytes:
    document = tracked.document()
    document["changeNumber"] = number
    return faults.encode_json(document)


class NewerSessions:
    """The newer versions handed out, per session (bounded, least recently used dropped).
    Thread-safe."""

    def __init__(self, tracker: SessionTracker, max_sessions: int = 10_000) -> None:
        self.tracker = tracker
        self.max_sessions = max_sessions
        self._newer: OrderedDict[str, Newer] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._newer)

    def make(self, key: str, rule: str) -> TrackedSession | None:
        """A newer version of the tracked session: changeNumber one above the newest seen,
        a fresh ETag; it becomes what the tracker holds. None when the proxy holds no
        document with an ETag for the session."""
        tracked = self.tracker.get(key)
        if tracked is None or tracked.etag is None:
            return None
        number = (tracked.newest or 0) + 1
        body = _document_with(tracked, number)
        etag = fresh_etag()
        with self._lock:
            newer = self._newer.get(tracked.key)
            if newer is None:
                newer = Newer(tracked.key, etag, tracked.etag, rule)
            else:
                newer.superseded.add(newer.etag)
                newer.etag, newer.rule = etag, rule
            newer.superseded.add(tracked.etag)
            newer.superseded.discard(etag)
            self._newer[tracked.key] = newer
            self._newer.move_to_end(tracked.key)
            while len(self._newer) > self.max_sessions:
                self._newer.popitem(last=False)
        self.tracker.remember(tracked.key, tracked.path, body, etag)
        return self.tracker.get(tracked.key)

    def get(self, key: str | None) -> Newer | None:
        if key is None:
            return None
        with self._lock:
            return self._newer.get(key.lower())

    def outgoing(self, request: model.Request) -> Outgoing:
        """What to do with a request, before anything else looks at it."""
        newer = self.get(request.resource.key) if self._newer else None
        if newer is None:
            return LEAVE
        headers = request.headers
        mapped = headers
        for name in PRECONDITION_HEADERS:
            value = headers.first(name)
            if value is None:
                continue
            if value == newer.etag:
                mapped = mapped.with_value(name, newer.real_etag)
            elif name == "If-Match" and value in newer.superseded:
                return Outgoing(answer=self._stale(newer), newer=newer)
        if mapped is headers:
            return LEAVE
        return Outgoing(request=request.replace(headers=mapped), newer=newer)

    def _stale(self, newer: Newer) -> model.Response | None:
        """The 412 a write with a superseded ETag gets: the newer session and its ETag."""
        tracked = self.tracker.get(newer.key)
        if tracked is None or tracked.etag != newer.etag:
            return None
        return faults.build("412.if-match-session", session=tracked.document(),
                            etag=newer.etag)

    def incoming(self, exchange: model.Exchange) -> model.Response | None:
        """The answer as the title must see it (None: unchanged). An answer with the
        service's ETag for the version underneath carries the newer ETag (and document,
        when it is a whole one); an answer with any other ETag for the session means it
        really changed: the newer version is dropped."""
        response = exchange.response
        if response is None or not self._newer:
            return None
        newer = self.get(exchange.resource.key)
        etag = response.headers.first("ETag")
        if newer is None or etag is None:
            return None
        if etag != newer.real_etag:
            self._drop(newer.key)
            return None
        headers = response.headers.with_value("ETag", newer.etag)
        if sessions.whole_session(response.body) is None:
            return response.replace(headers=headers)
        tracked = self.tracker.get(newer.key)
        if tracked is None or tracked.etag != newer.etag:
            return response.replace(headers=headers)
        body = tracked.body
        headers = headers.without("Content-Encoding")
        if "Content-Length" in headers:
            headers = headers.with_value("Content-Length", str(len(body)))
        return response.replace(headers=headers, body=body, encoded=None)

    def _drop(self, key: str) -> None:
        with self._lock:
            self._newer.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._newer.clear()
