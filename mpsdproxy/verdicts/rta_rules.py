"""The Real-Time Activity verdicts: does the title listen to its shoulder taps as the library does?

MultiplayerManager learns that a session changed only from RTA: a shoulder tap
on the websocket (`wss://rta.xboxlive.com/connect`, `rta.py`) names the
session and its new changeNumber. What the client library does with it
(microsoft/xbox-live-api, lines approximate) is what these rules judge:

- `tap-read` (TapReadRule): `MultiplayerSessionWriter::OnSessionChanged`
  (Source/Services/Multiplayer/Manager/multiplayer_session_writer.cpp ~L385-405)
  GETs the session at once when the tap's changeNumber is newer than its copy;
  with a write in flight it waits for that write, and GETs only if the write's
  answer is still older than the tap (`HandleWriteSessionResult` ~L355-380). A
  tap no newer than the copy is ignored. So: a GET of the session that starts
  after the tap, or an answer carrying the tapped changeNumber or a newer one,
  within `rta_read_within_s` (counted from the end of a write in flight at the
  tap) passes; neither fails. A title that never had the session is not judged
  (the library has no copy to compare: `latestSession != nullptr`).
- `rta-reconnect` (ReconnectRule): `Connection::DisconnectHandler`
  (Source/Services/RealTimeActivityManager/real_time_activity_connection.cpp
  ~L680-760) keeps every subscription and calls `ScheduleConnect` (~L650-680),
  which waits min(n^2, 60) s before attempt n+1, n counting attempts since the
  last successful connect: the first reconnect goes at once, then 1, 4, 9 ... s
  after each failure. Once connected, `ConnectCompleteHandler` (~L590-645) sends
  a subscribe for every subscription it holds. So after the service ends a
  websocket that had a subscription (a close frame from the server side, or
  the connection's end), each attempt coming before its wait fails (it hammers
  the service), none by its scheduled time plus `rta_reconnect_late_s` fails,
  and a 101 followed within `rta_resubscribe_within_s` by a subscribe to every
  URI it had passes. A close the title sent itself (`Connection::Cleanup`: the
  last subscription removed) asks for nothing.
- `rta-resync` (ResyncRule): a resync message ([4], `WebsocketMessageReceived`
  ~L770) reaches `MultiplayerSessionWriter::Resync` (~L430-460), which acts as
  a tap one above the copy's changeNumber: every session the title follows is
  read again (a GET, or a write whose answer is the current session), within
  `rta_read_within_s`; the library folds resyncs that come within one second
  into one, so a resync while one is being judged joins it.

A verdict names the websocket messages and the HTTP exchanges behind it by
their record seq numbers. The rules also take `Listening` (rta_state.py), the
titles' websockets and session views, which the engine keeps up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import rta
from mpsdproxy.resources import Kind
from mpsdproxy.verdicts.base import DROPPED
from mpsdproxy.verdicts.base import NOTHING
from mpsdproxy.verdicts.base import BaseRule
from mpsdproxy.verdicts.base import Concern
from mpsdproxy.verdicts.base import Decided
from mpsdproxy.verdicts.base import Status
from mpsdproxy.verdicts.base import Verdict
from mpsdproxy.verdicts.base import ms
from mpsdproxy.verdicts.rta_state import Listening
from mpsdproxy.verdicts.rta_state import RtaEvent
from mpsdproxy.verdicts.rta_state import answered_number
from mpsdproxy.verdicts.rta_state import keys_of
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import Keyed

__all__ = ["RECONNECT_CAP_S", "TOO_SOON", "reconnect_wait", "RtaRule", "WaitingRule", "TapReadRule",
           "ReconnectRule", "ResyncRule", "polling_reason"]

#: ScheduleConnect's cap on the wait between connect attempts.
RECONNECT_CAP_S = 60.0
#: An attempt sooner than this share of its scheduled wait is too soon (timers are not exact).
TOO_SOON = 0.9


def reconnect_wait(attempt: int) -> float:
    """The wait (s) ScheduleConnect takes before the attempt after `attempt` failed ones
    since the last successful connect: min(n^2, 60) s, so 0, 1, 4, 9 ... 60."""
    return min(float(attempt * attempt), RECONNECT_CAP_S)


class RtaRule(BaseRule):
    """A rule that reads websocket messages and RTA handshakes too.

    The engine hands every rule of this kind its one `Listening` (`listening`), and
    calls `feed_message` for each RTA websocket message and `handshake` for each
    `GET /connect`, besides `feed` for each MPSD exchange.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.listening = Listening(self.max_keys)
        self.heard = 0.0  # the latest time of a message or handshake fed

    @property
    def clock(self) -> float:
        """The latest time fed: what `finish` knows of where the recording ended."""
        return self.heard

    def tick(self, time: float) -> None:
        self.heard = max(self.heard, time)

    def feed(self, ex: Facts) -> Decided:
        return NOTHING

    def feed_message(self, ev: RtaEvent) -> Decided:
        return NOTHING

    def handshake(self, ex: Facts) -> Decided:
        return NOTHING


class WaitingRule(RtaRule):
    """An RTA rule that judges MPSD exchanges only while something a websocket message
    started waits (a tap, a resync): no answer starts it (`starts_on` is empty), so the
    engine hands it exchanges only while it is not `quiet`. Its clock still counts every
    exchange's start, which the engine's `Listening` keeps (`exchanges_until`)."""

    starts_on: frozenset[int] | None = frozenset()

    @property
    def clock(self) -> float:
        return max(self.heard, self.listening.exchanges_until)


def _is_read(ex: Facts, since: float) -> bool:
    """A GET of the session itself that started at or after `since`."""
    return ex.method == "GET" and ex.resource.kind is Kind.SESSION and ex.start >= since


@dataclass(slots=True)
class _Tap:
    seqs: list[int]  # the taps, first first
    time: float  # the first newer tap
    number: int  # the newest changeNumber tapped
    had: int  # the changeNumber the title had
    deadline: float
    where: str
    waited_for: int | None = None  # a write in flight at the tap, waited for


class TapReadRule(WaitingRule):
    """After a newer tap, the title reads the session (see the module docstring)."""

    id = "tap-read"
    nothing = "no shoulder tap for a session the title had"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[tuple[str, str], _Tap] = Keyed(self.max_keys)
        self.stale = 0  # taps no newer than the title's copy (the library ignores them)

    def quiet(self) -> bool:
        return not self.pending

    def feed_message(self, ev: RtaEvent) -> Decided:
        self.tick(ev.time)
        message = ev.message
        if message is None or message.type is not rta.Type.EVENT or ev.direction != "server":
            return NOTHING
        out: list[Verdict] = []
        within = self.settings.rta_read_within_s
        for tap in message.taps:
            had = self.listening.view(ev.title, tap.session)
            if had is None or tap.change_number is None:
                continue
            self.seen += 1
            if tap.change_number <= had:
                self.stale += 1
                continue
            key = (ev.title, tap.session)
            waiting = self.pending.get(key)
            if waiting is not None:
                waiting.seqs.append(ev.seq)
                waiting.number = max(waiting.number, tap.change_number)
                continue
            label = dict(self.listening.followed(ev.title)).get(tap.session, tap.session)
            new = _Tap([ev.seq], ev.time, tap.change_number, had, ev.time + within, label)
            out.extend(self._dropped(k, t) for k, t in self.pending.put(key, new, new.deadline))
        return out or NOTHING

    def feed(self, ex: Facts) -> Decided:
        if ex.session is None or not self.pending:
            return NOTHING
        for title in keys_of(ex):
            key = (title, ex.session)
            waiting = self.pending.get(key)
            if waiting is None:
                continue
            decided = self._answer(key, waiting, ex)
            if decided is not None:
                return [decided]
        return NOTHING

    def _answer(self, key: tuple[str, str], tap: _Tap, ex: Facts) -> Verdict | None:
        number = answered_number(ex)
        tapped = f"the tap for changeNumber {tap.number} (record {tap.seqs[0]})"
        if _is_read(ex, tap.time):
            self.pending.pop(key)
            gap = ms(ex.start - tap.time)
            return self.verdict(
                Status.PASS, f"read {tap.where} (GET, record {ex.seq}) {gap:.0f} ms after "
                f"{tapped}; it had changeNumber {tap.had}",
                (*tap.seqs, ex.seq), (gap,), key[0], tap.where, ex.start)
        if number is not None and number >= tap.number and ex.end >= tap.time:
            self.pending.pop(key)
            how = (f"a write in flight at the tap (answered {ex.status}), whose answer the "
                   "library checks before reading" if ex.start <= tap.time else
                   f"an answer ({ex.status}) that holds the session as a GET would")
            return self.verdict(
                Status.PASS, f"{ex.label} (record {ex.seq}) answered changeNumber {number} "
                f"after {tapped}: {how}, so no GET was needed",
                (*tap.seqs, ex.seq), (ms(ex.end - tap.time),), key[0], tap.where, ex.end)
        if ex.method != "GET" and ex.start <= tap.time <= ex.end:
            tap.waited_for = ex.seq  # the library reads once the write in flight is done
            tap.deadline = max(tap.deadline, ex.end + self.settings.rta_read_within_s)
            self.pending.put(key, tap, tap.deadline)
        return None

    def _missed(self, key: tuple[str, str], tap: _Tap) -> Verdict:
        after = (f" after the write in flight (record {tap.waited_for}) ended"
                 if tap.waited_for is not None else "")
        return self.verdict(
            Status.FAIL,
            f"did not read {tap.where} within {self.settings.rta_read_within_s:g} s of the "
            f"tap for changeNumber {tap.number} (record {tap.seqs[0]}){after}: it still has "
            f"changeNumber {tap.had}, and the library GETs the session on such a tap",
            tap.seqs, (), key[0], tap.where, tap.deadline)

    def _dropped(self, key: tuple[str, str], tap: _Tap) -> Verdict:
        return self.verdict(Status.NOT_APPLICABLE, f"the tap for changeNumber {tap.number} "
                            f"(record {tap.seqs[0]}): {DROPPED}", tap.seqs, (), key[0],
                            tap.where, tap.time)

    def expire(self, now: float) -> Decided:
        return [self._missed(k, t) for k, t in self.pending.due(now)] or NOTHING

    def finish(self) -> Decided:
        out: list[Verdict] = []
        for key, tap in self.pending.drain():
            if tap.deadline <= self.clock:
                out.append(self._missed(key, tap))
            else:
                out.append(self.verdict(
                    Status.NOT_APPLICABLE, f"the recording ended {ms(self.clock - tap.time):.0f}"
                    f" ms after the tap for changeNumber {tap.number} (record {tap.seqs[0]}), "
                    "before the title was due to read", tap.seqs, (), key[0], tap.where,
                    tap.time))
        return out

    def summary(self) -> str:
        ignored = f" ({self.stale} no newer than its copy, rightly not read)" if self.stale else ""
        return f"every newer one of {self.seen} taps was followed by a read{ignored}"


@dataclass(slots=True)
class _Drop:
    seqs: list[int]  # the close, then the attempts
    time: float
    uris: dict[str, int]  # what the lost websocket had subscribed -> the result's record
    last: float  # the drop, or the end of the last failed attempt
    attempts: int = 0  # failed attempts since the drop
    deadline: float = 0.0
    connected: str | None = None  # the new websocket, once answered 101
    resubscribed: set[str] = field(default_factory=set)


class ReconnectRule(RtaRule):
    """After the websocket drops, reconnect on the schedule and resubscribe (module docstring)."""

    id = "rta-reconnect"
    nothing = "no RTA websocket with a subscription was dropped"
    concern = Concern.NONE  # handshakes and messages only

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.drops: Keyed[str, _Drop] = Keyed(self.max_keys)

    def feed_message(self, ev: RtaEvent) -> Decided:
        self.tick(ev.time)
        drop = self.drops.get(ev.title)
        message = ev.message
        if ev.closed:
            return self._closed(ev)
        if (drop is None or drop.connected != ev.connection or message is None
                or message.type is not rta.Type.SUBSCRIBE or ev.direction != "client"):
            return NOTHING
        if message.uri in drop.uris:
            drop.resubscribed.add(message.uri)
            drop.seqs.append(ev.seq)
        if drop.resubscribed < drop.uris.keys():
            return NOTHING
        self.drops.pop(ev.title)
        gap = ms(ev.time - drop.time)
        tries = "at the first attempt" if not drop.attempts else \
            f"after {drop.attempts} failed attempt(s), each on the library's schedule"
        return [self.verdict(
            Status.PASS, f"reconnected {tries} and subscribed again to "
            f"{_uris(drop.uris)} (record {ev.seq}) {gap:.0f} ms after the websocket dropped "
            f"(record {drop.seqs[0]})", drop.seqs, (gap,), ev.title, None, ev.time)]

    def _closed(self, ev: RtaEvent) -> Decided:
        """A close: the service's (or the connection's end) starts the wait for a reconnect."""
        uris = self.listening.subscriptions(ev.connection)
        drop = self.drops.get(ev.title)
        if drop is not None and drop.connected == ev.connection:
            drop.connected = None  # the new websocket went too: back to waiting
            drop.last, drop.resubscribed = ev.time, set()
            drop.deadline = ev.time + reconnect_wait(0) + self.settings.rta_reconnect_late_s
            self.drops.put(ev.title, drop, drop.deadline)
            return NOTHING
        if ev.direction == "client" or not uris or drop is not None:
            return NOTHING
        self.seen += 1
        late = self.settings.rta_reconnect_late_s
        new = _Drop([ev.seq], ev.time, uris, ev.time, deadline=ev.time + late)
        return [self._dropped(k, d) for k, d in self.drops.put(ev.title, new, new.deadline)] \
            or NOTHING

    def handshake(self, ex: Facts) -> Decided:
        self.tick(ex.start)
        for title in keys_of(ex):
            drop = self.drops.get(title)
            if drop is not None and drop.connected is None and ex.start >= drop.time:
                return self._attempt(title, drop, ex)
        return NOTHING

    def _attempt(self, title: str, drop: _Drop, ex: Facts) -> Decided:
        """One reconnect attempt: too soon fails; a 101 waits for the subscribes."""
        wait = reconnect_wait(drop.attempts)
        gap = ex.start - drop.last
        drop.seqs.append(ex.seq)
        if gap < wait * TOO_SOON:
            self.drops.pop(title)
            since = "the drop" if not drop.attempts else "the failed attempt before it"
            return [self.verdict(
                Status.FAIL, f"reconnect attempt {drop.attempts + 1} (record {ex.seq}) came "
                f"{ms(gap):.0f} ms after {since}; the library waits {wait:g} s there "
                "(min(n^2, 60) s after n failed attempts)", drop.seqs, (ms(gap),), title,
                None, ex.start)]
        if ex.status == 101:
            drop.connected = ex.exchange.client
            drop.deadline = ex.end + self.settings.rta_resubscribe_within_s
        else:
            drop.attempts += 1
            drop.last = ex.end
            drop.deadline = (ex.end + reconnect_wait(drop.attempts)
                             + self.settings.rta_reconnect_late_s)
        self.drops.put(title, drop, drop.deadline)
        return NOTHING

    def _missed(self, title: str, drop: _Drop) -> Verdict:
        if drop.connected is not None:
            reason = (f"reconnected (record {drop.seqs[-1]}) but did not subscribe again to "
                      f"{_uris(drop.uris.keys() - drop.resubscribed)} within "
                      f"{self.settings.rta_resubscribe_within_s:g} s: no tap reaches it")
        else:
            wait = reconnect_wait(drop.attempts)
            reason = (f"did not reconnect after the websocket dropped (record {drop.seqs[0]}): "
                      f"attempt {drop.attempts + 1} was due {wait:g} s after "
                      f"{'the drop' if not drop.attempts else 'the last failed one'} "
                      f"(+{self.settings.rta_reconnect_late_s:g} s); no tap reaches it")
        return self.verdict(Status.FAIL, reason, drop.seqs, (), title, None, drop.deadline)

    def _dropped(self, title: str, drop: _Drop) -> Verdict:
        return self.verdict(Status.NOT_APPLICABLE, f"the drop (record {drop.seqs[0]}): "
                            f"{DROPPED}", drop.seqs, (), title, None, drop.time)

    def expire(self, now: float) -> Decided:
        return [self._missed(k, d) for k, d in self.drops.due(now)] or NOTHING

    def finish(self) -> Decided:
        out: list[Verdict] = []
        for title, drop in self.drops.drain():
            if drop.deadline <= self.clock:
                out.append(self._missed(title, drop))
            else:
                out.append(self.verdict(
                    Status.NOT_APPLICABLE, f"the recording ended {ms(self.clock - drop.time):.0f}"
                    f" ms after the websocket dropped (record {drop.seqs[0]}), before the "
                    "title was due to reconnect", drop.seqs, (), title, None, drop.time))
        return out

    def summary(self) -> str:
        return f"reconnected and subscribed again after each of {self.seen} drops"


def _uris(uris: Any) -> str:
    return ", ".join(sorted(uris)) or "nothing"


@dataclass(slots=True)
class _Resync:
    seqs: list[int]
    time: float
    deadline: float
    waiting: dict[str, str]  # session key -> label, not yet read again
    read: dict[str, int] = field(default_factory=dict)  # label -> the read's record


class ResyncRule(WaitingRule):
    """After a resync, the title re-reads every session it follows (module docstring)."""

    id = "rta-resync"
    nothing = "no resync for a title that followed a session"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pending: Keyed[str, _Resync] = Keyed(self.max_keys)

    def quiet(self) -> bool:
        return not self.pending

    def feed_message(self, ev: RtaEvent) -> Decided:
        self.tick(ev.time)
        message = ev.message
        if message is None or message.type is not rta.Type.RESYNC or ev.direction != "server":
            return NOTHING
        waiting = self.pending.get(ev.title)
        if waiting is not None:
            waiting.seqs.append(ev.seq)  # the library folds resyncs close together
            return NOTHING
        followed = dict(self.listening.followed(ev.title))
        if not followed:
            return NOTHING
        self.seen += 1
        new = _Resync([ev.seq], ev.time, ev.time + self.settings.rta_read_within_s, followed)
        return [self._dropped(k, r) for k, r in self.pending.put(ev.title, new, new.deadline)] \
            or NOTHING

    def feed(self, ex: Facts) -> Decided:
        if ex.session is None or not self.pending:
            return NOTHING
        for title in keys_of(ex):
            resync = self.pending.get(title)
            if resync is None or ex.session not in resync.waiting:
                continue
            gone = ex.resource.kind is Kind.SESSION and ex.status in (204, 404)
            fresh = ex.start >= resync.time and (answered_number(ex) is not None or gone)
            if not (_is_read(ex, resync.time) or fresh):
                continue
            resync.read[resync.waiting.pop(ex.session)] = ex.seq
            if resync.waiting:
                continue
            self.pending.pop(title)
            reads = ", ".join(f"{where} (record {seq})" for where, seq in resync.read.items())
            gap = ms(ex.start - resync.time)
            return [self.verdict(
                Status.PASS, f"re-read every session it follows, {reads}, within {gap:.0f} ms "
                f"of the resync (record {resync.seqs[0]})",
                (*resync.seqs, *resync.read.values()), (gap,), title, None, ex.start)]
        return NOTHING

    def _missed(self, title: str, resync: _Resync) -> Verdict:
        missing = ", ".join(resync.waiting.values())
        done = (f"; it did re-read {', '.join(resync.read)}" if resync.read else "")
        return self.verdict(
            Status.FAIL, f"did not re-read {missing} within {self.settings.rta_read_within_s:g}"
            f" s of the resync (record {resync.seqs[0]}){done}: a resync means taps may have "
            "been lost, and the library reads every session it follows again",
            (*resync.seqs, *resync.read.values()), (), title, None, resync.deadline)

    def _dropped(self, title: str, resync: _Resync) -> Verdict:
        return self.verdict(Status.NOT_APPLICABLE, f"the resync (record {resync.seqs[0]}): "
                            f"{DROPPED}", resync.seqs, (), title, None, resync.time)

    def expire(self, now: float) -> Decided:
        return [self._missed(k, r) for k, r in self.pending.due(now)] or NOTHING

    def finish(self) -> Decided:
        out: list[Verdict] = []
        for title, resync in self.pending.drain():
            if resync.deadline <= self.clock:
                out.append(self._missed(title, resync))
            else:
                out.append(self.verdict(
                    Status.NOT_APPLICABLE, f"the recording ended "
                    f"{ms(self.clock - resync.time):.0f} ms after the resync (record "
                    f"{resync.seqs[0]}), before the title was due to re-read",
                    resync.seqs, (), title, None, resync.time))
        return out

    def summary(self) -> str:
        return f"re-read every followed session after each of {self.seen} resyncs"


def polling_reason(listening: Listening, ex: Facts) -> str:
    """Why polling a session is the wrong way to learn of its changes, for this title: it
    has a subscription open (the taps would tell it), had one that closed, or never had
    one. Empty for a call that names no session (RTA does not tell of those)."""
    if ex.session is None:
        return ""
    state = listening.find(keys_of(ex))
    if state is not None and state.subscribed is not None:
        return (f"; the title also has an RTA subscription open (record {state.subscribed}), "
                "so the service already taps it on every change of the session: read on a "
                "tap instead of polling")
    if state is not None and state.ever_subscribed:
        lost = f" (record {state.lost})" if state.lost is not None else ""
        return (f"; the title's RTA websocket closed{lost} and it polls instead of "
                "reconnecting and subscribing again, as the library does")
    return ("; the title never subscribed to RTA shoulder taps (wss://rta.xboxlive.com/connect"
            f", {rta.CONNECTIONS_URI}): subscribe, and read the session when a tap says it "
            "changed")
