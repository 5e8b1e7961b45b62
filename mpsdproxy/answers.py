"""The answers a fired scenario rule gives: the table's row, the tracked session, the rule's edits.

The injector decides *that* a rule answers; this module decides *what* the
title then receives, as a `model.Response`, with no mitmproxy in sight:

- a status (or throttling) answers with `faults.build`, so the answer is the
  table's row: its content type, body kind and required headers, plus what the
  service puts on every answer (`service_headers`);
- a row that returns the session (412 to If-Match, 403 read-only, 200, 201)
  carries the whole document and ETag the proxy last saw for that session
  (`sessions.TrackedSession`); for a 412 to If-Match that is the newer session
  someone else wrote (`someone_else_wrote`, built by `newer.NewerSessions`).
  Without one there is no answer: the request goes on untouched and `Answer`
  says why, for the log. (The catalog keeps such rules from firing until the
  proxy has seen the session; a bodiless 412 instead would send the client
  library's MultiplayerManager into its empty-body failure branch,
  multiplayer_lobby_client.cpp ~L1208.);
- the rule's `body`, `content_type` and `headers` go on top (`with_overrides`),
  and in phase response they edit the real answer instead (`edit`).
"""

from __future__ import annotations

import email.utils
import time
import uuid
from dataclasses import dataclass

from mpsdproxy import catalog
from mpsdproxy import faults
from mpsdproxy import fgrl
from mpsdproxy import model
from mpsdproxy import scenario
from mpsdproxy.resources import Kind
from mpsdproxy.scenario import Phase
from mpsdproxy.sessions import TrackedSession

__all__ = [
    "Answer",
    "answer",
    "edit",
    "kind",
    "needs_session",
    "someone_else_wrote",
    "service_headers",
    "with_overrides",
]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a rule that answers gives one request.

    `response` is None when the row needs the session and the proxy holds none:
    the request then goes on untouched, and `missing` says why.
    """

    row: catalog.Entry
    response: model.Response | None
    missing: str | None = None


def service_headers(now: float | None = None) -> list[tuple[str, str]]:
    """What the service puts on every answer (protocol notes §2.2), so an injected answer
    looks like one from the service."""
    return [
        ("Date", email.utils.formatdate(time.time() if now is None else now, usegmt=True)),
        ("X-XblCorrelationId", str(uuid.uuid4())),
        ("X-Content-Type-Options", "nosniff"),
    ]


def needs_session(entry: catalog.Entry, fault: scenario.Fault) -> bool:
    """Whether answering with this row takes the tracked session: its document (unless
    the rule gives a body of its own) or its ETag (which the row must carry)."""
    if not entry.returns_session:
        return False
    return fault.body is None or "ETag" in entry.required_headers


def someone_else_wrote(entry: catalog.Entry, fault: scenario.Fault) -> bool:
    """Whether answering with this row means another client changed the session first: a
    412 that returns the session (the service's answer to a stale If-Match), unless the
    rule writes its own body."""
    return (entry.status == 412 and entry.returns_session and fault.body is None
            and "ETag" in entry.required_headers)


def _set(headers: model.Headers, name: str, value: str | None) -> model.Headers:
    """`name` set to `value` (None removes it), every earlier field of that name gone."""
    rest = headers.without(name)
    return rest if value is None else model.Headers((*rest, (name, value)))


def with_overrides(response: model.Response, fault: scenario.Fault) -> model.Response:
    """The rule's `body`, `content_type` and `headers` on top of the table's answer
    (a header given as null is removed)."""
    headers = response.headers
    if fault.content_type is not None:
        headers = _set(headers, "Content-Type", fault.content_type)
    for name, value in fault.headers:
        headers = _set(headers, name, value)
    body = response.body if fault.body is None else fault.body
    return model.Response(response.status, response.reason, headers, body)


def edit(response: model.Response, fault: scenario.Fault) -> model.Response:
    """Apply `body`, `content_type`, `headers` and `retry_after` to a real answer. A new
    body is sent as it is written, so the answer's Content-Encoding goes with the old one."""
    headers, body = response.headers, response.body
    if fault.body is not None:
        headers, body = headers.without("Content-Encoding"), fault.body
    if fault.content_type is not None:
        headers = headers.with_value("Content-Type", fault.content_type)
    if fault.retry_after is not None:
        headers = headers.with_value("Retry-After", str(fault.retry_after))
    for name, value in fault.headers:
        headers = headers.without(name) if value is None else headers.with_value(name, value)
    return model.Response(response.status, response.reason, headers, body)


def answer(
    request: model.Request,
    fault: scenario.Fault,
    tracked: TrackedSession | None,
    *,
    throttle: fgrl.Decision | None = None,
    now: float | None = None,
) -> Answer:
    """The table's answer to `request` for a fault that answers, overrides applied.

    `tracked` is the request's session as the title should now see it (None when
    unknown); `throttle` the decision of a throttle rule (its numbers go into the 429).
    """
    row = fault.row(request)
    if row is None:
        raise ValueError(f"the fault gives no status to answer with: {fault!r}")
    extra = service_headers(now)
    session, etag = None, None
    if needs_session(row, fault):
        if tracked is not None and tracked.etag is None and "ETag" in row.required_headers:
            return Answer(row, None, "it was seen without an ETag")
        if tracked is None:
            return Answer(row, None, "it names no session" if request.resource.key is None
                          else "the proxy has not seen the session")
        session = tracked.document() if fault.body is None else {}
        etag = tracked.etag
        if row.status < 300 and request.resource.kind is Kind.HANDLE_SESSION:
            # Where the session lives, which the library reads from an answer by handle;
            # the service sends none on the session's own URI (the public capture).
            extra.append(("Content-Location", tracked.path))
    elif row.returns_session:
        session = {}  # the rule's own body replaces it
    if row.status == 304 and tracked is not None and tracked.etag:
        extra.append(("ETag", tracked.etag))
    message = faults.encode_json(fgrl.message(throttle)) if throttle is not None else None
    retry_after = throttle.retry_after if throttle is not None else fault.retry_after
    response = faults.build(row, session=session, etag=etag, message=message,
                            retry_after=retry_after, extra_headers=extra)
    return Answer(row, with_overrides(response, fault))


def kind(fault: scenario.Fault, phase: Phase) -> str:
    """A one-word name for what the fault does, for provenance and logs."""
    if fault.connection:
        return fault.connection
    if fault.throttle is not None:
        return "throttle"
    if fault.status is not None:
        return "status"
    if fault.truncate:
        return "truncate"
    if phase is Phase.RESPONSE and (fault.body is not None or fault.headers
                                    or fault.content_type or fault.retry_after is not None):
        return "edit"
    return "delay"
