"""The report's RTA section: connections, subscriptions, shoulder taps, and what 412s followed.

A title learns that its session changed from a shoulder tap on the Real-Time
Activity websocket, and the client library re-reads the session when a tap
names a newer changeNumber than it holds, even when the tap came while its own
write was in flight (multiplayer_session_writer.cpp, OnSessionChanged and
HandleWriteSessionResult, about lines 380-420). A 412 on a session write is
the service saying the title wrote against an old changeNumber; the tap for
that session just before the 412 answered is what told the title it was old
(in the public capture, the handle write bumps the lobby to changeNumber 2,
the tap for 2 arrives while the title's next PUT is in flight, and that PUT
gets a 412). So each 412 is linked to the latest tap for its session that
stands before it in the recording and came before its response.

Everything here is bounded: connections, subscriptions, sessions and links are
capped in number, and each session keeps its first taps in full and counts
the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import model
from mpsdproxy import recording
from mpsdproxy import rta
from mpsdproxy.recording import messages as ws

__all__ = ["TapSeen", "Connection", "Subscription", "SessionTaps", "PreconditionLink",
           "RtaSection", "RtaAcc"]

MAX_CONNECTIONS = 100
MAX_SUBSCRIPTIONS = 200
MAX_SESSIONS = 100
MAX_TAPS = 50  # kept in full per session; the rest are counted
MAX_LINKS = 200
#: Taps per session remembered for linking a 412 (the latest that came before it wins).
RECENT = 16


@dataclass(frozen=True)
class TapSeen:
    """One tap for one session, as the recording holds it."""

    seq: int | None
    time: float | None
    change_number: int | None
    branch: str | None = None
    client: str | None = None  # the address of the websocket's client

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": recording.timestamp(self.time),
                "changeNumber": self.change_number, "branch": self.branch}


@dataclass
class Connection:
    """One RTA websocket: its URL and client, the connection id its subscribe result
    gave, and how many messages and taps went over it."""

    url: str
    client: str | None
    opened: float | None
    first_seq: int | None
    connection_id: str | None = None
    messages: int = 0
    taps: int = 0
    resyncs: int = 0
    closes: set[str] = field(default_factory=set)

    @property
    def closed(self) -> bool:
        """Whether both sides sent a close (a new socket with the same key is another)."""
        return len(self.closes) == 2

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "client": self.client,
                "opened": recording.timestamp(self.opened), "first_seq": self.first_seq,
                "connection_id": self.connection_id, "messages": self.messages,
                "taps": self.taps, "resyncs": self.resyncs, "closed": self.closed}


@dataclass
class Subscription:
    """A subscribe (or unsubscribe) and, once it came, its result."""

    seq: int | None
    client: str | None
    uri: str | None
    sequence: int | None
    unsubscribe: bool = False
    status: int | None = None
    subscription_id: int | None = None
    connection_id: str | None = None
    result_seq: int | None = None

    @property
    def status_name(self) -> str | None:
        if self.status is None:
            return None
        try:
            return rta.Status(self.status).name.lower().replace("_", "-")
        except ValueError:
            return f"status {self.status}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "client": self.client,
                "type": "unsubscribe" if self.unsubscribe else "subscribe",
                "uri": self.uri, "sequence": self.sequence, "status": self.status,
                "status_name": self.status_name, "subscription_id": self.subscription_id,
                "connection_id": self.connection_id, "result_seq": self.result_seq}


@dataclass
class SessionTaps:
    """The taps for one session: the first MAX_TAPS in full, and how many in all."""

    session: str
    taps: list[TapSeen] = field(default_factory=list)
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"session": self.session, "taps_total": self.total,
                "taps": [t.to_dict() for t in self.taps]}


@dataclass(frozen=True)
class PreconditionLink:
    """A 412 on a session, and the tap for that session before it (None: no tap)."""

    seq: int | None
    time: float | None
    session: str
    where: str
    tap: TapSeen | None

    def sentence(self) -> str:
        """The link for people: `#37 412 sessions/x: after the tap for changeNumber 2 (#31)`."""
        head = f"#{self.seq} 412 on {model.clipped(self.where)}"
        if self.tap is None:
            return f"{head}: no tap for this session came before it"
        gap = ""
        if self.tap.time is not None and self.time is not None:
            gap = f", {max(0.0, self.time - self.tap.time) * 1000:.0f} ms before its response"
        number = "?" if self.tap.change_number is None else self.tap.change_number
        return (f"{head}: after the tap for changeNumber {number} "
                f"(#{self.tap.seq}{gap}); the title wrote against an older changeNumber")

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": recording.timestamp(self.time),
                "session": self.session, "resource": self.where,
                "tap": None if self.tap is None else self.tap.to_dict(),
                "text": self.sentence()}


@dataclass(frozen=True)
class RtaSection:
    """The RTA part of a report, already aggregated."""

    messages: int = 0
    taps: int = 0
    resyncs: int = 0
    connections: tuple[Connection, ...] = ()
    connections_total: int = 0
    subscriptions: tuple[Subscription, ...] = ()
    subscriptions_total: int = 0
    sessions: tuple[SessionTaps, ...] = ()
    links: tuple[PreconditionLink, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.messages and not self.links

    def to_dict(self) -> dict[str, Any]:
        return model.printable_data({
            "messages": self.messages,
            "taps": self.taps,
            "resyncs": self.resyncs,
            "connections_total": self.connections_total,
            "connections": [c.to_dict() for c in self.connections],
            "subscriptions_total": self.subscriptions_total,
            "subscriptions": [s.to_dict() for s in self.subscriptions],
            "sessions": [s.to_dict() for s in self.sessions],
            "precondition_links": [link.to_dict() for link in self.links],
        })


class RtaAcc:
    """Takes in websocket message records and exchanges, in recording order."""

    def __init__(self) -> None:
        self.messages = 0
        self.taps = 0
        self.resyncs = 0
        self.connections: dict[tuple[str, str | None], Connection] = {}
        self.connections_total = 0
        self.subscriptions: list[Subscription] = []
        self.subscriptions_total = 0
        self.pending: dict[tuple[str | None, int | None, bool], Subscription] = {}
        self.sessions: dict[str, SessionTaps] = {}
        self.recent: dict[str, deque[TapSeen]] = {}
        self.links: list[PreconditionLink] = []

    def message(self, record: Mapping[str, Any]) -> None:
        """One websocket message record (any host: only RTA messages count; a frame a fault
        kept from the title is a note, not a message it received)."""
        if ws.is_dropped(record):
            return
        decoded = ws.rta_of(record)
        url = record.get("url")
        if not isinstance(url, str) or not ws.is_rta_url(url):
            return
        self.messages += 1
        seq = record.get("seq") if isinstance(record.get("seq"), int) else None
        start = record.get("start")
        when = recording.parse_timestamp(start) if isinstance(start, str) else None
        client = record.get("client") if isinstance(record.get("client"), str) else None
        connection = self._connection(url, client, when, seq)
        connection.messages += 1
        if record.get("opcode") == "close":
            connection.closes.add(str(record.get("direction")))
        if decoded is None:
            return
        from_client = record.get("direction") == "client"
        if decoded.type is rta.Type.EVENT:
            self._event(decoded, connection, seq, when)
        elif decoded.type is rta.Type.RESYNC:
            self.resyncs += 1
            connection.resyncs += 1
        elif from_client:
            self._subscribe(decoded, client, seq)
        else:
            self._result(decoded, client, seq, connection)

    def _connection(self, url: str, client: str | None, when: float | None,
                    seq: int | None) -> Connection:
        key = (url, client)
        found = self.connections.get(key)
        if found is not None and not found.closed:
            return found
        self.connections_total += 1
        made = Connection(url, client, when, seq)
        if found is not None or len(self.connections) < MAX_CONNECTIONS:
            self.connections[key] = made
        return made

    def _subscribe(self, message: rta.Message, client: str | None, seq: int | None) -> None:
        self.subscriptions_total += 1
        made = Subscription(seq, client, message.uri, message.sequence,
                            unsubscribe=message.type is rta.Type.UNSUBSCRIBE,
                            subscription_id=message.subscription_id)
        if len(self.subscriptions) < MAX_SUBSCRIPTIONS:
            self.subscriptions.append(made)
        self.pending[(client, message.sequence, made.unsubscribe)] = made

    def _result(self, message: rta.Message, client: str | None, seq: int | None,
                connection: Connection) -> None:
        unsubscribe = message.type is rta.Type.UNSUBSCRIBE
        found = self.pending.pop((client, message.sequence, unsubscribe), None)
        if found is None:  # a result whose request the recording does not hold
            self.subscriptions_total += 1
            found = Subscription(None, client, None, message.sequence, unsubscribe)
            if len(self.subscriptions) < MAX_SUBSCRIPTIONS:
                self.subscriptions.append(found)
        found.status, found.result_seq = message.status, seq
        if message.subscription_id is not None:
            found.subscription_id = message.subscription_id
        if message.connection_id:
            found.connection_id = connection.connection_id = message.connection_id

    def _event(self, message: rta.Message, connection: Connection, seq: int | None,
               when: float | None) -> None:
        for tap in message.taps:
            self.taps += 1
            connection.taps += 1
            seen = TapSeen(seq, when, tap.change_number, tap.branch, connection.client)
            session = self.sessions.get(tap.session)
            if session is None and len(self.sessions) < MAX_SESSIONS:
                session = self.sessions[tap.session] = SessionTaps(tap.session)
            if session is not None:
                session.total += 1
                if len(session.taps) < MAX_TAPS:
                    session.taps.append(seen)
            if tap.session in self.recent or len(self.recent) < MAX_SESSIONS:
                self.recent.setdefault(tap.session, deque(maxlen=RECENT)).append(seen)

    def exchange(self, exchange: model.Exchange, where: str) -> None:
        """One exchange: a 412 on a session is linked to the tap before it."""
        key = exchange.resource.key
        if exchange.status != 412 or key is None or len(self.links) >= MAX_LINKS:
            return
        answered = exchange.end if exchange.end is not None else exchange.start
        before = None
        for tap in reversed(self.recent.get(key, ())):
            if (answered is None or tap.time is None or tap.time <= answered) \
                    and _same_host(tap.client, exchange.client):
                before = tap
                break
        self.links.append(PreconditionLink(exchange.seq, answered, key, where, before))

    def finish(self) -> RtaSection:
        """The section, as the report holds it."""
        return RtaSection(
            messages=self.messages, taps=self.taps, resyncs=self.resyncs,
            connections=tuple(self.connections.values()),
            connections_total=self.connections_total,
            subscriptions=tuple(self.subscriptions),
            subscriptions_total=self.subscriptions_total,
            sessions=tuple(self.sessions.values()), links=tuple(self.links))


def _host(address: str | None) -> str | None:
    """`10.0.0.5:50412` -> `10.0.0.5` (a console); None when not known."""
    if not address or ":" not in address:
        return None
    return address.rpartition(":")[0].strip("[]") or None


def _same_host(one: str | None, other: str | None) -> bool:
    """Whether a tap and an exchange may be the same console's: the same client address
    when both are known (two consoles through one proxy each get their own taps)."""
    a, b = _host(one), _host(other)
    return a is None or b is None or a == b
