"""Scripted titles: a session lifecycle that produces every row of the status table, two
titles under HTTP faults, and consoles that listen to RTA shoulder taps.

The script is data (a list of Steps, each naming the catalog entry it expects
the stand-in to answer with), so the demo and the end-to-end tests drive the
same lifecycle through different HTTP clients. `{etag}` in a header value is
the session's current ETag, `{stale}` the one before it (what a title that
missed an update still holds). `Console` and `rta_lobby` play a two-console lobby
whose host learns of changes from shoulder taps on its RTA websocket (`RtaSocket`).
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import wsproto
import wsproto.connection
import wsproto.events as wsevents
import wsproto.utilities

from mpsdproxy import rta

__all__ = ["SCID", "Step", "Result", "lifecycle", "run", "HttpClientSender", "Sender",
           "authorization", "session_path", "RtaSocket", "Console", "reads_newer",
           "reads_next_only", "rta_lobby", "describe"]

SCID = "7492baca-c1b4-440d-a391-b7ef00000001"
CONTRACT = ("x-xbl-contract-version", "107")


def session_path(name: str, template: str = "LobbySession", scid: str = SCID) -> str:
    return f"/serviceconfigs/{scid}/sessiontemplates/{template}/sessions/{name}"


def _me(xuid: str) -> dict[str, Any]:
    return {"members": {"me": {
        "constants": {"system": {"xuid": xuid, "initialize": True}},
        "properties": {"system": {"active": True}},
    }}}


@dataclass(frozen=True)
class Step:
    """One request of the script and the row of the table it should produce."""

    says: str  # what the title is doing, for people
    method: str
    path: str
    expect: str  # catalog entry id
    user: str | None = "alice"  # the caller's user hash; None sends no Authorization
    body: Any = None  # JSON-able, or bytes sent as they are
    headers: tuple[tuple[str, str], ...] = ()
    admin: bool = False  # a switch on the stand-in itself, not title traffic


@dataclass
class Result:
    step: Step
    status: int
    headers: dict[str, str]
    body: bytes
    etag: str | None = field(default=None)


#: send(method, path, headers, body, admin) -> (status, lower-cased headers, body)
Sender = Callable[[str, str, list[tuple[str, str]], bytes, bool], tuple[int, dict[str, str], bytes]]


def lifecycle(name: str = "demo-lobby") -> list[Step]:
    """Create, join, read, conditional read, stale write, throttling, outage, leave."""
    lobby = session_path(name)
    throttled = session_path(f"{name}-busy", "ThrottledSession")
    hopper = f"/serviceconfigs/{SCID}/hoppers/QuickMatch"
    return [
        Step("creates the lobby", "PUT", lobby, "201.created", body=_me("1001")),
        Step("reads the lobby", "GET", lobby, "200.ok"),
        Step("re-reads with its ETag", "GET", lobby, "304.not-modified",
             headers=(("If-None-Match", "{etag}"),)),
        Step("bob joins", "PUT", lobby, "200.ok", user="bob", body=_me("1002")),
        Step("writes with a stale ETag", "PUT", lobby, "412.if-match-session",
             body={"properties": {"custom": {"mode": "ctf"}}}, headers=(("If-Match", "{stale}"),)),
        Step("creates-only on an existing lobby", "PUT", lobby, "412.precondition-failed",
             body=_me("1001"), headers=(("If-None-Match", "*"),)),
        Step("reads a missing member", "GET", f"{lobby}/members/7", "204.get-element"),
        Step("reads a session that is gone", "GET", session_path(f"{name}-gone"),
             "204.get-session"),
        Step("sends broken JSON", "PUT", lobby, "400.bad-request", body=b'{"members": '),
        Step("forgets its token", "GET", lobby, "403.forbidden", user=None),
        Step("a spectator tries to write", "PUT", lobby, "403.read-only", user="spectator",
             body={"properties": {"custom": {"mode": "tdm"}}}),
        Step("asks for an unknown template", "GET", session_path(name, "NoSuchTemplate"),
             "404.not-found"),
        Step("uses the wrong verb", "POST", lobby, "405.method-not-allowed", body={}),
        Step("changes a constant", "PUT", lobby, "409.conflict",
             body={"constants": {"system": {"maxMembersCount": 99}}}),
        Step("creates a busy session", "PUT", throttled, "201.created", user="carol",
             body=_me("1003")),
        Step("polls it", "GET", throttled, "200.ok", user="carol"),
        Step("polls it again, too fast", "GET", throttled, "429.too-many-requests", user="carol"),
        Step("(the service goes down)", "POST", "/_emulator/overload", "",
             body={"retry_after": 2, "requests": 1}, admin=True),
        Step("reads during the outage", "GET", lobby, "503.service-unavailable"),
        Step("starts matchmaking", "POST", hopper, "200.ok",
             body={"giveUpDuration": 60, "preserveSession": "always",
                   "ticketSessionRef": {"scid": SCID, "templateName": "LobbySession",
                                        "name": name}}),
        Step("cancels its ticket", "DELETE", f"{hopper}/tickets/{{ticket}}", "202.accepted"),
        Step("bob leaves", "DELETE", f"{lobby}/members/me", "204.element-gone", user="bob"),
        Step("the host leaves, ending the lobby", "PUT", lobby, "204.put-session-deleted",
             body={"members": {"me": None}}),
    ]


def authorization(user: str) -> str:
    """The Authorization a scripted user sends: an XBL token whose user hash is `user`."""
    return f"XBL3.0 x={user};token-of-{user}"


def _headers(step: Step, etags: list[str]) -> list[tuple[str, str]]:
    values = {"etag": etags[-1] if etags else "", "stale": etags[-2] if len(etags) > 1 else '"0"'}
    headers = [CONTRACT, ("Content-Type", "application/json; charset=utf-8")]
    if step.user is not None:
        headers.append(("Authorization", authorization(step.user)))
    headers += [(k, v.format(**values)) for k, v in step.headers]
    return headers


def _body(step: Step) -> bytes:
    if step.body is None:
        return b""
    if isinstance(step.body, bytes):
        return step.body
    return json.dumps(step.body).encode()


def run(steps: Iterable[Step], send: Sender) -> list[Result]:
    """Play the steps in order, tracking ETags per session and the ticket id."""
    etags: dict[str, list[str]] = {}
    ticket = ""
    results: list[Result] = []
    for step in steps:
        path = step.path.replace("{ticket}", ticket)
        key = path.lower().split("/members/")[0]
        history = etags.setdefault(key, [])
        status, headers, body = send(step.method, path, _headers(step, history), _body(step),
                                     step.admin)
        etag = headers.get("etag")
        if etag and (not history or history[-1] != etag):
            history.append(etag)
        if "ticketid" in body.decode("utf-8", "replace").lower():
            ticket = json.loads(body).get("ticketId", ticket)
        results.append(Result(step, status, headers, body, etag))
    return results


def _call(send: Sender, says: str, method: str, path: str, user: str, body: Any = None,
          headers: tuple[tuple[str, str], ...] = (), expect: str = "") -> Result:
    step = Step(says, method, path, expect, user=user, body=body, headers=headers)
    status, got, data = send(method, path, _headers(step, []), _body(step), False)
    return Result(step, status, got, data, got.get("etag"))


def _play_pass(send: Sender, name: str, user: str, honours: bool,
               sleep: Callable[[float], None]) -> list[Result]:
    """Create a lobby, read it through an outage, lose a race to a friend's join,
    and recover from the 412, either as the service asks (`honours`) or not."""
    lobby = session_path(name)
    friend = f"{user}-friend"
    done = [_call(send, "creates the lobby", "PUT", lobby, user, _me("2001"))]
    read = _call(send, "reads the lobby", "GET", lobby, user)
    done.append(read)
    if read.status == 503:
        if honours:
            sleep(float(read.headers.get("retry-after", "1")))
        read = _call(send, "reads it again", "GET", lobby, user)
        done.append(read)
    seen = read.etag or done[0].etag or ""
    done.append(_call(send, "a friend joins", "PUT", lobby, friend, _me("2002")))
    change = {"properties": {"custom": {"map": "harbour"}}}
    stale = _call(send, "writes with the ETag it read", "PUT", lobby, user, change,
                  (("If-Match", seen),))
    done.append(stale)
    if stale.status == 412:
        retry_etag = (stale.etag or seen) if honours else seen
        done.append(_call(send, "retries the write", "PUT", lobby, user, change,
                          (("If-Match", retry_etag),)))
    done.append(_call(send, "the friend leaves", "DELETE", f"{lobby}/members/me", friend))
    done.append(_call(send, "leaves", "PUT", lobby, user, {"members": {"me": None}}))
    return done


def well_behaved(send: Sender, name: str = "good-lobby", user: str = "good",
                 sleep: Callable[[float], None] | None = None) -> list[Result]:
    """A title that waits out Retry-After and retries a 412 with the ETag it returned."""
    return _play_pass(send, name, user, True, sleep or time.sleep)


def misbehaving(send: Sender, name: str = "bad-lobby", user: str = "bad") -> list[Result]:
    """A title that retries at once after a 503 and resends its stale ETag after a 412."""
    return _play_pass(send, name, user, False, lambda _: None)


class HttpClientSender:
    """A Sender on the standard library's http.client (one keep-alive connection)."""

    def __init__(self, host: str, port: int, admin_port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.admin_port = admin_port or port
        self.conn = http.client.HTTPConnection(host, port, timeout=10)

    def __call__(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
                 admin: bool) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.admin_port, timeout=10) if admin \
            else self.conn
        try:
            conn.request(method, path, body=body or None, headers=dict(headers))
            response = conn.getresponse()
            data = response.read()
        finally:
            if admin:
                conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


# --- consoles that listen to RTA shoulder taps ---------------------------------------------

#: Seconds a console waits for its websocket's handshake, an answer or a tap.
RTA_WAIT = 10.0


class RtaSocket:
    """A console's RTA websocket (`GET /connect`, subprotocol `rta.xboxlive.com.V2`) on
    wsproto over a plain socket, as the stand-in serves it: the product does not depend on
    a websocket client package. A reader thread queues each text frame the service sends;
    `close` sends a close frame and waits (bounded) for the answer."""

    def __init__(self, host: str, port: int, user: str, timeout: float = RTA_WAIT) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.lock = threading.Lock()
        self.frames: queue.Queue[str | None] = queue.Queue()
        self.accepted = False
        self._partial: list[str] = []
        try:
            self._send(wsevents.Request(
                host=f"{host}:{port}", target="/connect", subprotocols=[rta.SUBPROTOCOL],
                extra_headers=[(b"authorization", authorization(user).encode())]))
            while not self.accepted:
                self._receive(self.sock.recv(65536))
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(None)
        self.reader = threading.Thread(target=self._read, name=f"rta-{user}", daemon=True)
        self.reader.start()

    def _send(self, event: wsevents.Event) -> None:
        # The reader thread answers pings and closes: one frame at a time on the socket.
        with self.lock:
            self.sock.sendall(self.ws.send(event))

    def _receive(self, data: bytes) -> bool:
        """Feed what the socket gave; False once the websocket is over."""
        if not data:
            raise ConnectionError("the RTA websocket closed before its handshake")
        with self.lock:
            self.ws.receive_data(data)
            events = list(self.ws.events())
        for event in events:
            if isinstance(event, wsevents.AcceptConnection):
                self.accepted = True
            elif isinstance(event, wsevents.RejectConnection):
                raise ConnectionError(f"the RTA websocket was refused ({event.status_code})")
            elif isinstance(event, wsevents.TextMessage):
                self._partial.append(event.data)
                if event.message_finished:
                    self.frames.put("".join(self._partial))
                    self._partial.clear()
            elif isinstance(event, wsevents.Ping):
                self._send(event.response())
            elif isinstance(event, wsevents.CloseConnection):
                if self.ws.state is wsproto.connection.ConnectionState.REMOTE_CLOSING:
                    self._send(event.response())
                return False
        return True

    def _read(self) -> None:
        try:
            while self._receive(self.sock.recv(65536)):
                pass
        except (OSError, ConnectionError, wsproto.utilities.LocalProtocolError):
            pass
        finally:
            self.frames.put(None)

    def send(self, text: str) -> None:
        self._send(wsevents.TextMessage(data=text))

    def next(self, timeout: float) -> rta.Message | None:
        """The next RTA message from the service within `timeout` s (None: none came, or
        the websocket is over)."""
        try:
            text = self.frames.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if text is None:
            self.frames.put(None)  # stays over for the next caller
            return None
        return rta.decode(text, from_client=False)

    def close(self) -> None:
        """Close as a title leaving does: a close frame, then the service's answer."""
        try:
            if self.ws.state is wsproto.connection.ConnectionState.OPEN:
                self._send(wsevents.CloseConnection(code=1000))
            self.reader.join(timeout=2.0)
        except OSError:
            pass
        finally:
            self.sock.close()


#: How a title decides to read the session on a tap: (tap's changeNumber, its copy's) -> read?
Listens = Callable[[int, int], bool]


def reads_newer(tapped: int, copy: int) -> bool:
    """As MultiplayerManager: read when the tap is newer than the copy, whatever it skipped
    (multiplayer_session_writer.cpp, OnSessionChanged compares it with the latest copy)."""
    return tapped > copy


def reads_next_only(tapped: int, copy: int) -> bool:
    """A title that trusts every change to be tapped in turn: it reads only on the
    changeNumber after its copy, so once a tap is lost it waits for it forever."""
    return tapped == copy + 1


class Console:
    """One console in an RTA lobby: HTTP through a Sender, taps from its RtaSocket, and
    its copy of the lobby (what it shows its player)."""

    def __init__(self, who: str, user: str, xuid: str, send: Sender, ws: RtaSocket,
                 listens: Listens = reads_newer,
                 say: Callable[[str], None] = lambda _: None) -> None:
        self.who, self.user, self.xuid = who, user, xuid
        self.send, self.ws, self.listens, self.say = send, ws, listens, say
        self.connection_id = ""
        self.copy: dict[str, Any] = {}

    @property
    def change_number(self) -> int:
        number = self.copy.get("changeNumber")
        return number if isinstance(number, int) else 0

    def close(self) -> None:
        self.ws.close()

    def subscribe(self) -> str:
        """Subscribe to session changes; the ConnectionId the answer carries."""
        self.ws.send(rta.subscribe_message(1))
        deadline = time.monotonic() + RTA_WAIT
        while time.monotonic() < deadline:
            answer = self.ws.next(deadline - time.monotonic())
            if answer is not None and answer.type is rta.Type.SUBSCRIBE:
                if answer.status != rta.Status.SUCCESS or not answer.connection_id:
                    raise ConnectionError(f"{self.who}: subscribe failed ({answer.status})")
                self.connection_id = answer.connection_id
                return self.connection_id
        raise TimeoutError(f"{self.who}: no answer to its RTA subscribe")

    def _call(self, says: str, method: str, path: str, body: Any = None) -> Result:
        result = _call(self.send, says, method, path, self.user, body)
        document = _document(result.body)
        if result.status in (200, 201) and document.get("changeNumber") is not None:
            self.copy = document
        return result

    def join(self, lobby: str) -> Result:
        """Join (or create) the lobby with this console's connection, as the library does."""
        me = _me(self.xuid)
        me["members"]["me"]["properties"]["system"].update({
            "connection": self.connection_id,
            "subscription": {"id": f"{self.xuid[-8:]}-0000-4000-8000-000000000000",
                             "changeTypes": ["everything"]}})
        return self._call("joins", "PUT", session_path(lobby), me)

    def write(self, lobby: str, custom: dict[str, Any]) -> Result:
        return self._call("writes", "PUT", session_path(lobby), {"properties": {"custom": custom}})

    def read(self, lobby: str) -> Result:
        return self._call("reads", "GET", session_path(lobby))

    def hear(self, lobby: str, reached: int, timeout: float = RTA_WAIT) -> bool:
        """Handle this console's taps for the lobby until one says it reached `reached` (or
        later), at most `timeout` s; whether such a tap came."""
        key = f"{SCID}~LobbySession~{lobby}".lower()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.ws.next(remaining)
            if message is None:
                break
            for tap in (t for t in message.taps if t.session == key):
                number = tap.change_number or 0
                self._tapped(lobby, number)
                if number >= reached:
                    return True
        self.say(f"  {self.who:<6} hears no tap for changeNumber {reached} "
                 f"within {timeout:g} s")
        return False

    def _tapped(self, lobby: str, number: int) -> None:
        had = self.change_number
        if number <= had:
            return  # its own write, or one it read: no news (the library ignores it too)
        if not self.listens(number, had):
            self.say(f"  {self.who:<6} <- tap changeNumber {number} (has {had}): "
                     f"not the one it waits for ({had + 1}), ignores it")
            return
        self.read(lobby)
        self.say(f"  {self.who:<6} <- tap changeNumber {number} (has {had}): reads the lobby "
                 f"-> {describe(self.copy)}")


def _document(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def describe(session: dict[str, Any]) -> str:
    """A lobby as a player sees it: its members and settings, and its changeNumber."""
    members = session.get("members")
    custom = (session.get("properties") or {}).get("custom") or {}
    settings = ", ".join(f"{k} {v}" for k, v in sorted(custom.items())) or "no settings"
    count = len(members) if isinstance(members, dict) else 0
    return f"{count} member(s), {settings} (changeNumber {session.get('changeNumber')})"


def rta_lobby(host: Console, friend: Console, lobby: str) -> bool:
    """Two consoles in a lobby: the host creates it, the friend joins and the host learns it
    from a tap; then the friend changes the map (a tap a fault may drop) and the mode.
    Whether the host's copy ends up current."""
    host.subscribe()
    friend.subscribe()
    host.join(lobby)
    host.say(f"  {host.who:<6} creates {lobby} -> {describe(host.copy)}")
    joined = friend.join(lobby)
    host.say(f"  {friend.who:<6} joins -> changeNumber {friend.change_number}")
    if joined.status not in (200, 201):
        raise RuntimeError(f"{friend.who} could not join {lobby}: {joined.status}")
    host.hear(lobby, friend.change_number)
    friend.write(lobby, {"map": "harbour"})
    host.say(f"  {friend.who:<6} sets the map -> changeNumber {friend.change_number}")
    host.hear(lobby, friend.change_number, timeout=0.5)
    friend.write(lobby, {"mode": "ctf"})
    host.say(f"  {friend.who:<6} sets the mode -> changeNumber {friend.change_number}")
    host.hear(lobby, friend.change_number, timeout=1.0)
    current = host.change_number == friend.change_number
    host.say(f"  {host.who:<6} shows {describe(host.copy)}: "
             + ("current" if current else f"STALE, the lobby is at {friend.change_number}"))
    return current
