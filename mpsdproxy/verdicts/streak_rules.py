"""The rules about runs of one answer to one client: GETs of a session answered as
missing again and again (`missing-session-polling`, which passes or fails), and 429s in
a row (`consecutive-429`, the Trace Analyzer's ThrottledCalls, which warns). Statuses
come from the catalog.
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
from mpsdproxy.verdicts.state import SessionKey

__all__ = ["MissingSessionRule", "Consecutive429Rule"]

THROTTLED: int = catalog.get("429.too-many-requests").status


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
    starts_on = frozenset({MISSING_SESSION.status})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.polls: Keyed[SessionKey, _Polls] = Keyed(self.max_keys)

    def quiet(self) -> bool:
        return not self.polls

    def feed(self, ex: Facts) -> Decided:
        missing = ex.status == MISSING_SESSION.status
        if not missing and not self.polls:
            return NOTHING  # not the row's answer, and no episode to end
        # The row's own situation: a GET (its methods) of a session (its target).
        if (ex.session is None or catalog.target_of(ex.resource) is not MISSING_SESSION.target
                or ex.method not in MISSING_SESSION.methods):
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
    starts_on = frozenset({THROTTLED})

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.runs: Keyed[HostKey, _Throttled] = Keyed(self.max_keys)

    def quiet(self) -> bool:
        return not self.runs

    def feed(self, ex: Facts) -> Decided:
        if ex.status != THROTTLED:
            if self.runs:
                self.runs.pop(ex.per_host)
            return NOTHING
        key = ex.per_host
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
