"""Connection faults: the only code that touches the title's connection itself.

- `end_without_answer` (`drop`): closes the client connection with no answer
  (`flow.kill()`: an orderly close, FIN, on HTTP/1; RST_STREAM on HTTP/2); in
  phase response the real answer is taken off the flow, so the recording says
  the title got none;
- `reset`: closes it abruptly: on HTTP/1, SO_LINGER 0 on the client socket
  before the kill, so the kernel sends a TCP RST (the client sees "connection
  reset by peer"); where the socket cannot be reached (WireGuard and local
  modes) it degrades to `drop`. On HTTP/2 the kill already resets the stream
  (RST_STREAM) and the connection's other requests go on;
- `hang`: holds the request unanswered until the client closes its side, and
  at most a given number of seconds, then ends it without an answer;
- `truncate`: the answer keeps its full Content-Length but only part of the
  body goes out, then the connection closes (`Connection: close` on HTTP/1), so
  the client sees a short read rather than waiting for bytes that never come
  (on HTTP/2 the stream ends short of its Content-Length).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx
from mitmproxy import http
from mitmproxy.connection import ConnectionState

from mpsdproxy.addons import common

__all__ = ["HANG_POLL", "client_socket", "end_without_answer", "hang", "note_lost", "reset",
           "truncate"]

#: Seconds a held request waits between two looks at its client connection.
HANG_POLL = 0.1


def _http1(version: str) -> bool:
    return version.upper().startswith("HTTP/1")


def note_lost(flow: http.HTTPFlow) -> None:
    """Keep the status of a real answer the title never gets, for the recording
    (provenance `lost_status`)."""
    info = common.mark(flow)
    if info is not None and flow.response is not None:
        info["provenance"]["lost_status"] = flow.response.status_code


def end_without_answer(flow: http.HTTPFlow) -> None:
    """Close the client connection with no answer. In phase response the real answer is
    taken off the flow too, so the classifier and the recorder describe what the title
    got (nothing); its status stays in the provenance as `lost_status`."""
    if flow.response is not None:
        note_lost(flow)
        flow.response = None
    flow.kill()


def client_socket(flow: http.HTTPFlow) -> Any:
    """The client connection's socket, from mitmproxy's connection handler (None when
    unreachable: not a live TCP connection, or a mode without sockets)."""
    try:
        handler = ctx.master.addons.get("proxyserver").connections[flow.client_conn.id]
        writer = handler.transports[handler.client].writer
        return writer.get_extra_info("socket")
    except (AttributeError, KeyError, TypeError):
        return None


def reset(flow: http.HTTPFlow) -> str | None:
    """Abort the client connection: with SO_LINGER 0 the close sends a TCP RST. On HTTP/2
    the kill already resets just this stream (RST_STREAM), leaving the other requests on
    the connection alone. Returns why the connection was only closed, not reset (None
    when it was reset)."""
    if not _http1(flow.request.http_version):
        end_without_answer(flow)
        return None
    why = None
    sock = client_socket(flow)
    try:
        if sock is None:
            raise OSError("no socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as e:
        why = str(e)
    end_without_answer(flow)
    return why


async def hang(flow: http.HTTPFlow, most: float) -> float:
    """Hold the request unanswered until the client goes away, at most `most` seconds;
    then end the flow without an answer. Returns the seconds it was held."""
    started = time.monotonic()
    deadline = started + most
    while flow.live and not flow.error and time.monotonic() < deadline:
        if not flow.client_conn.state & ConnectionState.CAN_READ:
            break
        await asyncio.sleep(min(HANG_POLL, max(0.0, deadline - time.monotonic())))
    held = time.monotonic() - started
    if flow.killable:
        end_without_answer(flow)
    return held


def truncate(response: http.Response, cut: Callable[[bytes], bytes], http_version: str) -> bool:
    """Cut the body short (`cut` says how) while the headers still promise all of it;
    whether there was anything to cut. On HTTP/1 the connection is closed after the
    short body, so the client sees a short read at once instead of waiting for the
    missing bytes."""
    raw = response.raw_content or b""
    if not raw:
        return False
    response.raw_content = cut(raw)
    response.headers.pop("transfer-encoding", None)
    response.headers["Content-Length"] = str(len(raw))
    if _http1(http_version):
        response.headers["Connection"] = "close"
    return True
