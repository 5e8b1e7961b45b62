"""Websockets re-opened at the target: the RTA's `GET /connect` and what the title said on it.

A recorded handshake opens a websocket to the target with the recorded headers (a
stand-in token for a redacted Authorization, as every re-sent request); each client
message the recording holds for that socket is sent in its place among the requests;
what the target sends is taken as it comes. One thread does it all: after every step
the open sockets are read without waiting; where the recording's server spoke, its
socket gets up to `STEP_S` for the target to say as much (a subscribe's answer, the tap
after a write); at the end each is read until it has been quiet for `QUIET_S`, then
closed (`Conversations`). The recording's own server messages are never sent: the
target answers for itself.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable
from collections.abc import Iterator

from wsproto import ConnectionType
from wsproto import WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import BytesMessage
from wsproto.events import CloseConnection
from wsproto.events import Message
from wsproto.events import Ping
from wsproto.events import RejectConnection
from wsproto.events import RejectData
from wsproto.events import Request
from wsproto.events import TextMessage
from wsproto.utilities import LocalProtocolError
from wsproto.utilities import RemoteProtocolError

from mpsdproxy import model
from mpsdproxy import rta
from mpsdproxy.recording.messages import WebsocketMessage
from mpsdproxy.recording.messages import close_of
from mpsdproxy.recording.messages import close_payload
from mpsdproxy.resend.client import tls_context
from mpsdproxy.resend.target import Target

__all__ = ["Conversation", "Conversations", "FRESH", "ProtocolError", "QUIET_S"]

#: A target that broke the websocket protocol (a bad handshake answer, a bad frame).
ProtocolError = RemoteProtocolError

#: How long the target may stay silent at the end before its sockets are closed: taps
#: come within milliseconds of the write that caused them.
QUIET_S = 0.5
#: How long a step waits for the target to catch up with what the recording's server had
#: sent by then on a socket (a subscribe's answer, the tap after a write).
STEP_S = 1.0
#: Handshake headers each connection makes afresh: a recorded one is not what goes.
FRESH = frozenset({"sec-websocket-key", "sec-websocket-extensions", "sec-websocket-accept"})
#: The websocket headers wsproto writes itself (a recorded key or version would clash).
_OWN = FRESH | {"sec-websocket-version", "sec-websocket-protocol"}
#: Close code for "going away" (RFC 6455 7.4.1): the recording ended with the socket open.
GOING_AWAY = 1001

Heard = Callable[[WebsocketMessage], None]


class Conversation:
    """One websocket at the target; `heard` gets each message either side sends on it."""

    def __init__(self, target: Target, url: str, *, heard: Heard, timeout: float,
                 verify: bool) -> None:
        self.target, self.url, self.heard = target, url, heard
        self.timeout, self.verify = timeout, verify
        self.sock: socket.socket | None = None
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.local: str | None = None
        self.open = False
        self._parts: list[bytes | str] = []
        self._text_out = False  # the kind of the message a continuation frame goes on
        #: Messages the target sent so far, as many as the recording's server had sent
        #: by the step reached, and the ConnectionId each subscribe sequence got (what
        #: the title then writes into its member).
        self.from_target = 0
        self.from_recording = 0
        self.connection_ids: dict[int, str] = {}

    def connect(self, path: str, headers: list[tuple[str, str]]) -> model.Response:
        """Open the websocket; the target's answer (101, or the refusal it gave). OSError
        when it cannot be reached."""
        sock = socket.create_connection((self.target.host, self.target.port), self.timeout)
        if self.target.scheme == "https":
            sock = tls_context(self.verify).wrap_socket(sock, server_hostname=self.target.host)
        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.local = f"{host}:{port}"
        protocols = [p.strip() for name, value in headers
                     if name.lower() == "sec-websocket-protocol"
                     for p in value.split(",") if p.strip()]
        extra = [(model.to_bytes(n), model.to_bytes(v)) for n, v in headers
                 if n.lower() not in _OWN and n.lower() != "host"]
        host_header = next((v for n, v in headers if n.lower() == "host"), self.target.netloc)
        sock.sendall(self.ws.send(Request(host=host_header, target=path, extra_headers=extra,
                                          subprotocols=protocols)))
        return self._handshake()

    def _handshake(self) -> model.Response:
        assert self.sock is not None
        refusal: RejectConnection | None = None
        body = b""
        while True:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.open = True
                    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade")]
                    if event.subprotocol:
                        headers.append(("Sec-WebSocket-Protocol", event.subprotocol))
                    headers += [(model.from_bytes(n), model.from_bytes(v))
                                for n, v in event.extra_headers]
                    return model.Response(101, "Switching Protocols", headers)
                if isinstance(event, RejectConnection):
                    refusal = event
                    if not event.has_body:
                        return _refused(refusal, body)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished and refusal is not None:
                        return _refused(refusal, body)
            if not data:
                raise ConnectionError("the target closed the connection during the handshake")

    def send(self, message: WebsocketMessage) -> None:
        """Send a recorded client message (text or binary; a close ends the socket)."""
        if not self.open or self.sock is None:
            return
        if message.opcode == "close":
            code, reason = close_of(message.payload)
            self.close(GOING_AWAY if code is None else code, reason)
            return
        if message.opcode not in ("text", "binary", "continuation"):
            return  # pings and pongs belong to the connection, not the conversation
        if message.opcode != "continuation":
            self._text_out = message.opcode == "text"
        data: bytes | str = message.payload.decode("utf-8", "replace") if self._text_out \
            else message.payload
        self._write(self.ws.send(Message(data=data, message_finished=message.fin)))
        self.heard(WebsocketMessage(self.url, "client", message.opcode, message.payload,
                                    start=time.time(), client=self.local, fin=message.fin))

    def read(self, wait: float = 0.0) -> bool:
        """Take what the target sent, waiting up to `wait` seconds for it; whether
        anything came."""
        if not self.open or self.sock is None:
            return False
        # A selector, not select.select: that refuses a descriptor past 1023, which a
        # process holding many files (a long resend, its caller's own) reaches.
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ)
            ready = selector.select(wait)
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not ready and not pending:
            return False
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        self._take(data)
        return True

    def drain(self, wait: float, limit: float) -> None:
        """Read until nothing has come for `wait` seconds, for `limit` seconds at most (a
        target that never stops talking cannot hold the resend)."""
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0 and self.read(min(wait, left)):
            pass

    def _take(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                self._event(event)
        except RemoteProtocolError:
            self._end()
        if not data:
            self._end()

    def _event(self, event: object) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if event.message_finished:
                text = isinstance(event, TextMessage)
                payload = b"".join(p.encode() if isinstance(p, str) else p
                                   for p in self._parts)
                self._parts = []
                self._learn(payload)
                self.heard(WebsocketMessage(self.url, "server", "text" if text else "binary",
                                            payload, start=time.time(), client=self.local))
        elif isinstance(event, Ping):
            self._write(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.heard(WebsocketMessage(
                self.url, "server", "close",
                close_payload(event.code, (event.reason or "").encode()),
                start=time.time(), client=self.local))
            try:
                self._write(self.ws.send(event.response()))
            except LocalProtocolError:
                pass
            self._end()

    def _learn(self, payload: bytes) -> None:
        self.from_target += 1
        said = rta.decode(payload, from_client=False)
        if said is not None and said.type is rta.Type.SUBSCRIBE and said.sequence is not None \
                and said.connection_id:
            self.connection_ids[said.sequence] = said.connection_id

    def keep_up(self, wait: float = STEP_S) -> None:
        """Read until the target has sent as many messages as the recording's server had
        by this point on the socket, or `wait` seconds went by (a target that sends fewer
        is what a diff is for)."""
        deadline = time.monotonic() + wait
        while self.open and self.from_target < self.from_recording \
                and time.monotonic() < deadline:
            self.read(max(0.0, deadline - time.monotonic()))

    def close(self, code: int = GOING_AWAY, reason: bytes = b"") -> None:
        """Send a close (recorded), read the target's answer for up to the timeout."""
        if not self.open or self.sock is None:
            return
        try:
            self._write(self.ws.send(CloseConnection(code=code, reason=reason.decode(
                "utf-8", "replace") or None)))
        except LocalProtocolError:
            self._end()
            return
        self.heard(WebsocketMessage(self.url, "client", "close",
                                    close_payload(code, reason), start=time.time(),
                                    client=self.local))
        deadline = time.monotonic() + self.timeout
        while self.open and time.monotonic() < deadline:
            self.read(max(0.0, deadline - time.monotonic()))
        self._end()

    def _write(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self._end()

    def _end(self) -> None:
        self.open = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _refused(event: RejectConnection, body: bytes) -> model.Response:
    headers = [(model.from_bytes(n), model.from_bytes(v)) for n, v in event.headers]
    return model.Response(event.status_code, "", headers, body)


class Conversations:
    """The websockets of one resend, found by the handshake they came from: a recorded
    message goes to the socket of its URL and client, else the latest of its URL (as
    the interchange formats pair them)."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str | None], Conversation] = {}
        self.by_url: dict[str, Conversation] = {}

    def heard_in_recording(self, message: WebsocketMessage) -> Conversation | None:
        """The recording's server said `message` here: its socket (None when it did not
        open) is read until the target has said as much."""
        conversation = self.of(message)
        if conversation is not None:
            conversation.from_recording += 1
            conversation.keep_up()
        return conversation

    def add(self, url: str, client: str | None, conversation: Conversation) -> None:
        self.by_key[(url, client)] = self.by_url[url] = conversation

    def of(self, message: WebsocketMessage) -> Conversation | None:
        return self.by_key.get((message.url, message.client)) or self.by_url.get(message.url)

    def __iter__(self) -> Iterator[Conversation]:
        return iter({id(c): c for c in self.by_key.values()}.values())

    def read(self) -> None:
        """Take what every open socket has sent so far, without waiting for more."""
        for conversation in self:
            conversation.drain(0.0, STEP_S)

    def finish(self, quiet: float = QUIET_S) -> None:
        """Read each socket until it has been quiet for `quiet` seconds (its timeout at
        most), then close it."""
        for conversation in self:
            conversation.drain(quiet, conversation.timeout)
            conversation.close()
