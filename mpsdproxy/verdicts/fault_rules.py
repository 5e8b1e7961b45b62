"""The fault-handling rules: did the title handle 503, 429, 412, 409 and a missing
session the way the service asks? Each occurrence passes or fails (Consecutive
429s, the Trace Analyzer's throttling rule, warns).

Which statuses these are is read from the catalog, never written here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import catalog
from mpsdproxy.verdicts.base import DROPPED
from mpsdproxy.verdicts.base import MAX_EVIDENCE
from mpsdproxy.verdicts.base import MISSING_SESSION
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import gaps
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import HostKey
from mpsdproxy.verdicts.state import Keyed
from mpsdproxy.verdicts.state import PlaceKey
from mpsdproxy.verdicts.state import RequestKey
from mpsdproxy.verdicts.state import SessionKey

__all__ = [
    "RetryAfterRule",
    "BackoffRule",
    "PreconditionRule",
    "ConflictRule",
    "MissingSessionRule",
    "Consecutive429Rule",
]

#: The statuses whose rows carry Retry-After: 429 and 503 (read from the table).
RETRY_STATUSES: frozenset[int] = catalog.RETRY_AFTER_STATUSES
THROTTLED: int = catalog.get("429.too-many-requests").status
CONFLICT: int = catalog.get("409.conflict").status
PRECONDITION_FAILED: int = catalog.get("412.if-match-session").status
WRITE_METHODS: frozenset[str] = frozenset({"PUT", "POST", "DELETE", "PATCH"})


@dataclass(slots=True)
class _Wait:
    seqs: tuple[int, ...]
    status: int
    seconds: int
    received: float
    deadline: float
    host: str
    where: str


class RetryAfterRule(BaseRule):
    """After a 503/429 with Retry-After N, nothing from that client to that host for N s.

    A request the client sent before it received the answer (one already in
    flight) is no violation; a request sent after it and before the deadline is.
    With `retry_after_scope: resource` only the same resource counts.
    """

    id = "retry-after"
    nothing = "no 503 or 429 carried a Retry-After"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.waits: Keyed[HostKey | PlaceKey, _Wait] = Keyed(self.max_keys)
        self.by_resource = self.settings.retry_after_scope == "resource"

    def feed(self, ex: Facts) -> Decided:
        retry_after = ex.retry_after if ex.status in RETRY_STATUSES else None
        if retry_after is None and not self.waits:
            return NOTHING  # nothing to wait for, and nothing asks for a wait
        key = ex.per_place if self.by_resource else ex.per_host
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
            new = _Wait(seqs, ex.status, retry_after, ex.end, deadline, ex.host, ex.where)
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
                f"{ex.label} (record {ex.seq}) was sent {gap:.0f} ms after {asked}, "
                f"{early:.0f} ms too early", *evidence)
        return self.verdict(
            Status.PASS,
            f"waited {gap:.0f} ms after {asked} before {ex.label} (record {ex.seq})", *evidence)

    def _quiet(self, client: str, wait: _Wait, why: str) -> Verdict:
        where = "that resource" if self.by_resource else (wait.host or "the service")
        return self.verdict(
            Status.PASS,
            f"sent nothing to {where} after the {wait.status} with Retry-After "
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
    last_end: float
    status: int | None
    where: str
    retries: int = 0
    prev_gap: float | None = None
    failed: bool = False


class BackoffRule(BaseRule):
    """Retries (same client, method and URI) after a 503/429 without Retry-After.

    Each wait must be at least `backoff_min_gap_ms`, at least `backoff_growth`
    times the wait before it, and there may be at most `backoff_max_retries`.
    A chain ends with an answer that is not a 503/429 without Retry-After, or
    after `backoff_idle_s` without a retry.
    """

    id = "backoff"
    nothing = "no 503 or 429 came without a Retry-After"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.chains: Keyed[RequestKey, _Chain] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        key = ex.request_key
        chain = self.chains.get(key) if self.chains else None
        if chain is not None and ex.start >= chain.last_end and ex.seq not in chain.seqs:
            return self._retry(key, chain, ex)
        if ex.status in RETRY_STATUSES and ex.retry_after is None:
            self.seen += 1
            return self._put(key, _Chain([ex.seq], [], ex.end, ex.status, ex.where))
        return NOTHING

    def _put(self, key: RequestKey, chain: _Chain) -> Decided:
        evicted = self.chains.put(key, chain, chain.last_end + self.settings.backoff_idle_s)
        return [v for k, c in evicted if (v := self._end(k, c, DROPPED, None))]

    def _problem(self, chain: _Chain, gap: float) -> str | None:
        s = self.settings
        n = chain.retries
        if gap < s.backoff_min_gap_ms:
            return (f"retry {n} came {gap:.0f} ms after the {chain.status} "
                    f"(a tight retry: at least {s.backoff_min_gap_ms:.0f} ms expected)")
        if chain.prev_gap is not None and gap < chain.prev_gap * s.backoff_growth:
            return (f"the wait before retry {n} shrank from {chain.prev_gap:.0f} ms to "
                    f"{gap:.0f} ms (backoff should grow)")
        if n > s.backoff_max_retries:
            return f"{n} retries of one request (at most {s.backoff_max_retries} expected)"
        return None

    def _retry(self, key: RequestKey, chain: _Chain, ex: Facts) -> Decided:
        out: list[Verdict] = []
        gap = ms(ex.start - chain.last_end)
        chain.retries += 1
        if len(chain.seqs) < 4 * MAX_EVIDENCE:
            chain.seqs.append(ex.seq)
            chain.gaps.append(gap)
        problem = self._problem(chain, gap)
        chain.prev_gap = gap
        if problem and not chain.failed:
            chain.failed = True
            out.append(self.verdict(Status.FAIL, f"{ex.label}: {problem}", chain.seqs,
                                    chain.gaps, key.client, ex.where, ex.start))
        if ex.status in RETRY_STATUSES and ex.retry_after is None:
            chain.last_end = ex.end
            chain.status = ex.status
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
        if chain.failed:
            return None
        if chain.retries == 0:
            reason = f"did not retry the request answered {chain.status} (record {chain.seqs[0]})"
        else:
            waits = ", ".join(f"{g:.0f}" for g in chain.gaps)
            reason = (f"{chain.retries} retries after the {chain.status} (record "
                      f"{chain.seqs[0]}), waits {waits} ms, {how}")
        if when is None:
            when = chain.last_end + self.settings.backoff_idle_s
        return self.verdict(Status.PASS, reason, chain.seqs, chain.gaps, key.client,
                            chain.where, when)

    def expire(self, now: float) -> Decided:
        quiet = f"then quiet for {self.settings.backoff_idle_s:.0f} s"
        return [v for k, c in self.chains.due(now) if (v := self._end(k, c, quiet, None))]

    def finish(self) -> Decided:
        ended = "then the recording ended"
        return [v for k, c in self.chains.drain() if (v := self._end(k, c, ended, None))]

    def summary(self) -> str:
        return f"all {self.seen} failures without Retry-After were retried with backoff"


@dataclass(slots=True)
class _Stale:
    seq: int
    received: float
    if_match: str | None
    if_none_match: str | None
    returned: str | None  # the ETag the 412 returned
    where: str
    reread: int | None = None  # seq of a GET of the session after the 412


class PreconditionRule(BaseRule):
    """After a 412 on a session, the client's next write to that session.

    It passes when it uses the ETag the 412 returned, or follows a fresh GET
    of the session; it fails when it resends the stale ETag (or the
    If-None-Match that failed) or writes blind without re-reading.
    """

    id = "412-handled"
    nothing = "no write to a session was answered 412"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[SessionKey, _Stale] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        if ex.session is None:
            return NOTHING
        if ex.status != PRECONDITION_FAILED and not self.pending:
            return NOTHING
        out: list[Verdict] | tuple[Verdict, ...] = NOTHING
        key = SessionKey(ex.client, ex.session)
        stale = self.pending.get(key)
        if stale is not None and ex.start >= stale.received and ex.seq != stale.seq:
            if ex.method == "GET" and ex.status is not None and ex.status < 400:
                stale.reread = ex.seq
            elif ex.method in WRITE_METHODS:
                self.pending.pop(key)
                out = [self._judge(key.client, stale, ex)]
        if ex.status == PRECONDITION_FAILED:
            self.seen += 1
            new = _Stale(ex.seq, ex.end, ex.if_match, ex.if_none_match, ex.etag, ex.where)
            evicted = self.pending.put(key, new, ex.end + self.settings.precondition_window_s)
            out = [*out, *(self._unjudged(k.client, s, DROPPED) for k, s in evicted)]
        return out

    def _judge(self, client: str, stale: _Stale, ex: Facts) -> Verdict:
        gap = (ms(ex.start - stale.received),)
        seqs = (stale.seq, *((stale.reread,) if stale.reread else ()), ex.seq)
        after = f"after the 412 (record {stale.seq})"

        def judged(status: Status, reason: str) -> Verdict:
            return self.verdict(status, f"{ex.label} (record {ex.seq}) {reason}", seqs, gap,
                                client, stale.where, ex.start)

        resent = (stale.if_match and ex.if_match == stale.if_match
                  and stale.if_match != stale.returned)
        if resent and stale.if_match != "*":
            return judged(Status.FAIL, f"resent the stale ETag {stale.if_match} {after}")
        if resent and not stale.reread:
            return judged(Status.FAIL, f"resent If-Match: * {after} without re-reading the "
                                       "session")
        if stale.if_none_match and ex.if_none_match == stale.if_none_match and not stale.reread:
            return judged(Status.FAIL, f"resent If-None-Match: {stale.if_none_match} {after} "
                                       "without re-reading the session")
        if stale.returned and ex.if_match == stale.returned:
            return judged(Status.PASS, f"used the ETag the 412 returned ({stale.returned})")
        if stale.reread:
            return judged(Status.PASS, f"followed a fresh GET (record {stale.reread}) {after}")
        if stale.returned is None:
            return judged(Status.PASS, f"did not resend the failed precondition {after}")
        sent = f"If-Match {ex.if_match}" if ex.if_match else "no If-Match"
        return judged(Status.FAIL, f"wrote with {sent} {after} instead of the ETag it returned "
                                   f"({stale.returned}), without re-reading the session")

    def _unjudged(self, client: str, stale: _Stale, why: str) -> Verdict:
        return self.verdict(Status.NOT_APPLICABLE,
                            f"no later write to the session after the 412 (record {stale.seq}): "
                            f"{why}", (stale.seq,), (), client, stale.where, stale.received)

    def expire(self, now: float) -> Decided:
        window = f"none within {self.settings.precondition_window_s:.0f} s"
        return [self._unjudged(k.client, s, window) for k, s in self.pending.due(now)]

    def finish(self) -> Decided:
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

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[RequestKey, _Conflict] = Keyed(self.max_keys)

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


@dataclass(slots=True)
class _Polls:
    recent: deque[tuple[float, int]]
    first: int
    where: str
    count: int = 0
    flagged: bool = False


class MissingSessionRule(BaseRule):
    """GETs of one session answered as the MISSING_SESSION row says, per client.

    More than `missing_session_max_gets` of them within
    `missing_session_window_s` fails, once per episode; an episode that
    repeated but stayed under the rate passes when it ends (the session was
    found, or the client stopped asking).
    """

    id = "missing-session-polling"
    nothing = f"no GET of a session was answered {MISSING_SESSION.id}"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.polls: Keyed[SessionKey, _Polls] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        # The row's own situation: a GET (its methods) of a session (its target).
        if (ex.session is None or catalog.target_of(ex.resource) is not MISSING_SESSION.target
                or ex.method not in MISSING_SESSION.methods):
            return NOTHING
        missing = ex.status == MISSING_SESSION.status
        if not missing and not self.polls:
            return NOTHING
        key = SessionKey(ex.client, ex.session)
        polls = self.polls.get(key)
        if not missing:
            if polls is None:
                return NOTHING
            self.polls.pop(key)
            return [v for v in (self._episode(key, polls, "then the session was found"),) if v]
        self.seen += 1
        s = self.settings
        if polls is None:
            polls = _Polls(deque(maxlen=s.missing_session_max_gets + 1), ex.seq, ex.where)
        polls.recent.append((ex.start, ex.seq))
        polls.count += 1
        out: list[Verdict] = []
        span = polls.recent[-1][0] - polls.recent[0][0]
        if (len(polls.recent) > s.missing_session_max_gets
                and span <= s.missing_session_window_s and not polls.flagged):
            polls.flagged = True
            out.append(self.verdict(
                Status.FAIL,
                f"{len(polls.recent)} GETs of {ex.where} answered {MISSING_SESSION.id} "
                f"within {ms(span):.0f} ms (at most {s.missing_session_max_gets} per "
                f"{s.missing_session_window_s:.0f} s)",
                [q for _, q in polls.recent], gaps([t for t, _ in polls.recent]), key.client,
                ex.where, ex.start))
        for k, p in self.polls.put(key, polls, ex.start + s.missing_session_window_s):
            v = self._episode(k, p, DROPPED)
            if v:
                out.append(v)
        return out

    def _episode(self, key: SessionKey, polls: _Polls, how: str) -> Verdict | None:
        """A pass for a polling episode that repeated but stayed under the rate."""
        if polls.flagged or polls.count < 2:
            return None
        s = self.settings
        last_time, last_seq = polls.recent[-1]
        return self.verdict(
            Status.PASS,
            f"{polls.count} GETs of {polls.where} answered {MISSING_SESSION.id}, never more than "
            f"{s.missing_session_max_gets} in {s.missing_session_window_s:.0f} s; {how}",
            (polls.first, last_seq), (), key.client, polls.where, last_time)

    def expire(self, now: float) -> Decided:
        how = "then it stopped asking"
        return [v for k, p in self.polls.due(now) if (v := self._episode(k, p, how))]

    def finish(self) -> Decided:
        how = "then the recording ended"
        return [v for k, p in self.polls.drain() if (v := self._episode(k, p, how))]

    def summary(self) -> str:
        s = self.settings
        return (f"{self.seen} GETs answered {MISSING_SESSION.id}, never more than "
                f"{s.missing_session_max_gets} per {s.missing_session_window_s:.0f} s")


@dataclass(slots=True)
class _Throttled:
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    reported: bool = False


class Consecutive429Rule(BaseRule):
    """The Trace Analyzer's ThrottledCalls: two or more 429s in a row to one client and host."""

    id = "consecutive-429"
    nothing = "no request was answered 429"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.runs: Keyed[HostKey, _Throttled] = Keyed(self.max_keys)

    def feed(self, ex: Facts) -> Decided:
        key = ex.per_host
        if ex.status != THROTTLED:
            if self.runs:
                self.runs.pop(key)
            return NOTHING
        self.seen += 1
        run = self.runs.get(key) or _Throttled()
        if len(run.seqs) < MAX_EVIDENCE:
            run.seqs.append(ex.seq)
            run.times.append(ex.start)
        out: Decided = NOTHING
        if len(run.seqs) >= 2 and not run.reported:
            run.reported = True
            out = [self.verdict(
                Status.WARN,
                f"{len(run.seqs)} calls in a row answered 429 (records "
                f"{', '.join(map(str, run.seqs))}): the title is not handling throttling",
                run.seqs, gaps(run.times), ex.client, ex.host, ex.start)]
        self.runs.put(key, run, ex.start + 3600)
        return out

    def expire(self, now: float) -> Decided:
        self.runs.due(now)
        return NOTHING

    def summary(self) -> str:
        return f"each of {self.seen} 429s was followed by a call that was not throttled"
