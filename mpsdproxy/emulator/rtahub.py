"""The stand-in's Real-Time Activity service: who is subscribed on which websocket, and
the shoulder taps a session change sends them.

A title opens `wss://rta.xboxlive.com/connect` (subprotocol `rta.xboxlive.com.V2`; the
older `rta.xboxlive.com` is answered too, as the service does: `rta.SUBPROTOCOLS`) and
subscribes to `https://sessiondirectory.xboxlive.com/connections/`; the answer carries
a ConnectionId, which the title writes into its member as `properties.system.connection`
(with `properties.system.subscription.id`). From then on, whenever a session's
changeNumber moves, every websocket whose ConnectionId a member of that session holds
gets one event on that subscription, a tap per member holding it (protocol notes §3.5;
the message shapes are `mpsdproxy.rta`'s). The library's side of it:
real_time_activity_connection.cpp (subscribe `[1, seq, uri]`, its result
`[1, seq, status, id, data]`, unsubscribe `[2, seq, id]`, event `[3, id, data]`,
resync `[4]`; WebsocketMessageReceived ~L800) and multiplayer_subscription.cpp
(`OnSubscribe` reads `ConnectionId`; `OnEvent` splits each tap's `resource` on `~`).

Choices where the service's behaviour is not written down:

- Only the connections resource is served. Any other URI (presence, social, ...) is
  answered `[1, seq, 1]`, UNKNOWN_RESOURCE, with no subscription id: the library reads
  only the sequence and status of a failed subscribe (SubscribeResponseHandler ~L390)
  and does not retry that status.
- A ConnectionId names one websocket: a second subscribe on it gets the same id. The
  older library resubscribes after a reconnect to `.../connections/<its old id>`
  (multiplayer_subscription.cpp of the older C++ API, `on_subscription_created` ~L40);
  that subscribe gets the old id back, so the members that hold it are reached again.
- Subscription ids count from 0 per websocket, as in the public capture
  (`raw/073_w.txt`: `[1,0,0,0,null]`, `[1,1,0,1,null]`).
- A tap names the session in lower case and the member's subscription id in lower
  case, as the capture does (`raw/052_w.txt` against the member write in `054_c`).
- Every member holding the connection is tapped, the writer included, on every
  change whatever its `changeTypes`; a deleted session taps nobody. The library
  ignores a tap whose changeNumber it already has (multiplayer_session_writer.cpp
  `OnSessionChanged`). The capture hints that the service skips the writer (`052_w`
  taps changeNumbers 2 and 4 of the lobby, not the title's own 1 and 3); a change
  does not say who made it, so the stand-in cannot.
- Unsubscribing an unknown id answers `[2, seq, 1]`.

`Hub` is the state and the protocol, free of I/O: a websocket registers a thread-safe
`post` (the server's websocket pump, `serve_websocket`, queues what it is given) and
hands in each text message; `changed` is a `state.ChangeObserver`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import NamedTuple

import wsproto
import wsproto.connection
import wsproto.events

from mpsdproxy import model
from mpsdproxy import rta
from mpsdproxy.emulator.state import Change
from mpsdproxy.emulator.state import stamp

__all__ = ["Hub", "Link", "Close", "handshake", "serve_websocket", "CONNECT_PATH",
           "GOING_AWAY"]

logger = logging.getLogger(__name__)

#: The path the library connects to (real_time_activity_connection.cpp `s_rtaUri`).
CONNECT_PATH = "/connect"
#: The close code `POST /_emulator/rta/close` sends: the server is going away.
GOING_AWAY = 1001
#: How long a close waits for the client's close frame before the socket is dropped.
CLOSE_GRACE = 2.0
READ_SIZE = 64 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Close(NamedTuple):
    """Queued for a websocket: send a close frame with this code, then hang up."""

    code: int = GOING_AWAY
    reason: str = "closed by the stand-in"


Outgoing = str | Close
Post = Callable[[Outgoing], None]


class Link:
    """One RTA websocket: its ConnectionId and subscriptions. The hub changes it under
    its lock; `post` queues a frame for the socket from any thread."""

    def __init__(self, number: int, post: Post) -> None:
        self.number = number
        self.post = post
        self.connection_id: str | None = None
        self.subscriptions: dict[int, str] = {}  # subscription id -> resource URI
        self.ids = itertools.count(0)

    @property
    def tap_subscription(self) -> int | None:
        """The subscription the connections resource has on this socket (taps go there)."""
        return next((i for i, uri in self.subscriptions.items() if _connection_uri(uri)),
                    None)


def _connection_uri(uri: str) -> bool:
    return uri.lower().startswith(rta.CONNECTIONS_URI.lower().rstrip("/"))


def _reclaimed(uri: str) -> str | None:
    """The ConnectionId in `.../connections/<id>`, None for `.../connections/`."""
    rest = uri[len(rta.CONNECTIONS_URI.rstrip("/")):].strip("/")
    return rest or None


def _member_system(member: Any) -> Mapping[str, Any]:
    properties = member.get("properties") if isinstance(member, dict) else None
    system = properties.get("system") if isinstance(properties, dict) else None
    return system if isinstance(system, dict) else {}


def listeners(document: Mapping[str, Any]) -> dict[str, list[str | None]]:
    """Who hears of a change to this session: ConnectionId (lower case) -> the
    subscription ids (lower case) of the members that hold it."""
    members = document.get("members")
    found: dict[str, list[str | None]] = {}
    for member in members.values() if isinstance(members, dict) else ():
        system = _member_system(member)
        connection = system.get("connection")
        if not isinstance(connection, str) or not connection:
            continue
        subscription = system.get("subscription")
        sub_id = subscription.get("id") if isinstance(subscription, dict) else None
        subs = found.setdefault(connection.lower(), [])
        sub = sub_id.lower() if isinstance(sub_id, str) else None
        if sub not in subs:
            subs.append(sub)
    return found


class Hub:
    """Every RTA websocket of one stand-in server. Thread-safe: sockets call in from the
    event loop, `changed` from whichever thread changed a session."""

    def __init__(self, *, wallclock: Callable[[], float] = time.time,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.wallclock = wallclock
        self.new_id = new_id
        self._lock = threading.Lock()
        self._links: list[Link] = []
        self._numbers = itertools.count(1)
        #: the server's tasks that serve this hub, kept referenced while they run
        self.tasks: set[asyncio.Task[None]] = set()

    # -- sockets ------------------------------------------------------------------------

    def open(self, post: Post) -> Link:
        """A websocket was accepted; `post` queues a frame for it (thread-safe)."""
        with self._lock:
            link = Link(next(self._numbers), post)
            self._links.append(link)
        return link

    def drop(self, link: Link) -> None:
        """The websocket ended: its subscriptions end with it."""
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def receive(self, link: Link, text: str) -> None:
        """One text message from the title; the answer, if any, is posted to it."""
        message = rta.decode(text, from_client=True)
        if message is None or message.sequence is None:
            logger.debug(f"RTA socket {link.number}: ignored {text[:200]!r}")
            return
        if message.type is rta.Type.SUBSCRIBE and message.uri is not None:
            link.post(self._subscribe(link, message.sequence, message.uri))
        elif message.type is rta.Type.UNSUBSCRIBE:
            link.post(self._unsubscribe(link, message.sequence, message.subscription_id))

    def _subscribe(self, link: Link, sequence: int, uri: str) -> str:
        if not _connection_uri(uri):
            return rta.subscribe_error_message(sequence, rta.Status.UNKNOWN_RESOURCE)
        with self._lock:
            existing = next((i for i, u in link.subscriptions.items() if u == uri), None)
            link.connection_id = _reclaimed(uri) or link.connection_id or self.new_id()
            if existing is None:
                existing = next(link.ids)
                link.subscriptions[existing] = uri
            data = {"ConnectionId": link.connection_id}
        logger.info(f"RTA socket {link.number}: subscribed {uri} as {existing}, "
                    f"ConnectionId {link.connection_id}")
        return rta.subscribe_result_message(sequence, rta.Status.SUCCESS, existing, data)

    def _unsubscribe(self, link: Link, sequence: int, subscription: int | None) -> str:
        with self._lock:
            known = link.subscriptions.pop(subscription, None) if subscription is not None \
                else None
        status = rta.Status.SUCCESS if known is not None else rta.Status.UNKNOWN_RESOURCE
        return rta.unsubscribe_result_message(sequence, status)

    # -- what the stand-in sends on its own -----------------------------------------------

    def changed(self, change: Change) -> None:
        """A session's changeNumber moved: tap every socket a member of it listens on."""
        heard = listeners(change.document)
        if not heard:
            return
        with self._lock:
            targets = [(link, link.tap_subscription, heard[link.connection_id.lower()])
                       for link in self._links
                       if link.connection_id and link.connection_id.lower() in heard]
        now = stamp(self.wallclock())
        for link, subscription, subs in targets:
            if subscription is None:
                continue  # the socket unsubscribed from the connections resource
            taps = [rta.Tap(change.key, change.change_number, change.branch, sub, now)
                    for sub in subs]
            link.post(rta.tap_message(subscription, taps, self.new_id()))
            logger.info(f"RTA socket {link.number}: tap {change.key} "
                        f"changeNumber {change.change_number}")

    def resync(self) -> int:
        """Send `[4]` to every socket (the library then re-reads what it follows:
        RealTimeActivityManager's resync handlers). How many sockets were told."""
        links = self.links()
        for link in links:
            link.post(rta.resync_message())
        return len(links)

    def close_all(self, code: int = GOING_AWAY) -> int:
        """Close every socket (the library reconnects with backoff and subscribes again:
        real_time_activity_connection.cpp DisconnectHandler, ScheduleConnect). How many."""
        links = self.links()
        for link in links:
            link.post(Close(code))
        return len(links)

    def links(self) -> list[Link]:
        with self._lock:
            return list(self._links)

    def describe(self) -> list[dict[str, Any]]:
        """The open sockets, for `GET /_emulator/rta`."""
        with self._lock:
            return [{"socket": link.number, "connection_id": link.connection_id,
                     "subscriptions": {str(i): u for i, u in link.subscriptions.items()}}
                    for link in self._links]


# --------------------------------------------------------------------------------------
# The websocket itself: the handshake (after h11 read the request) and the frame pump


def handshake(request: model.Request) -> list[tuple[bytes, bytes]] | str:
    """The 101 answer's headers for an RTA websocket request, or what is wrong with it."""
    headers = request.headers
    upgrade = (headers.first("Upgrade") or "").lower()
    if "websocket" not in upgrade:
        return "send Upgrade: websocket"
    if (headers.first("Sec-WebSocket-Version") or "").strip() != "13":
        return "send Sec-WebSocket-Version: 13"
    key = (headers.first("Sec-WebSocket-Key") or "").strip()
    if not key:
        return "send a Sec-WebSocket-Key"
    subprotocol = rta.chosen_subprotocol(headers.get_all("Sec-WebSocket-Protocol"))
    if subprotocol is None:
        return f"offer the subprotocol {rta.SUBPROTOCOL} (Sec-WebSocket-Protocol)"
    accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())
    return [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept),
            (b"Sec-WebSocket-Protocol", subprotocol.encode())]


async def serve_websocket(hub: Hub, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter, leftover: bytes) -> None:
    """Speak RTA on an accepted websocket until either side closes it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Outgoing] = asyncio.Queue()

    def post(item: Outgoing) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(queue.put_nowait, item)

    ws = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
    link = hub.open(post)
    sender = asyncio.create_task(_send_queued(ws, queue, writer))
    try:
        await _read(hub, link, ws, reader, writer, leftover)
    finally:
        hub.drop(link)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _read(hub: Hub, link: Link, ws: wsproto.connection.Connection,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                data: bytes) -> None:
    """Hand each text message to the hub and answer pings and closes, until the peer
    closes or hangs up."""
    parts: list[str] = []
    if data:
        ws.receive_data(data)
    while True:
        for event in ws.events():
            if isinstance(event, wsproto.events.TextMessage):
                parts.append(event.data)
                if event.message_finished:
                    hub.receive(link, "".join(parts))
                    parts.clear()
            elif isinstance(event, wsproto.events.Ping):
                writer.write(ws.send(event.response()))
            elif isinstance(event, wsproto.events.CloseConnection):
                if ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    writer.write(ws.send(event.response()))
                    await writer.drain()
                return
        data = await reader.read(READ_SIZE)
        if not data:
            return
        ws.receive_data(data)


async def _send_queued(ws: wsproto.connection.Connection, queue: asyncio.Queue[Outgoing],
                       writer: asyncio.StreamWriter) -> None:
    """The socket's one writer of queued frames; a Close ends it and, after a grace
    period for the client's answer, the TCP connection."""
    while True:
        item = await queue.get()
        if ws.state is not wsproto.connection.ConnectionState.OPEN:
            return
        if isinstance(item, Close):
            writer.write(ws.send(wsproto.events.CloseConnection(item.code, item.reason)))
            await writer.drain()
            await asyncio.sleep(CLOSE_GRACE)
            writer.close()
            return
        writer.write(ws.send(wsproto.events.TextMessage(item)))
        await writer.drain()
