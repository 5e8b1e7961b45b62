"""The replay's own loopback websocket server: where a replayed RTA handshake is sent.

mitmproxy cannot answer a websocket handshake itself and then speak on the
socket with no server behind it (it fails when the title closes), so the
replayer points the title's handshake at this server instead: a real websocket
peer on 127.0.0.1 that mitmproxy relays like any other (so the recorder, the
live log, the RTA faults and the verdicts see every frame as they do live).

The replayer registers a `Feed` per handshake (`expect`) and puts the token it
gets in the handshake's `FEED_HEADER`; this server takes the feed of the token,
answers 101 with the RTA subprotocol, and from then on sends what the feed says:
on each message of the title, and whenever `nudge` says an exchange was served.
It runs on the event loop that starts it (mitmproxy's), so it needs no locks.
Speaks wsproto (mitmproxy's own dependency) directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

import wsproto
import wsproto.events
import wsproto.utilities
from wsproto.connection import ConnectionState

from mpsdproxy import rta
from mpsdproxy.replay.rta import Feed
from mpsdproxy.replay.rta import Hangup
from mpsdproxy.replay.rta import Outgoing

__all__ = ["FEED_HEADER", "Server"]

logger = logging.getLogger(__name__)

#: The header that tells this server which feed a handshake is for.
FEED_HEADER = "X-Mpsdproxy-Replay-Feed"
READ_SIZE = 64 * 1024
#: How long a close waits for the title's close frame before the socket is dropped.
CLOSE_GRACE = 2.0


class _Socket:
    """One accepted websocket and its feed."""

    def __init__(self, ws: wsproto.WSConnection, writer: asyncio.StreamWriter,
                 feed: Feed) -> None:
        self.ws = ws
        self.writer = writer
        self.feed = feed

    def send(self, frames: list[Outgoing]) -> None:
        for frame in frames:
            if self.ws.state is not ConnectionState.OPEN:
                return
            if isinstance(frame, Hangup):
                self.writer.write(self.ws.send(wsproto.events.CloseConnection(
                    frame.code, frame.reason)))
                asyncio.get_running_loop().call_later(CLOSE_GRACE, self.writer.close)
                return
            self.writer.write(self.ws.send(wsproto.events.TextMessage(frame)))


class Server:
    """Loopback websocket server for replayed RTA connections. Start it with `start`
    (idempotent) on the loop it is to run on."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._starting: asyncio.Lock | None = None
        self._expected: dict[str, Feed] = {}
        self._tokens = itertools.count(1)
        self._open: set[_Socket] = set()

    async def start(self) -> int:
        """Listen (once) and return the port."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, self.host, 0)
                self.port = self._server.sockets[0].getsockname()[1]
                logger.debug(f"RTA replay listening on {self.host}:{self.port}")
        assert self.port is not None
        return self.port

    def expect(self, feed: Feed) -> str:
        """A token for a handshake to carry in FEED_HEADER: its socket gets `feed`."""
        token = str(next(self._tokens))
        self._expected[token] = feed
        return token

    def nudge(self) -> None:
        """An exchange was served: send every open socket what became due."""
        for sock in list(self._open):
            sock.send(sock.feed.due())

    def open_sockets(self) -> int:
        return len(self._open)

    def close(self) -> None:
        """Stop listening and hang up every socket (sync: mitmproxy's `done` is)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for sock in list(self._open):
            sock.writer.close()
        self._open.clear()
        self._expected.clear()

    # -- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        sock: _Socket | None = None
        parts: list[str] = []
        try:
            while True:
                data = await reader.read(READ_SIZE)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, wsproto.events.Request):
                        sock = self._accept(ws, writer, event)
                        if sock is None:
                            return
                    elif isinstance(event, wsproto.events.TextMessage) and sock is not None:
                        parts.append(event.data)
                        if event.message_finished:
                            sock.send(sock.feed.receive("".join(parts)))
                            parts.clear()
                    elif isinstance(event, wsproto.events.Ping):
                        writer.write(ws.send(event.response()))
                    elif isinstance(event, wsproto.events.CloseConnection):
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            writer.write(ws.send(event.response()))
                        return
                if not data:
                    return
        except (ConnectionError, wsproto.utilities.LocalProtocolError,
                wsproto.utilities.RemoteProtocolError) as e:
            logger.debug(f"RTA replay socket ended: {e!r}")
        finally:
            if sock is not None:
                self._open.discard(sock)
            with contextlib.suppress(Exception):
                writer.close()

    def _accept(self, ws: wsproto.WSConnection, writer: asyncio.StreamWriter,
                request: wsproto.events.Request) -> _Socket | None:
        """Accept a handshake that carries a known token and offers the RTA subprotocol."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in request.extra_headers}
        feed = self._expected.pop(headers.get(FEED_HEADER.lower(), ""), None)
        subprotocol = rta.chosen_subprotocol(request.subprotocols)
        if feed is None or subprotocol is None:
            writer.write(ws.send(wsproto.events.RejectConnection(status_code=404)))
            return None
        writer.write(ws.send(wsproto.events.AcceptConnection(subprotocol=subprotocol)))
        sock = _Socket(ws, writer, feed)
        self._open.add(sock)
        sock.send(feed.due())
        return sock
