"""What the RTA verdicts know of each title's Real-Time Activity websocket and sessions.

The RTA rules (`rta_rules`) and the polling rule's reason read one shared
`Listening`, which the engine keeps in step with every exchange and websocket
message it is fed:

- which websocket belongs to which title: a message carries only its
  connection (`client`, `ip:port`), so the title is the one whose `GET /connect`
  handshake came from that connection (`state.client_key`: the user hash of its
  Authorization, the same key its HTTP calls are judged by); a connection whose
  handshake was not seen is its address without the port (`state.address_of`);
- each title's subscriptions: subscribe messages sent, results answered, and
  whether the connection that carried them is still open;
- each title's view of its sessions: the newest changeNumber an answer gave it
  (a GET, a write, a 412's session), dropped again when it left the session or
  the session went away. These are the sessions it follows.

Everything is bounded: at most `max_keys` connections and titles, and
MAX_SESSIONS sessions per title (the least recently seen is forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy import rta
from mpsdproxy import sessions
from mpsdproxy.recording.messages import WebsocketMessage
from mpsdproxy.recording.messages import is_rta_url
from mpsdproxy.resources import Kind
from mpsdproxy.verdicts.state import Facts
from mpsdproxy.verdicts.state import Keyed

__all__ = ["CONNECT_PATH", "MAX_SESSIONS", "RtaEvent", "Connection", "Title", "Listening",
           "is_rta_url", "is_handshake", "answered_number", "keys_of"]

#: The RTA websocket's path (`wss://rta.xboxlive.com/connect`, and the stand-in's).
CONNECT_PATH = "/connect"
#: Sessions remembered per title (the least recently seen is forgotten past this).
MAX_SESSIONS = 64
#: How long a connection or title is remembered after it was last heard of (one day).
KEEP_S = 86_400.0


def is_handshake(exchange: model.Exchange) -> bool:
    """Whether an exchange is a title opening the RTA websocket (`GET /connect`), whether
    or not it was answered 101."""
    request = exchange.request
    if request.method.upper() != "GET":
        return False
    try:
        host, path = request.host, request.path
    except ValueError:
        return False
    if path.split("?", 1)[0].rstrip("/") != CONNECT_PATH:
        return False
    upgrade = request.headers.first("upgrade")
    return (resources.bare_host(host) in resources.RTA_HOSTS
            or (upgrade is not None and upgrade.strip().lower() == "websocket"))


def answered_number(ex: Facts) -> int | None:
    """The changeNumber of the session document an answer carried (None without one)."""
    response = ex.exchange.response
    if response is None or not response.body:
        return None
    document = response.json
    return None if document is jsonbody.INVALID else sessions.change_number(document)


def keys_of(ex: Facts) -> tuple[str, ...]:
    """The keys a title's HTTP call may be known by on its websocket: the user, and the
    address without port (for a connection whose handshake was not seen)."""
    return (ex.client,) if ex.client == ex.console else (ex.client, ex.console)


@dataclass(frozen=True, slots=True)
class RtaEvent:
    """One websocket message as the RTA rules read it."""

    seq: int
    time: float
    title: str
    connection: str  # the client's `ip:port`: one websocket
    direction: str  # "client" or "server"
    closed: bool  # the close frame that ended the websocket (not the one answering it)
    message: rta.Message | None  # the decoded RTA message of a text frame


@dataclass(slots=True)
class Connection:
    """One RTA websocket of a title."""

    title: str
    seq: int  # the handshake's record
    opened: float
    #: subscribe sequence number -> the URI the title subscribed to on this connection
    asked: dict[int, str] = field(default_factory=dict)
    #: URIs the service accepted (status 0) -> the subscribe result's record
    active: dict[str, int] = field(default_factory=dict)
    closed: bool = False


@dataclass(slots=True)
class Title:
    """One title's RTA state and its view of its sessions."""

    #: session key -> (changeNumber it last saw, label for people)
    views: OrderedDict[str, tuple[int, str]] = field(default_factory=OrderedDict)
    open: set[str] = field(default_factory=set)  # its open RTA connections
    subscribed: int | None = None  # the record of its last accepted subscription
    ever_subscribed: bool = False
    lost: int | None = None  # the record where its last subscribed websocket closed


class Listening:
    """The titles' websockets, subscriptions and session views (see the module docstring)."""

    def __init__(self, max_keys: int) -> None:
        self.connections: Keyed[str, Connection] = Keyed(max_keys)
        self.titles: Keyed[str, Title] = Keyed(max_keys)
        #: The latest start of an MPSD exchange seen (`saw`): the clock of the RTA rules
        #: that judge exchanges only while something waits (`rta_rules.WaitingRule`).
        self.exchanges_until = 0.0

    # ---- titles

    def title(self, key: str, now: float) -> Title:
        found = self.titles.get(key)
        if found is None:
            found = Title()
        self.titles.put(key, found, now + KEEP_S)
        return found

    def find(self, keys: tuple[str, ...]) -> Title | None:
        """The first of `keys` known as a title."""
        for key in keys:
            found = self.titles.get(key)
            if found is not None:
                return found
        return None

    def expire(self, now: float) -> None:
        self.connections.due(now)
        self.titles.due(now)

    # ---- HTTP

    def handshake(self, ex: Facts) -> Connection | None:
        """A `GET /connect`: answered 101, the title's new websocket (None otherwise)."""
        if ex.status != 101 or ex.exchange.client is None:
            return None
        connection = Connection(ex.client, ex.seq, ex.end)
        self.connections.put(ex.exchange.client, connection, ex.end + KEEP_S)
        self.title(ex.client, ex.end).open.add(ex.exchange.client)
        return connection

    def saw(self, ex: Facts) -> None:
        """Keep the title's view of the session an MPSD exchange names up to date.

        (Runs for every MPSD exchange: the session and the label are read once,
        and a view already the newest is only moved to the end of its title's views.)"""
        if ex.start > self.exchanges_until:
            self.exchanges_until = ex.start
        session = ex.session
        if session is None:
            return
        if self._left(ex):
            for key in keys_of(ex):
                self.title(key, ex.end).views.pop(session, None)
            return
        number = answered_number(ex)
        if number is None:
            for key in keys_of(ex):
                if self.titles.get(key) is not None:
                    self.title(key, ex.end)  # a title heard of: kept while it is active
            return
        label = model.clipped(f"sessions/{ex.resource.name}")
        for key in keys_of(ex):
            views = self.title(key, ex.end).views
            old = views.get(session)
            if old is None:
                views[session] = (number, label)
                while len(views) > MAX_SESSIONS:
                    views.popitem(last=False)
            else:
                views.move_to_end(session)
                if number > old[0] or label != old[1]:
                    views[session] = (max(number, old[0]), label)

    @staticmethod
    def _left(ex: Facts) -> bool:
        """Whether the title no longer follows the session after this exchange: it is
        gone (204 or 404 to the session), or the title left it (`members.me: null`, or
        DELETE of its member)."""
        if ex.resource.kind is Kind.SESSION and ex.status in (204, 404):
            return True
        if ex.method == "DELETE" and ex.resource.kind is Kind.MEMBER:
            return (ex.resource.element or "").lower() == "members/me"
        if ex.method != "PUT" or ex.resource.kind is not Kind.SESSION:
            return False
        document = ex.exchange.request.json
        members = document.get("members") if isinstance(document, dict) else None
        return isinstance(members, dict) and "me" in members and members["me"] is None

    def view(self, title: str, session: str) -> int | None:
        found = self.titles.get(title)
        entry = found.views.get(session) if found else None
        return entry[0] if entry else None

    def followed(self, title: str) -> list[tuple[str, str]]:
        """The sessions a title follows: (key, label), oldest first."""
        found = self.titles.get(title)
        return [(k, label) for k, (_, label) in found.views.items()] if found else []

    # ---- websocket

    def event(self, message: WebsocketMessage, seq: int, now: float) -> RtaEvent | None:
        """The RTA event a websocket message is (None for one that is not RTA's), with the
        connection's state updated from it."""
        if not is_rta_url(message.url):
            return None
        client = message.client or message.url
        connection = self.connections.get(client)
        title = connection.title if connection else _address(client)
        time = message.start if message.start is not None else now
        decoded = None
        if message.opcode == "text":
            decoded = rta.decode(message.payload, from_client=message.direction == "client")
        # Only the first close frame ends the websocket: the answering one is no news.
        ended = message.opcode == "close" and not (connection and connection.closed)
        event = RtaEvent(seq, time, title, client, message.direction, ended, decoded)
        if connection is None:
            connection = Connection(title, seq, time)
            self.title(title, time).open.add(client)
        self._update(connection, event)
        self.connections.put(client, connection, time + KEEP_S)
        return event

    def _update(self, connection: Connection, ev: RtaEvent) -> None:
        title = self.title(connection.title, ev.time)
        message = ev.message
        if ev.closed:
            if not connection.closed and connection.active:
                title.lost = ev.seq
            connection.closed = True
            title.open.discard(ev.connection)
            if not any(c != ev.connection for c in title.open):
                title.subscribed = None
            return
        if message is None:
            return
        if message.type is rta.Type.SUBSCRIBE and ev.direction == "client":
            if message.sequence is not None and message.uri is not None:
                connection.asked[message.sequence] = message.uri
        elif message.type is rta.Type.SUBSCRIBE and message.status == rta.Status.SUCCESS:
            uri = connection.asked.get(message.sequence or 0)
            if uri is not None:
                connection.active[uri] = ev.seq
            title.subscribed = ev.seq
            title.ever_subscribed = True
            title.lost = None
        elif message.type is rta.Type.UNSUBSCRIBE and ev.direction == "client":
            for sequence, uri in list(connection.asked.items()):
                if sequence == message.sequence:
                    connection.active.pop(uri, None)

    def subscriptions(self, connection: str) -> dict[str, int]:
        """The URIs a websocket had subscribed (accepted) -> the result's record."""
        found = self.connections.get(connection)
        return dict(found.active) if found else {}

    def titles_of(self, keys: tuple[str, ...]) -> Iterator[Title]:
        for key in keys:
            found = self.titles.get(key)
            if found is not None:
                yield found


def _address(client: str) -> str:
    """`ip:port` (or `[v6]:port`) without the port, as `state.address_of` says a console."""
    if client.startswith("["):
        return client[1:].split("]", 1)[0]
    if client.count(":") == 1:
        return client.split(":", 1)[0]
    return client
