"""Which recorded answer each request gets, and what happens when there is none.

Identical requests get the recorded answers in recorded order; what happens
past the last one, and to requests the recording never saw, is a policy
(`Player.exhausted`, `Player.unmatched`). A miss names the closest recorded
request and how it differs, so a tester sees why a replay drifted.

Answers are the recorded bytes, so ETag and changeNumber follow the
recording and a replay never makes up a 412. Requests the replay leaves to the
stand-in (`unmatched=emulate`) are handed over with the session documents the
title has seen (`Player.handoff`); the ETags the stand-in hands out are then
learnt (`Player.learn`), so a later precondition naming one still matches.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Generic
from typing import NamedTuple
from typing import TypeVar

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy.replay.index import END
from mpsdproxy.replay.index import Index
from mpsdproxy.replay.matching import MatchKey
from mpsdproxy.replay.matching import compare
from mpsdproxy.replay.matching import match_key
from mpsdproxy.replay.matching import route_of

__all__ = [
    "EXHAUSTED_CHOICES",
    "UNMATCHED_CHOICES",
    "PACE_CHOICES",
    "HOP_BY_HOP",
    "NearMiss",
    "Serve",
    "Pass",
    "Decision",
    "Seed",
    "HANDOFF_KEY",
    "handoff_mark",
    "Recent",
    "Player",
    "replay_headers",
    "response_of",
    "error_response",
]

EXHAUSTED_CHOICES: tuple[str, ...] = ("repeat-last", "error", "forward")
UNMATCHED_CHOICES: tuple[str, ...] = ("forward", "emulate", "error")
PACE_CHOICES: tuple[str, ...] = ("fast", "recorded")

#: Connection-level headers (RFC 9110 §7.6.1): they described the recorded
#: connection, not the answer, and must not be replayed onto another one.
HOP_BY_HOP: frozenset[str] = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: Recorded response headers a replayed answer never carries as they are.
_DROPPED: frozenset[str] = HOP_BY_HOP | {"content-length"}

#: Not an MPSD answer but the proxy's own: "the replay had nothing for this".
ERROR_STATUS = 502
ERROR_REASON = "Bad Gateway"

#: Answers kept decoded: a repeated answer (repeat-last, a poll the recording holds
#: many times) is served without reading and decoding its line again.
ANSWER_CACHE_ENTRIES = 1024
ANSWER_CACHE_BYTES = 8 * 2**20  # of bodies; an answer larger than this is never kept

#: How many recorded requests a near miss reads back from disk, at most.
NEAR_MISS_ROUTES = 3
NEAR_MISS_PER_ROUTE = 8
NEAR_MISS_WALK = 256


# -- answers ---------------------------------------------------------------------------------


def replay_headers(pairs: Iterable[Sequence[str]], status: int,
                   body: bytes) -> list[tuple[str, str]]:
    """Recorded response headers fit for a new connection.

    Hop-by-hop headers (and any the Connection header names) go; Content-Length
    is set to the body actually sent (none on 1xx, 204 and 304). Everything
    else, ETag first of all, stays verbatim and in order.
    """
    pairs = [(str(k), str(v)) for k, v in pairs]
    drop = _DROPPED
    if any(k.lower() == "connection" for k, _ in pairs):
        drop = drop | {t.strip().lower() for k, v in pairs if k.lower() == "connection"
                       for t in v.split(",")}
    headers = [(k, v) for k, v in pairs if k.lower() not in drop]
    if not (status < 200 or status in (204, 304)):
        headers.append(("Content-Length", str(len(body))))
    return headers


def response_of(recorded: dict[str, Any] | None) -> model.Response | None:
    """A record's response as the answer to send, or None when the recorded exchange
    got none. Raises model.ModelError for a response no wire could carry."""
    if recorded is None:
        return None
    body = recording.decode_body(recorded.get("body"))
    status = recorded["status"]
    return model.Response(status, str(recorded.get("reason") or ""),
                          model.Headers(replay_headers(recorded.get("headers") or (), status,
                                                       body)), body)


def error_response(decision: Pass) -> model.Response:
    """The proxy's own answer when the replay has none: a 502 that says why.

    Deliberately not a row of the MPSD table, so neither the title nor the
    report can mistake it for something the service said.
    """
    body = model.to_bytes(f"mpsdproxy replay: {decision.message}\n")
    headers = model.Headers([
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Mpsdproxy-Replay", decision.reason),
        ("Content-Length", str(len(body))),
    ])
    return model.Response(ERROR_STATUS, ERROR_REASON, headers, body)


# -- decisions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearMiss:
    """The recorded request closest to one that matched nothing, and how it differs."""

    seq: int
    where: str
    method: str
    url: str
    differences: tuple[str, ...]
    consumed: bool

    def __str__(self) -> str:
        served = ", already served" if self.consumed else ""
        what = "; ".join(self.differences) or "nothing visible"
        return (f"closest recorded request is #{self.seq} ({self.where}{served}) "
                f"{self.method} {model.terminal_safe(self.url)}, which differs in: {what}")


@dataclass(frozen=True, slots=True)
class Serve:
    """Answer with the recorded response of `entry`."""

    entry: int
    seq: int
    file: str
    repeat: bool = False  # served again after its key's answers ran out


@dataclass(frozen=True, slots=True)
class Pass:
    """The recording has no answer to give; `action` is what the policy wants instead."""

    action: str  # "error" | "forward" | "emulate"
    reason: str  # "unmatched" | "exhausted" | "failed"
    message: str


Decision = Serve | Pass


class Seed(NamedTuple):
    """A session document the stand-in should hold before it answers."""

    path: str
    document: dict[str, Any]
    etag: str | None


#: The flow.metadata key of a request the replay leaves to the stand-in. Plain data, as
#: mitmproxy saves metadata with flows: `{"reason", "note", "seeds": [[path, document,
#: etag], ...]}`; the stand-in takes the seeds and, once it answered, adds `"etag"`, the
#: ETag it handed out (which the replay then learns).
HANDOFF_KEY = "mpsd_standin"


def handoff_mark(decision: Pass, seeds: Iterable[Seed]) -> dict[str, Any]:
    """What the replay puts under HANDOFF_KEY for a request the stand-in is to answer."""
    return {"reason": decision.reason, "note": decision.message,
            "seeds": [list(seed) for seed in seeds]}


_V = TypeVar("_V")


class Recent(Generic[_V]):
    """The values last put or got, per entry: at most `entries` of them and `budget`
    bytes in all (as their `size` said); the least recently used go first."""

    def __init__(self, entries: int, budget: int) -> None:
        self.entries = entries
        self.budget = budget
        self.bytes = 0
        self._items: dict[int, tuple[_V, int]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[int]:
        """Entries, the least recently used first."""
        return iter(self._items)

    def get(self, entry: int) -> _V | None:
        item = self._items.pop(entry, None)
        if item is None:
            return None
        self._items[entry] = item  # now the most recently used
        return item[0]

    def put(self, entry: int, value: _V, size: int) -> None:
        """Keep `value` (unless it alone is over the budget), forgetting the least
        recently used ones as needed."""
        old = self._items.pop(entry, None)
        if old is not None:
            self.bytes -= old[1]
        if size > self.budget:
            return
        items = self._items
        items[entry] = (value, size)
        self.bytes += size
        while len(items) > self.entries or self.bytes > self.budget:
            self.bytes -= items.pop(next(iter(items)))[1]

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class _Answer(NamedTuple):
    response: model.Response | None
    etag: str | None


class Player:
    """Consumes an Index: which answer each request gets, and what to do when none.

    Consumption is explicit: each entry is served once, in recorded order per
    match key; past the last one `exhausted` decides (repeat-last, error,
    forward). A request with no recorded match gets `unmatched` (forward,
    emulate, error), whether or not the rest of the recording is used up.
    """

    def __init__(self, index: Index, exhausted: str = "repeat-last",
                 unmatched: str = "error", cache_entries: int = ANSWER_CACHE_ENTRIES,
                 cache_bytes: int = ANSWER_CACHE_BYTES) -> None:
        self.index = index
        self.exhausted = exhausted
        self.unmatched = unmatched
        self.consumed = bytearray(len(index))
        #: ETags handed out so far: by served answers, and by the stand-in.
        self.learned: set[str] = set()
        self._cursor: dict[int, int] = {}
        self._last: dict[int, tuple[int, int]] = {}
        #: Per session: the entry of the last whole document served (what the title has seen).
        self._seen: dict[int, int] = {}
        #: Per session: the entry whose document the stand-in was last handed.
        self._handed: dict[int, int] = {}
        self._known = _Known(self)
        #: entry -> its decoded answer, for the answers served last.
        self._answers: Recent[_Answer] = Recent(cache_entries, cache_bytes)

    # -- index lifecycle

    def rebind(self, index: Index) -> None:
        """Adopt a rehashed index of the same files, keeping what was consumed."""
        if len(index) != len(self.index):
            raise ValueError(f"the rehashed index has {len(index)} exchanges, "
                             f"not {len(self.index)}: the files changed")
        self.index.close()
        self.index = index
        self._cursor.clear()
        self._last.clear()

    def close(self) -> None:
        self.index.close()
        self._answers.clear()

    def remaining(self) -> int:
        """Recorded answers not served yet."""
        return len(self.consumed) - sum(self.consumed)

    # -- deciding

    def known_etag(self, value: str) -> bool:
        return value in self.index.etags or value in self.learned

    def learn(self, etag: str) -> None:
        """An ETag the title was handed (by the stand-in): it now stands for a recorded one."""
        self.learned.add(etag)

    def key(self, request: model.Request) -> MatchKey:
        return match_key(request, self.index.options, self._known)

    def decide(self, request: model.Request) -> Decision:
        """Which recorded answer `request` gets (consuming it), or what to do instead."""
        key = self.key(request)
        digest = key.digest()
        if self.index.first(digest) is None:
            return self._unmatched(request, key)
        entry = self._take(digest)
        if entry is not None:
            return self._serve(entry)
        last, count = self._chain_end(digest)
        if self.exhausted == "repeat-last":
            return self._serve(last, repeat=True)
        message = (f"all {count} recorded answers to {request.method} "
                   f"{model.terminal_safe(request.url)} were served (the last is "
                   f"#{self.index.seq(last)}, {self.index.where(last)}); "
                   f"mpsd_replay_exhausted={self.exhausted}")
        return Pass(self.exhausted, "exhausted", message)

    def _serve(self, entry: int, repeat: bool = False) -> Serve:
        return Serve(entry, self.index.seq(entry), self.index.file(entry), repeat)

    def _unmatched(self, request: model.Request, key: MatchKey) -> Pass:
        near = self.near_miss(request, key)
        because = str(near) if near else "the recording holds no requests"
        message = (f"no recorded answer for {request.method} {model.terminal_safe(request.url)} "
                   f"(mpsd_replay_unmatched={self.unmatched}); {because}")
        return Pass(self.unmatched, "unmatched", message)

    def _take(self, digest: int) -> int | None:
        """The first unconsumed entry with this key, consumed; None when all are."""
        entry = self._cursor.get(digest)
        if entry is None:
            entry = self.index.first(digest)
            assert entry is not None
        while entry != END and self.consumed[entry]:
            entry = self.index.next_same(entry)
        if entry == END:
            self._cursor[digest] = END
            return None
        self.consumed[entry] = 1
        self._cursor[digest] = self.index.next_same(entry)
        return entry

    def _chain_end(self, digest: int) -> tuple[int, int]:
        """(last entry, number of entries) of a key, walked once then remembered."""
        cached = self._last.get(digest)
        if cached is None:
            entry = self.index.first(digest)
            assert entry is not None
            count = 1
            while (following := self.index.next_same(entry)) != END:
                entry, count = following, count + 1
            cached = self._last[digest] = (entry, count)
        return cached

    # -- answering

    def answer(self, entry: int) -> model.Response | None:
        """The recorded answer of `entry` (None: the recorded exchange got no response).

        Recently served answers are kept decoded (a bounded cache); a Response is
        immutable, so handing out the same one again is safe.
        """
        cached = self._answers.get(entry)
        if cached is None:
            response = response_of(self.index.response(entry))
            cached = _Answer(response, response.headers.first("ETag") if response else None)
            self._answers.put(entry, cached, len(response.body) if response else 0)
        session = self.index.session_of(entry)
        if session != END:
            self._seen[session] = entry
        if cached.etag:
            self.learned.add(cached.etag)
        return cached.response

    # -- handing over to the stand-in

    def handoff(self) -> list[Seed]:
        """The session documents the stand-in should get before it answers: per session,
        the one the title last saw (else the recording's last), when the stand-in was
        not handed that one already."""
        seeds: list[Seed] = []
        for session, (_, path) in enumerate(self.index.sessions):
            entry = self._seen.get(session, self.index.session_last[session])
            if self._handed.get(session) == entry:
                continue
            response = self.index.exchange(entry).response
            assert response is not None  # a session document is a response's body
            seeds.append(Seed(path, response.json, response.headers.first("ETag")))
            self._handed[session] = entry
        return seeds

    def forget_handoffs(self) -> None:
        """A fresh stand-in knows nothing yet: hand every session over again."""
        self._handed.clear()

    # -- near misses

    def near_miss(self, request: model.Request, key: MatchKey | None = None) -> NearMiss | None:
        """The closest recorded request and how it differs (reads a few records back)."""
        key = key or self.key(request)
        best: tuple[tuple[int, int, int], NearMiss] | None = None
        for entry in self._candidates(request):
            recorded = self.index.exchange(entry).request
            found = compare(key, match_key(recorded, self.index.options))
            consumed = bool(self.consumed[entry])
            rank = (sum(d.weight for d in found), int(consumed), entry)
            if best is None or rank < best[0]:
                near = NearMiss(self.index.seq(entry), self.index.where(entry), recorded.method,
                                recorded.url, tuple(d.phrase for d in found), consumed)
                best = (rank, near)
        return best[1] if best else None

    def _candidates(self, request: model.Request) -> list[int]:
        """Entries of the routes most like the request's, unconsumed ones first."""
        method, authority, path = route_of(request.method, request.url)
        segments = path.split("/")

        def closeness(number: int) -> tuple[bool, bool, int, bool]:
            m, a, p = self.index.routes[number]
            shared = 0
            for mine, theirs in zip(segments, p.split("/"), strict=False):
                if mine != theirs:
                    break
                shared += 1
            return p == path, m == method, shared, a == authority

        routes = self.index.similar_routes(path)
        picked: list[int] = []
        for number in heapq.nlargest(NEAR_MISS_ROUTES, routes, key=closeness):
            entries = list(self.index.route_entries(number, NEAR_MISS_WALK))
            entries.sort(key=lambda e: self.consumed[e])
            picked.extend(entries[:NEAR_MISS_PER_ROUTE])
        return picked


class _Known:
    """The ETags a player knows, as a Container (recorded ones and learned ones)."""

    __slots__ = ("player",)

    def __init__(self, player: Player) -> None:
        self.player = player

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and self.player.known_etag(value)
