"""What the client library does, which the fault-handling verdicts judge a title against.

Each piece cites the source it follows: libHttpClient's retry schedule
(`least_wait`), its per-API Retry-After cache (`api_of`, `ApiKey`), and what a
write after a 412 shows about the title (`judge_write_after_412`: the client
library rebuilds the session from the 412's body and ETag,
multiplayer_session.cpp ~L1241, and MultiplayerManager adopts it,
multiplayer_session_writer.cpp ~L378).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NamedTuple

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.resources import Kind
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.state import Facts

__all__ = [
    "LIBRARY_RETRIES",
    "RETRY_DELAY_S",
    "RETRY_WINDOW_S",
    "MIN_CALL_S",
    "least_wait",
    "ApiKey",
    "api_of",
    "leaves",
    "canonical_body",
    "Refused412",
    "judge_write_after_412",
]

# ---------------------------------------------------------------- what the client library does
# libHttpClient's Source/HTTP/httpcall.cpp (commit 00505238, lines approximate).

#: The statuses libHttpClient retries (ShouldRetry ~L385-391).
LIBRARY_RETRIES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
#: The retry delay d (XblContextSettingsSetHttpRetryDelay: default and minimum 2 s).
RETRY_DELAY_S = 2.0
#: A call's retry window from its first attempt (XblContextSettingsSetHttpTimeoutWindow).
RETRY_WINDOW_S = 20.0
MAX_DELAY_S = 60.0  # MAX_DELAY_TIME_IN_SEC (~L10)
INTERNAL_ERROR_DELAY_S = 10.0  # MIN_DELAY_FOR_HTTP_INTERNAL_ERROR_IN_MS (~L11)
MIN_CALL_S = 5.0  # MIN_HTTP_TIMEOUT_IN_MS (~L16): no retry with this little time left


def least_wait(n: int, status: int | None, retry_after: int | None,
               delay: float = RETRY_DELAY_S) -> tuple[float, str]:
    """The shortest wait (s) libHttpClient takes before retry n (1 for the first), and why.

    ShouldRetry: retry n waits lerp(d^n, d^(n+1), jitter), capped at 60 s (~L406-414;
    n counts the attempts sent, m_iterationNumber ~L171): 2-4 s, 4-8 s, 8-16 s; with
    a Retry-After R, max(that, R x 1.0-1.2) (~L416-427); after a 500 at least 10 s
    (~L434-440).
    """
    wait, why = min(delay ** n, MAX_DELAY_S), f"retry {n} waits {delay:g}^{n} s"
    if status == 500 and wait < INTERNAL_ERROR_DELAY_S:
        wait, why = INTERNAL_ERROR_DELAY_S, "a 500 waits at least 10 s"
    if retry_after is not None and wait < retry_after:
        wait, why = float(retry_after), f"Retry-After {retry_after} s"
    return wait, why


class ApiKey(NamedTuple):
    """One user calling one API of one host: what libHttpClient keys its Retry-After cache by."""

    client: str
    host: str
    api: str


def api_of(ex: Facts) -> str:
    """The API a call belongs to: method, resource kind and session template, e.g.
    `PUT session lobbysession`, `GET member gamesession`, `POST handle activity`.

    libHttpClient keys its Retry-After cache by `retryAfterCacheId`, which XSAPI sets
    to one `xbox_live_api` id per service function (multiplayer_service.cpp:
    `get_current_session`, `write_session_using_subpath`, `set_activity`,
    `set_transfer_handle`, `set_search_handle`, `send_invites`, ...). On the wire
    that is the method and resource kind; POST /handles is one URI for four ids,
    told apart by the body's `type`. The template narrows it further than the
    library does (its GET id spans templates), so this never calls two requests the
    same API when the library would not.
    """
    resource = ex.resource
    parts = [ex.method, resource.kind.value]
    if resource.kind is Kind.UNKNOWN:
        parts.append(ex.place)
    elif resource.template:
        parts.append(resource.template.lower())
    if resource.kind is Kind.HANDLE and ex.method == "POST":
        document = ex.exchange.request.json
        kind = document.get("type") if isinstance(document, dict) else None
        if isinstance(kind, str):
            parts.append(kind.lower())
    return " ".join(parts)


def leaves(document: Any) -> dict[tuple[str, ...], str]:
    """A JSON document's leaves: the path of keys to each non-object value, and the
    value as canonical JSON (arrays are leaves). Not a JSON object: no leaves."""
    out: dict[tuple[str, ...], str] = {}
    if document is jsonbody.INVALID or not isinstance(document, dict):
        return out
    stack: list[tuple[tuple[str, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict) and value:
            stack.extend(((*path, str(k)), v) for k, v in value.items())
        else:
            out[path] = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return out


def canonical_body(request: model.Request) -> str | None:
    """A request body to compare: its JSON leaves, else the raw bytes; None when empty."""
    if not request.body:
        return None
    document = request.json
    return repr(request.body) if document is jsonbody.INVALID else repr(leaves(document))


# ---------------------------------------------------------------- a write after a 412
# XSAPI's write modes set the preconditions (multiplayer_service.cpp
# WriteSessionUsingSubpath): SynchronizedUpdate `If-Match: <ETag>` (or `If-None-Match: *`
# without one), UpdateExisting `If-Match: *`, CreateNew `If-None-Match: *`,
# UpdateOrCreateNew none.


@dataclass(slots=True)
class Refused412:
    """A session write answered 412, and what the same user did since."""

    seq: int
    sent: float
    received: float
    if_match: str | None
    if_none_match: str | None
    returned: str | None  # the ETag the 412 returned
    bodiless: bool  # 412.precondition-failed: no session and no ETag in it
    refused: str | None  # the refused write's body, canonical; None when it had none
    #: what the 412's session changed since the user's last view of it: path -> value
    #: there (None: removed); None when that view is unknown
    changed: dict[tuple[str, ...], str | None] | None
    where: str
    reread: int | None = None  # seq of a GET of the session after the 412
    reread_found: bool = False
    fresh: dict[str, int] = field(default_factory=dict)  # ETags answered since -> seq


def judge_write_after_412(stale: Refused412, ex: Facts) -> tuple[Status, str]:
    """The verdict on the user's next write to a session after a 412 on it, and why.

    - `If-Match` = the ETag the 412 returned, or one answered since the refused write
      was sent (a re-read, a concurrent write): PASS;
    - `If-Match: *` (update existing): PASS, the service never answers 412 to `*` on a
      session that exists; FAIL only when `*` itself got the 412 (there was no session)
      and is resent without re-reading;
    - `If-Match` = the refused one: FAIL (the stale ETag); one never seen: not applicable;
    - `If-None-Match: *` cannot overwrite anyone: PASS; the refused one resent: FAIL
      without a re-read or when the re-read found the session;
    - no precondition: PASS after a re-read; else FAIL when the body is the refused one
      (the stale document, written blind) or when it sets a field the 412's session
      changed since the user's last view of it to another value; else PASS (it adopted
      the 412's session). Element paths that differ (`members/me` written, `members/0`
      answered) never match, so this errs towards PASS.
    """
    after = f"after the 412 (record {stale.seq})"
    if ex.if_match is not None:
        return _if_match(stale, ex.if_match.strip(), after)
    if ex.if_none_match is not None:
        return _if_none_match(stale, ex.if_none_match.strip(), after)
    return _blind(stale, ex, after)


def _if_match(stale: Refused412, sent: str, after: str) -> tuple[Status, str]:
    if sent == "*":
        if stale.if_match == "*" and not stale.reread:
            return Status.FAIL, (f"resent If-Match: * {after} without re-reading the "
                                 "session (a 412 to * means there is none)")
        return Status.PASS, (f"wrote with If-Match: * (update existing) {after}; the "
                             "service does not answer 412 to * on a session that exists")
    if sent == stale.if_match and sent != stale.returned:
        return Status.FAIL, f"resent the stale ETag {sent} {after}"
    if sent == stale.returned:
        return Status.PASS, f"used the ETag the 412 returned ({sent})"
    if sent in stale.fresh:
        return Status.PASS, (f"used the ETag {sent} answered in record "
                             f"{stale.fresh[sent]}, newer than the refused write")
    return Status.NOT_APPLICABLE, (f"wrote with If-Match {sent} {after}, an ETag this "
                                   "recording never answered to the user")


def _if_none_match(stale: Refused412, sent: str, after: str) -> tuple[Status, str]:
    if stale.if_none_match is None or stale.if_none_match.strip() != sent:
        return Status.PASS, (f"wrote with If-None-Match: {sent} {after}, which cannot "
                             "overwrite anyone's change")
    if stale.reread and not stale.reread_found:
        return Status.PASS, (f"resent If-None-Match: {sent} after the re-read (record "
                             f"{stale.reread}) found no session")
    if stale.reread:
        return Status.FAIL, (f"resent If-None-Match: {sent} {after} though the re-read "
                             f"(record {stale.reread}) found the session")
    return Status.FAIL, (f"resent If-None-Match: {sent} {after} without re-reading the "
                         "session")


def _blind(stale: Refused412, ex: Facts, after: str) -> tuple[Status, str]:
    if stale.reread:
        return Status.PASS, f"followed a fresh GET (record {stale.reread}) {after}"
    if stale.refused is not None and canonical_body(ex.exchange.request) == stale.refused:
        return Status.FAIL, (f"wrote the refused document again {after}, with no "
                             "precondition and without re-reading the session")
    if stale.changed is None:
        return Status.PASS, f"did not resend the refused write {after}"
    overwritten = sorted("/".join(path) for path, value in
                         leaves(ex.exchange.request.json).items()
                         if path in stale.changed and stale.changed[path] != value)
    if overwritten:
        shown = ", ".join(overwritten[:3]) + (" ..." if len(overwritten) > 3 else "")
        return Status.FAIL, (f"overwrote {shown} {after} with no precondition: the "
                             "412's session had changed it since the user last saw it")
    return Status.PASS, (f"adopted the 412's session {after}: it overwrote none of the "
                         f"{len(stale.changed)} fields that changed in it")
