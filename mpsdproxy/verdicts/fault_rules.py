"""The fault-handling rules: did the title handle 503, 429, 412 and 409 as the service
asks and the client library does? Each occurrence passes or fails (the runs of one
answer, a missing session polled and 429s in a row, are `streak_rules`). Statuses come
from the catalog; the library's behaviour from `library` (sources cited there and here:
`httpcall.cpp` is libHttpClient's Source/HTTP/, the others xbox-live-api's
Source/Services/Multiplayer/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mpsdproxy import catalog
from mpsdproxy import jsonbody
from mpsdproxy.resources import Kind
from mpsdproxy.verdicts.base import DROPPED
from mpsdproxy.verdicts.base import MAX_EVIDENCE
from mpsdproxy.verdicts.base import MISSING_SESSION
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.library import LIBRARY_RETRIES
from mpsdproxy.verdicts.library import MIN_CALL_S
from mpsdproxy.verdicts.library import ApiKey
from mpsdproxy.verdicts.library import Refused412
from mpsdproxy.verdicts.library import api_of
from mpsdproxy.verdicts.library import canonical_body
from mpsdproxy.verdicts.library import judge_write_after_412
from mpsdproxy.verdicts.library import least_wait
from mpsdproxy.verdicts.library import leaves
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import Keyed
from mpsdproxy.verdicts.state import PlaceKey
from mpsdproxy.verdicts.state import RequestKey
from mpsdproxy.verdicts.state import SessionKey

__all__ = [
    "RetryAfterRule",
    "BackoffRule",
    "PreconditionRule",
    "ConflictRule",
]

#: The statuses whose rows carry Retry-After: 429 and 503 (read from the table).
RETRY_STATUSES: frozenset[int] = catalog.RETRY_AFTER_STATUSES
CONFLICT: int = catalog.get("409.conflict").status
PRECONDITION_FAILED: int = catalog.get("412.if-match-session").status
WRITE_METHODS: frozenset[str] = frozenset({"PUT", "POST", "DELETE", "PATCH"})
MAX_FRESH_ETAGS = 8  # ETags answered since a refused write kept per 412


@dataclass(slots=True)
class _Wait:
    seqs: tuple[int, ...]
    status: int
    seconds: int
    received: float
    deadline: float
    api: str
    where: str


class RetryAfterRule(BaseRule):
    """After a 503/429 with Retry-After N, the same user's next call to the same API.

    libHttpClient keeps a Retry-After per API (`retryAfterCacheId`, one `xbox_live_api`
    id per XSAPI function; httpcall.cpp ShouldRetry ~L461-470) and until it elapses
    fails calls to that API fast or delays them (ShouldFailFast ~L324-369); other APIs
    go on. So a call to the same API (`library.api_of`) sent after the answer arrived and
    before the deadline fails; the first one after it, or none, passes; other APIs are
    not judged. Session writes are never retried (`SetRetryAllowed(false)`,
    multiplayer_service.cpp WriteSessionUsingSubpath; ShouldRetry returns before
    caching, ~L373): not writing again passes; a title's own rewrite of that API
    within the wait fails, as the service asked it to wait. In-flight requests are
    no violation. `retry_after_scope: client` (default): per user and API, as the
    library; `resource`: per user and resource.
    """

    id = "retry-after"
    nothing = "no 503 or 429 carried a Retry-After"
    starts_on = RETRY_STATUSES

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waits: Keyed[ApiKey | PlaceKey, _Wait] = Keyed(self.max_keys)
        self.by_resource = self.settings.retry_after_scope == "resource"

    def quiet(self) -> bool:
        return not self.waits

    def feed(self, ex: Facts) -> Decided:
        retry_after = ex.retry_after if ex.status in RETRY_STATUSES else None
        if retry_after is None and not self.waits:
            return NOTHING  # nothing to wait for, and nothing asks for a wait
        api = api_of(ex)
        key = ex.per_place if self.by_resource else ApiKey(ex.client, ex.host, api)
        wait = self.waits.get(key)
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        if wait is not None and ex.start >= wait.received and ex.seq not in wait.seqs:
            self.waits.pop(key)
            out = [self._judge(key.client, wait, ex)]
            wait = None
        if retry_after is not None and ex.status is not None:
            self.seen += 1
            seqs = (*(wait.seqs if wait else ()), ex.seq)[-MAX_EVIDENCE:]
            deadline = ex.end + retry_after
            if wait is not None and wait.deadline > deadline:
                deadline = wait.deadline  # two answers in flight: the later deadline holds
            new = _Wait(seqs, ex.status, retry_after, ex.end, deadline, api, ex.where)
            evicted = self.waits.put(key, new, deadline)
            if evicted:
                out = [*out, *(self._quiet(k.client, w, DROPPED) for k, w in evicted)]
        return out

    def _judge(self, client: str, wait: _Wait, ex: Facts) -> Verdict:
        gap = ms(ex.start - wait.received)
        asked = f"the {wait.status} with Retry-After {wait.seconds} s (record {wait.seqs[-1]})"
        evidence = ((*wait.seqs, ex.seq), (gap,), client, wait.where, ex.start)
        if ex.start < wait.deadline:
            early = ms(wait.deadline - ex.start)
            return self.verdict(
                Status.FAIL,
                f"{ex.label} (record {ex.seq}), the same API ({wait.api}), was sent "
                f"{gap:.0f} ms after {asked}, {early:.0f} ms too early", *evidence)
        return self.verdict(
            Status.PASS,
            f"waited {gap:.0f} ms after {asked} before {ex.label} (record {ex.seq})", *evidence)

    def _quiet(self, client: str, wait: _Wait, why: str) -> Verdict:
        what = "that resource" if self.by_resource else f"the same API ({wait.api})"
        return self.verdict(
            Status.PASS,
            f"made no call to {what} after the {wait.status} with Retry-After "
            f"{wait.seconds} s (record {wait.seqs[-1]}): {why}",
            wait.seqs, (), client, wait.where, wait.deadline)

    def expire(self, now: float) -> Decided:
        return [self._quiet(k.client, w, f"quiet for the whole {w.seconds} s")
                for k, w in self.waits.due(now)]

    def finish(self) -> Decided:
        return [self._quiet(k.client, w, "the recording ended first")
                for k, w in self.waits.drain()]

    def summary(self) -> str:
        return f"every one of {self.seen} Retry-After waits was honoured"


@dataclass(slots=True)
class _Chain:
    seqs: list[int]
    gaps: list[float]
    first_start: float  # the first attempt: the library's window starts here
    last_end: float
    last_seq: int  # the last failed answer
    status: int | None
    retry_after: int | None  # of the last answer (a chain starts on one without)
    where: str
    retries: int = 0
    done: bool = False  # failed, or left to Retry-After honoured: no pass at the end


class BackoffRule(BaseRule):
    """Retries of one request (user, method, URI) after an answer libHttpClient retries
    (408, 429, 500, 502, 503, 504; httpcall.cpp ShouldRetry ~L385) without Retry-After.

    Retry n fails when it comes sooner after the failed answer than `library.least_wait`
    (d^n s capped at 60, d = 2: 2 s, 4 s, 8 s; 10 s after a 500; R after a Retry-After
    R), or when at that answer the call's window (20 s from its first attempt) had
    <= 5 s, or less than that wait + 5 s, left: the library had given up (~L449-457).
    Gaps run from the answer's end to the retry's start at the proxy, never shorter
    than the library's delay. The same request after the window is a new call. A call
    the library never retries (session PUT: `SetRetryAllowed(false)`) and the title
    resends is held to the same spacing. A retry before a mid-chain Retry-After is left
    to Retry-After honoured. No answer starts no chain (a network error and a call the
    title cancelled look alike). Settings `backoff_retry_delay_s` and
    `backoff_window_s` are d and the window.
    """

    id = "backoff"
    nothing = "no retryable failure (408, 429, 5xx) came without a Retry-After"
    starts_on = LIBRARY_RETRIES

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.chains: Keyed[RequestKey, _Chain] = Keyed(self.max_keys)
        self.delay = self.settings.backoff_retry_delay_s
        self.window = self.settings.backoff_window_s

    def quiet(self) -> bool:
        return not self.chains

    def feed(self, ex: Facts) -> Decided:
        if not self.chains:
            return self._start(ex)  # no chain to follow: only a failure starts one
        key = ex.request_key
        chain = self.chains.get(key)
        if chain is None or ex.start < chain.last_end or ex.seq in chain.seqs:
            return self._start(ex)
        if ex.start < chain.first_start + self.window:
            return self._retry(key, chain, ex)
        self.chains.pop(key)  # the window has passed: a new call by the title
        ended = self._end(key, chain, "then no retry within the window", None)
        return [*((ended,) if ended else ()), *self._start(ex)]

    def _start(self, ex: Facts) -> Decided:
        if ex.status not in LIBRARY_RETRIES or ex.retry_after is not None:
            return NOTHING
        self.seen += 1
        chain = _Chain([ex.seq], [], ex.start, ex.end, ex.seq, ex.status, None, ex.where)
        return self._put(ex.request_key, chain)

    def _put(self, key: RequestKey, chain: _Chain) -> Decided:
        evicted = self.chains.put(key, chain, chain.first_start + self.window)
        return [v for k, c in evicted if (v := self._end(k, c, DROPPED, None))]

    def _problem(self, chain: _Chain, n: int, gap_s: float) -> str | None:
        wait, why = least_wait(n, chain.status, chain.retry_after, self.delay)
        left = self.window - (chain.last_end - chain.first_start)
        failed = f"the {chain.status} (record {chain.last_seq})"
        if left <= MIN_CALL_S or left < wait + MIN_CALL_S:
            return (f"retry {n} came after the library gives up: {left:.1f} s of its "
                    f"{self.window:.0f} s window were left at {failed}, less than the "
                    f"{wait:.0f} s wait + {MIN_CALL_S:.0f} s")
        if gap_s < wait:
            return (f"retry {n} came {ms(gap_s):.0f} ms after {failed}; the library waits "
                    f"at least {ms(wait):.0f} ms ({why})")
        return None

    def _retry(self, key: RequestKey, chain: _Chain, ex: Facts) -> Decided:
        out: list[Verdict] = []
        gap_s = ex.start - chain.last_end
        chain.retries += 1
        if len(chain.seqs) < 4 * MAX_EVIDENCE:
            chain.seqs.append(ex.seq)
            chain.gaps.append(ms(gap_s))
        evidence = (chain.seqs, chain.gaps, key.client, ex.where, ex.start)
        if chain.retry_after is not None and gap_s < chain.retry_after and not chain.done:
            chain.done = True
            out.append(self.verdict(
                Status.NOT_APPLICABLE, f"{ex.label} (record {ex.seq}) came before the "
                f"Retry-After {chain.retry_after} s of record {chain.last_seq}: judged by "
                "Retry-After honoured", *evidence))
        problem = None if chain.done else self._problem(chain, chain.retries, gap_s)
        if problem:
            chain.done = True
            out.append(self.verdict(Status.FAIL, f"{ex.label}: {problem}", *evidence))
        if ex.status in LIBRARY_RETRIES:
            chain.last_end, chain.last_seq, chain.status = ex.end, ex.seq, ex.status
            chain.retry_after = ex.retry_after
            out.extend(self._put(key, chain))
            return out
        self.chains.pop(key)
        ended = f"then got {ex.status}" if ex.status is not None else "then got no response"
        result = self._end(key, chain, ended, ex.start)
        if result is not None:
            out.append(result)
        return out

    def _end(self, key: RequestKey, chain: _Chain, how: str,
             when: float | None) -> Verdict | None:
        if chain.done:
            return None
        if chain.retries == 0:
            reason = f"did not retry the request answered {chain.status} (record {chain.seqs[0]})"
        else:
            waits = ", ".join(f"{g:.0f}" for g in chain.gaps)
            reason = (f"{chain.retries} retries after the failure (record "
                      f"{chain.seqs[0]}), waits {waits} ms as the library's "
                      f"schedule allows, {how}")
        if when is None:
            when = chain.first_start + self.window
        return self.verdict(Status.PASS, reason, chain.seqs, chain.gaps, key.client,
                            chain.where, when)

    def expire(self, now: float) -> Decided:
        quiet = f"then no retry within the {self.window:.0f} s window"
        return [v for k, c in self.chains.due(now) if (v := self._end(k, c, quiet, None))]

    def finish(self) -> Decided:
        ended = "then the recording ended"
        return [v for k, c in self.chains.drain() if (v := self._end(k, c, ended, None))]

    def summary(self) -> str:
        return f"all {self.seen} retryable failures were retried as the library's schedule allows"


class PreconditionRule(BaseRule):
    """After a 412 on a session, the same user's next write to that session: one verdict.

    A 412 on a session write is not an error to XSAPI: the session is rebuilt from the
    412's body, ETag and Date (multiplayer_service.cpp WriteSessionUsingSubpath; "Still
    must return latest session to allow retries", MultiplayerWriteSessionHelper;
    multiplayer_session.cpp ~L1241, OutOfSync), MultiplayerManager adopts it
    (multiplayer_session_writer.cpp ~L378), and titles re-apply their change and write
    again. `library.judge_write_after_412` decides on that write, with the re-read, the
    ETags answered since and the fields the 412's session changed since the user's last
    view of it (the last session document answered to the user). No later write: after
    a bodiless 412 (the library reports the failure; MultiplayerManager's lobby client
    takes its failure branch) a pass, else not applicable. A write in flight when the
    412 came is not its answer.
    """

    id = "412-handled"
    nothing = "no write to a session was answered 412"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[SessionKey, Refused412] = Keyed(self.max_keys)
        #: the last session document answered to the user, as sent (parsed only at a
        #: 412), and when it was received: a plain pair, kept for every session answer
        self.views: Keyed[tuple[str, str], tuple[bytes, float]] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        session = ex.session
        if session is None:
            return NOTHING
        # A SessionKey's fields as a plain pair (equal to it, so it finds a pending 412):
        # the named key is built only for a 412 kept, whose evicted keys name the user.
        key = (ex.client, session)
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        stale = self.pending.get(key) if self.pending else None
        if stale is not None and ex.seq != stale.seq:
            out = self._follow(key, stale, ex)
        if ex.status == PRECONDITION_FAILED:
            self.seen += 1
            new = self._stale(key, ex)
            evicted = self.pending.put(SessionKey(ex.client, session), new,
                                       ex.end + self.settings.precondition_window_s)
            out = [*out, *(self._unjudged(k.client, s, DROPPED) for k, s in evicted)]
        self._remember(key, ex)
        return out

    def _remember(self, key: tuple[str, str], ex: Facts) -> None:
        """Keep the last session document answered to the user (a 412's too)."""
        response = ex.exchange.response
        if (ex.resource.kind is Kind.SESSION and response is not None and response.body
                and ex.status is not None and (200 <= ex.status < 300
                                               or ex.status == PRECONDITION_FAILED)):
            self.views.put(key, (response.body, ex.end),
                           ex.end + self.settings.precondition_window_s)

    def _stale(self, key: tuple[str, str], ex: Facts) -> Refused412:
        response = ex.exchange.response
        current = response.json if response is not None and response.body else jsonbody.INVALID
        view = self.views.get(key)
        changed = None
        if isinstance(current, dict) and view is not None and view[1] <= ex.start:
            now, then = leaves(current), leaves(jsonbody.parse(view[0]))
            changed = {p: now.get(p) for p in now.keys() | then.keys()
                       if now.get(p) != then.get(p)}
        return Refused412(ex.seq, ex.start, ex.end, ex.if_match, ex.if_none_match, ex.etag,
                      not isinstance(current, dict) and ex.etag is None,
                          canonical_body(ex.exchange.request),
                      changed, ex.where)

    def _follow(self, key: tuple[str, str], stale: Refused412, ex: Facts) -> Decided:
        if (ex.etag and ex.status is not None and 200 <= ex.status < 300
                and ex.end >= stale.sent and len(stale.fresh) < MAX_FRESH_ETAGS):
            stale.fresh.setdefault(ex.etag, ex.seq)
        if ex.start < stale.received:
            return NOTHING  # in flight when the 412 came: not its answer
        if ex.method == "GET":
            if (ex.resource.kind is Kind.SESSION and ex.status is not None
                    and catalog.succeeded(ex.status)):
                stale.reread = ex.seq
                stale.reread_found = ex.status != MISSING_SESSION.status
            return NOTHING
        if ex.method not in WRITE_METHODS:
            return NOTHING
        self.pending.pop(key)
        status, reason = judge_write_after_412(stale, ex)
        seqs = (stale.seq, *((stale.reread,) if stale.reread else ()), ex.seq)
        return [self.verdict(status, f"{ex.label} (record {ex.seq}) {reason}", seqs,
                             (ms(ex.start - stale.received),), ex.client, stale.where,
                             ex.start)]

    def _unjudged(self, client: str, stale: Refused412, why: str) -> Verdict:
        if stale.bodiless:
            return self.verdict(Status.PASS,
                                f"did not write to the session again after the bodiless 412 "
                                f"(record {stale.seq}): {why}", (stale.seq,), (), client,
                                stale.where, stale.received)
        return self.verdict(Status.NOT_APPLICABLE,
                            f"no later write to the session after the 412 (record {stale.seq}): "
                            f"{why}", (stale.seq,), (), client, stale.where, stale.received)

    def expire(self, now: float) -> Decided:
        self.views.due(now)
        window = f"none within {self.settings.precondition_window_s:.0f} s"
        return [self._unjudged(k.client, s, window) for k, s in self.pending.due(now)]

    def finish(self) -> Decided:
        self.views.drain()
        return [self._unjudged(k.client, s, "the recording ended first")
                for k, s in self.pending.drain()]

    def summary(self) -> str:
        return f"all {self.seen} 412s were followed by a correct write"


@dataclass(slots=True)
class _Conflict:
    seq: int
    received: float
    body_hash: int
    where: str


class ConflictRule(BaseRule):
    """After a 409, the next request with the same method and URI must differ in its body."""

    id = "409-not-retried"
    nothing = "no request was answered 409"
    starts_on = frozenset({CONFLICT})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[RequestKey, _Conflict] = Keyed(self.max_keys)

    def quiet(self) -> bool:
        return not self.pending

    def feed(self, ex: Facts) -> Decided:
        if ex.status != CONFLICT and not self.pending:
            return NOTHING
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        key = ex.request_key
        conflict = self.pending.get(key)
        if conflict is not None and ex.start >= conflict.received and ex.seq != conflict.seq:
            self.pending.pop(key)
            gap = ms(ex.start - conflict.received)
            evidence = ((conflict.seq, ex.seq), (gap,), key.client, conflict.where, ex.start)
            if ex.body_hash == conflict.body_hash:
                out = [self.verdict(
                    Status.FAIL,
                    f"{ex.label} (record {ex.seq}) re-sent the request answered 409 (record "
                    f"{conflict.seq}) unchanged, {gap:.0f} ms later", *evidence)]
            else:
                out = [self.verdict(
                    Status.PASS,
                    f"{ex.label} (record {ex.seq}) changed the body after the 409 (record "
                    f"{conflict.seq})", *evidence)]
        if ex.status == CONFLICT:
            self.seen += 1
            new = _Conflict(ex.seq, ex.end, ex.body_hash, ex.where)
            evicted = self.pending.put(key, new, ex.end + self.settings.conflict_window_s)
            out = [*out, *(self._quiet(k, c, DROPPED) for k, c in evicted)]
        return out

    def _quiet(self, key: RequestKey, c: _Conflict, why: str) -> Verdict:
        return self.verdict(Status.PASS,
                            f"did not send {key.method} {c.where} again after the 409 (record "
                            f"{c.seq}): {why}", (c.seq,), (), key.client, c.where, c.received)

    def expire(self, now: float) -> Decided:
        window = f"quiet for {self.settings.conflict_window_s:.0f} s"
        return [self._quiet(k, c, window) for k, c in self.pending.due(now)]

    def finish(self) -> Decided:
        return [self._quiet(k, c, "the recording ended") for k, c in self.pending.drain()]

    def summary(self) -> str:
        return f"none of {self.seen} requests answered 409 was re-sent unchanged"
