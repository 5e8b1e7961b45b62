"""The stand-in over HTTP/1.1: h11 on asyncio streams, plus the switches for scripts.

Wire bytes become a `model.Request` here (headers through `model.Headers.from_raw`,
the package's one decoding rule) and the `model.Response` goes back out as h11
events; everything in between is `Emulator.handle`. Keep-alive is served; garbage
gets 400 and the connection is closed; a silent connection is closed after
IDLE_TIMEOUT.

`GET /connect` on any host with `Upgrade: websocket` and an RTA subprotocol
(`rta.SUBPROTOCOLS`) becomes the Real-Time Activity websocket: h11 reads the request,
answers 101 and hands the bytes after it to wsproto; `rtahub.py` speaks RTA on it
and taps its subscribers whenever a session changes. Every other request keeps the
HTTP keep-alive loop.

The switches live below `/_emulator/`, never MPSD paths and never throttled or
overloaded: `POST /_emulator/overload` (`{"retry_after": 2, "requests": 1}`),
`POST /_emulator/recover`, `POST /_emulator/reset`, `GET /_emulator/sessions`,
`POST /_emulator/change` (`{"session": path}`: another client changed that session),
and for RTA `POST /_emulator/resync` (`[4]` to every websocket),
`POST /_emulator/rta/close` (close every websocket, as a dropped connection) and
`GET /_emulator/rta` (the open websockets, their ConnectionIds and subscriptions).

With a control token (`emulate --control-token T`, or one generated when the stand-in
listens beyond loopback) every switch needs `X-Emulator-Token: T` and answers 403
without it: anyone who can reach the port could otherwise reset or overload the
stand-in under a colleague's test. On loopback without a token they stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from typing import NamedTuple

import h11

from mpsdproxy import faults
from mpsdproxy import model
from mpsdproxy.emulator import protocol
from mpsdproxy.emulator import rtahub
from mpsdproxy.emulator.config import EmulatorConfig
from mpsdproxy.emulator.config import default_config
from mpsdproxy.emulator.config import load_config
from mpsdproxy.emulator.protocol import Refusal
from mpsdproxy.emulator.rtahub import Hub
from mpsdproxy.emulator.service import Emulator
from mpsdproxy.emulator.state import ChangeObserver

__all__ = ["answer", "serve", "run", "running"]

logger = logging.getLogger(__name__)

#: Request heads may carry long XBL tokens; bodies are session deltas.
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
#: A keep-alive connection that stays silent this long is closed.
IDLE_TIMEOUT = 60.0
READ_SIZE = 64 * 1024
#: The header a switch needs when the stand-in has a control token.
TOKEN_HEADER = "X-Emulator-Token"
#: A Host header that can stand in a URL as it is; anything else reads as localhost.
_HOST = re.compile(r"[A-Za-z0-9._~\-]+(:[0-9]*)?|\[[0-9A-Fa-f:.]+\](:[0-9]*)?")

ConfigSource = EmulatorConfig | str | os.PathLike[str] | None


# --------------------------------------------------------------------------------------
# The switches for scripts


class _Switch(NamedTuple):
    method: str
    act: Callable[[Emulator, model.Request], model.Response]


def _overload(emulator: Emulator, request: model.Request) -> model.Response:
    body = protocol.json_object(request, empty_ok=True)
    unknown = sorted(set(body) - {"retry_after", "requests"})
    if unknown:
        raise Refusal("400.bad-request", f"Unknown field {unknown[0]!r}; the fields are "
                                         "retry_after and requests.")
    try:
        emulator.overload(body.get("retry_after", faults.DEFAULT_RETRY_AFTER),
                          body.get("requests"))
    except ValueError as e:
        raise Refusal("400.bad-request", str(e)) from None
    outage = emulator.outage
    state = {"retry_after": outage.retry_after if outage else None,
             "requests": outage.requests if outage else None}
    return _ok(emulator, {"overload": state})


def _recover(emulator: Emulator, request: model.Request) -> model.Response:
    emulator.recover()
    return _ok(emulator, {"overload": None})


def _reset(emulator: Emulator, request: model.Request) -> model.Response:
    emulator.reset()
    return _ok(emulator, {"reset": True})


def _sessions(emulator: Emulator, request: model.Request) -> model.Response:
    return _ok(emulator, emulator.sessions())


def _ok(emulator: Emulator, document: object) -> model.Response:
    return protocol.reply("200.ok", emulator.wallclock(), session=document,
                          headers=[protocol.NO_STORE])


def _change(emulator: Emulator, request: model.Request) -> model.Response:
    """`{"session": "/serviceconfigs/.../sessions/{name}"}`: another client changed it. The
    answer is the session as a read returns it, with its new ETag."""
    body = protocol.json_object(request, empty_ok=False)
    path = body.get("session")
    if not isinstance(path, str) or set(body) != {"session"}:
        raise Refusal("400.bad-request", "Send {\"session\": \"/serviceconfigs/{scid}/"
                                         "sessiontemplates/{template}/sessions/{name}\"}.")
    changed = emulator.change(path)
    if changed is None:
        raise Refusal("404.not-found", f"No session at {path}.")
    document, etag = changed
    return protocol.reply("200.ok", emulator.wallclock(), session=document, etag=etag,
                          headers=[protocol.NO_STORE])


#: The switches below /_emulator/: action -> (method, what it does).
_SWITCHES: dict[str, _Switch] = {
    "overload": _Switch("POST", _overload),
    "recover": _Switch("POST", _recover),
    "reset": _Switch("POST", _reset),
    "sessions": _Switch("GET", _sessions),
    "change": _Switch("POST", _change),
}


class _RtaSwitch(NamedTuple):
    method: str
    act: Callable[[Hub], object]


#: The RTA switches: action -> (method, what it does to the server's hub; its answer).
_RTA_SWITCHES: dict[str, _RtaSwitch] = {
    "resync": _RtaSwitch("POST", lambda hub: {"resync": hub.resync()}),
    "rta/close": _RtaSwitch("POST", lambda hub: {"closed": hub.close_all()}),
    "rta": _RtaSwitch("GET", lambda hub: {"rta": hub.describe()}),
}


def _is_switch(path: str) -> bool:
    low = path.lower()
    return low == "/_emulator" or low.startswith("/_emulator/")


def _switch(emulator: Emulator, request: model.Request, path: str,
            hub: Hub | None) -> model.Response:
    action = path.lower().removeprefix("/_emulator").strip("/")
    switch = _SWITCHES.get(action) or _RTA_SWITCHES.get(action)
    if switch is None:
        valid = ", ".join(f"/_emulator/{a}" for a in [*_SWITCHES, *_RTA_SWITCHES])
        raise Refusal("404.not-found", f"No stand-in switch at {path}; the switches are "
                                       f"{valid}.")
    if request.method.upper() != switch.method:
        raise Refusal("405.method-not-allowed", f"Use {switch.method} for /_emulator/{action}.",
                      headers=[("Allow", switch.method)])
    if isinstance(switch, _Switch):
        return switch.act(emulator, request)
    if hub is None:
        raise Refusal("404.not-found", f"/_emulator/{action} needs the stand-in server's RTA "
                                       "websockets (serve, run or running).")
    return _ok(emulator, switch.act(hub))


def _check_token(request: model.Request, control_token: str | None) -> None:
    """Refuse a switch without the control token (when there is one); constant-time, so
    the answer's timing does not tell how much of a guess was right."""
    if not control_token:
        return
    given = request.headers.first(TOKEN_HEADER) or ""
    if not hmac.compare_digest(given.encode("utf-8", "replace"), control_token.encode()):
        raise Refusal("403.forbidden", f"The stand-in's control API needs the {TOKEN_HEADER} "
                                       "header with the token printed when it started.")


def answer(emulator: Emulator, request: model.Request, hub: Hub | None = None,
           control_token: str | None = None) -> model.Response:
    """What the stand-in server answers: a switch below /_emulator/, else the session
    directory (`emulator.handle`). `hub` is the server's RTA websockets, for the RTA
    switches (without one they answer 404); with `control_token` a switch needs it in
    `X-Emulator-Token` (403 without)."""
    path = protocol.path_of(request)
    if not _is_switch(path):
        return emulator.handle(request)
    try:
        _check_token(request, control_token)
        return _switch(emulator, request, path, hub)
    except Refusal as r:
        return protocol.refused(r, emulator.wallclock())


def watch(emulator: Emulator, observer: ChangeObserver) -> Callable[[], None]:
    """Have `observer` hear of every later session change (`state.Change`); the answer
    stops it."""
    return emulator.watch(observer)


# --------------------------------------------------------------------------------------
# HTTP/1.1 (h11 on asyncio streams)


def _is_rta(request: model.Request) -> bool:
    """GET /connect (any host): the RTA websocket, as the library opens it."""
    return (request.method.upper() == "GET"
            and protocol.path_of(request).lower() == rtahub.CONNECT_PATH)


def _has_body(status: int) -> bool:
    return status >= 200 and status not in (204, 304)


def _request_of(event: h11.Request, body: bytes) -> model.Request:
    """The wire request as the domain sees it (raises model.ModelError)."""
    headers = model.Headers.from_raw(event.headers.raw_items())
    target = model.from_bytes(event.target)
    if "://" in target:
        url = target  # absolute-form, as a proxy sends it
    else:
        host = headers.first("Host") or ""
        host = host if _HOST.fullmatch(host) else "localhost"
        url = f"http://{host}{target if target.startswith('/') else '/' + target}"
    return model.Request(model.from_bytes(event.method), url, headers, body)


def _failure(request: model.Request) -> model.Response:
    logger.exception(f"the stand-in failed on {request.method} {model.terminal_safe(request.url)}")
    return model.Response(500, "Internal Server Error",
                          [("Content-Type", "text/plain; charset=utf-8")],
                          b"The stand-in failed on this request; see its log.")


class _Connection:
    """One client connection: HTTP/1.1 keep-alive, answered by the Emulator."""

    def __init__(self, emulator: Emulator, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, hub: Hub, control_token: str | None) -> None:
        self.emulator = emulator
        self.control_token = control_token
        self.reader = reader
        self.writer = writer
        self.hub = hub
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)

    async def run(self) -> None:
        try:
            while True:
                request = await self._receive()
                if request is None:
                    return
                if _is_rta(request):
                    await self._websocket(request)
                    return
                await self._send(self._answer(request), head=request.method == "HEAD")
                if self.conn.our_state is h11.MUST_CLOSE:
                    return
                self.conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            await self._reject(str(e))
        except model.ModelError as e:
            await self._reject(str(e))
        except (OSError, TimeoutError, h11.LocalProtocolError) as e:
            logger.debug(f"stand-in connection ended: {e!r}")
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _receive(self) -> model.Request | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                if self.conn.they_are_waiting_for_100_continue:
                    self._write(self.conn.send(h11.InformationalResponse(status_code=100)))
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), IDLE_TIMEOUT)
                self.conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("request body too large", 413)
            elif isinstance(event, h11.EndOfMessage) and request is not None:
                return _request_of(request, bytes(body))
            else:  # ConnectionClosed, or PAUSED after the peer switched protocols
                return None

    def _answer(self, request: model.Request) -> model.Response:
        try:
            return answer(self.emulator, request, self.hub, self.control_token)
        except Exception:
            return _failure(request)

    async def _websocket(self, request: model.Request) -> None:
        """Answer 101 and speak RTA on the connection until it ends (400 and close for a
        request that is not an RTA websocket handshake)."""
        accepted = rtahub.handshake(request)
        if isinstance(accepted, str):
            response = faults.build("400.bad-request", extra_headers=protocol.standard_headers(
                time.time()), message=f"The RTA websocket at /connect: {accepted}.")
            await self._send(response, head=False, close=True)
            return
        # The service's own headers too, as on its every answer (the public capture's 101s
        # carry them, and Cache-Control: no-cache, no-store).
        around = [protocol.NO_STORE, *protocol.standard_headers(time.time())]
        headers = [*accepted, *((model.to_bytes(k), model.to_bytes(v)) for k, v in around)]
        self._write(self.conn.send(h11.InformationalResponse(status_code=101,
                                                             headers=headers)))
        await self.writer.drain()
        leftover, _ = self.conn.trailing_data
        await rtahub.serve_websocket(self.hub, self.reader, self.writer, bytes(leftover))

    def _write(self, data: bytes | None) -> None:
        if data:
            self.writer.write(data)

    async def _send(self, response: model.Response, *, head: bool, close: bool = False) -> None:
        headers = list(response.headers.raw())
        if _has_body(response.status):
            headers.append((b"Content-Length", str(len(response.body)).encode()))
        if close:
            headers.append((b"Connection", b"close"))
        event = h11.Response(status_code=response.status, headers=headers,
                             reason=model.to_bytes(response.reason))
        out = bytearray(self.conn.send(event) or b"")
        if response.body and _has_body(response.status) and not head:
            out += self.conn.send(h11.Data(data=response.body)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self._write(bytes(out))  # one write: one segment for small answers
        await self.writer.drain()

    async def _reject(self, problem: str) -> None:
        """400 for a request that cannot be read, then close (if an answer can still go)."""
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response = faults.build("400.bad-request", message=f"Malformed HTTP request: {problem}",
                                extra_headers=protocol.standard_headers(time.time()))
        with contextlib.suppress(Exception):
            await self._send(response, head=False, close=True)


async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *,
                hub: Hub | None = None, control_token: str | None = None) -> asyncio.Server:
    """Start answering HTTP/1.1 (and the RTA websocket) on host:port (0 picks a free port)
    with the emulator. `hub` holds the RTA websockets (a new one by default); it hears
    of the emulator's session changes until the loop's tasks end. With `control_token`
    the switches below /_emulator/ need it (`X-Emulator-Token`)."""
    hub = hub if hub is not None else Hub(wallclock=emulator.wallclock)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Shutdown cancels idle connections; ending quietly keeps asyncio's stream
        # callback from logging the cancellation as an error.
        with contextlib.suppress(asyncio.CancelledError):
            await _Connection(emulator, reader, writer, hub, control_token).run()

    server = await asyncio.start_server(connected, host, port)
    watcher = asyncio.get_running_loop().create_task(_watching(emulator, hub), name="rta-watch")
    hub.tasks.add(watcher)  # the loop keeps only a weak reference to a task
    watcher.add_done_callback(hub.tasks.discard)
    bound = server.sockets[0].getsockname()
    logger.info(f"MPSD stand-in listening on http://{bound[0]}:{bound[1]}")
    return server


async def _watching(emulator: Emulator, hub: Hub) -> None:
    """Tell the hub of every session change while the server's loop runs (shutdown, and
    the end of `asyncio.run`, cancel this task and so stop it)."""
    stop = watch(emulator, hub.changed)
    try:
        await asyncio.Event().wait()
    finally:
        stop()


async def _shutdown(server: asyncio.Server) -> None:
    """Stop listening and end every open connection (the loop is the stand-in's own)."""
    server.close()
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await server.wait_closed()


def _resolve(config: ConfigSource) -> EmulatorConfig:
    if config is None:
        return default_config()
    if isinstance(config, EmulatorConfig):
        return config
    return load_config(config)


# --------------------------------------------------------------------------------------
# Running: in the foreground until a signal, or in a background thread


async def _serve_until_signal(emulator: Emulator, host: str, port: int,
                              ready: Callable[[int], None] | None,
                              control_token: str | None) -> None:
    server = await serve(emulator, host, port, control_token=control_token)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        if ready is not None:
            ready(server.sockets[0].getsockname()[1])
        await stop.wait()
        logger.info("MPSD stand-in stopping")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await _shutdown(server)


def run(host: str = "127.0.0.1", port: int = 0,
        config_path: str | os.PathLike[str] | None = None,
        ready: Callable[[int], None] | None = None, control_token: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM. `ready(port)` is called once the port is bound;
    with `control_token` the control API needs it (`X-Emulator-Token`).

    Raises ConfigError (a ValueError) for a bad config and OSError when the
    port cannot be bound. Prints nothing itself; it logs.
    """
    emulator = Emulator(_resolve(config_path))
    asyncio.run(_serve_until_signal(emulator, host, port, ready, control_token))


class _ServerThread(threading.Thread):
    """The stand-in's event loop in a background thread, for `running`."""

    def __init__(self, emulator: Emulator, host: str, port: int) -> None:
        super().__init__(name="mpsd-standin", daemon=True)
        self.emulator = emulator
        self.host = host
        self.requested_port = port
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread
            self.error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        server = await serve(self.emulator, self.host, self.requested_port)
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await _shutdown(server)

    def wait_ready(self, timeout: float) -> int:
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the stand-in did not start within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.port

    def shutdown(self, timeout: float) -> None:
        loop, stop = self._loop, self._stop_event
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        self.join(timeout)
        if self.is_alive():
            logger.warning(f"the stand-in thread did not stop within {timeout} s")


@contextlib.contextmanager
def running(config: ConfigSource = None, *, emulator: Emulator | None = None,
            host: str = "127.0.0.1", port: int = 0,
            timeout: float = 10.0) -> Iterator[tuple[Emulator, int]]:
    """Serve in a background thread: `with running() as (emulator, port): ...`.

    `config` is an EmulatorConfig, a YAML path or None (the shipped config);
    pass `emulator` to serve one you built (an injected clock, seeded state).
    On exit the server stops, its connections close and the thread is joined.
    """
    thread = _ServerThread(emulator or Emulator(_resolve(config)), host, port)
    thread.start()
    try:
        bound = thread.wait_ready(timeout)
        yield thread.emulator, bound
    finally:
        thread.shutdown(timeout)
