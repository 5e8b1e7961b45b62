"""The one translation between mitmproxy flows and the domain's `model` values.

Every addon that reads a flow reads it as a `model.Request` or `model.Exchange`
built here, and every addon that answers turns a `model.Response` into
mitmproxy's through `to_mitmproxy` (public API only: `http.Response.make`).
Nothing else in the package decodes a flow's headers, URL or body.

What a flow says, and what the domain value holds:
- the URL is the one the title asked for: the `mpsd` mark's `url` (set by the
  router before any redirect to an upstream), else the request's own;
- headers are decoded by the model's one rule (`model.Headers.from_raw`);
- a body is the content with any Content-Encoding undone (the raw bytes when
  that fails);
- a response counts only when the title received all of it (`complete_response`).

A flow from a hostile or broken peer can carry what the model refuses (a NUL
or lone CR in a header value, a method that is not a token, a status 600-999
mitmproxy lets through). The exchange is still built, so it is still recorded:
such characters are written as visible `\\xNN` escapes, and an unrepresentable
status becomes an error instead of a response.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote
from urllib.parse import urlsplit

from mitmproxy import connection
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import websocket
from mitmproxy.net import encoding

from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy.addons import common
from mpsdproxy.addons.common import KEY
from mpsdproxy.recording import messages

__all__ = [
    "BodyTap",
    "complete_response",
    "request_of",
    "response_of",
    "exchange_of",
    "to_mitmproxy",
    "flow_of",
    "websocket_data_of",
]

_FORBIDDEN = re.compile(f"[{model.BREAKS}]")
_NOT_TOKEN = re.compile(f"[^{model.TOKEN_CHARS}]")


class BodyTap:
    """A streamed body (`http.Response.stream`) on its way to the title: every chunk goes
    through unchanged; the first `keep` bytes and the whole length are kept, so the
    record can say what the title got without the proxy holding it all."""

    def __init__(self, keep: int = model.KEPT_OF_TRUNCATED) -> None:
        self.keep = keep
        self.head = bytearray()
        self.size = 0
        self.ended = False

    def __call__(self, data: bytes) -> bytes:
        if not data:  # mitmproxy's end of the body
            self.ended = True
            return data
        self.size += len(data)
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
        return data


def _streamed(response: http.Response) -> bool:
    return bool(response.stream)


def complete_response(flow: http.HTTPFlow) -> http.Response | None:
    """The response the title fully received, or None (none, or cut off mid-body).

    A streamed body (over the body cap) is never held: its response counts once it
    ended without an error."""
    response = flow.response
    if response is None:
        return None
    if response.raw_content is None:
        if not _streamed(response) or flow.error is not None:
            return None
        tap = response.stream
        if isinstance(tap, BodyTap) and not tap.ended:
            return None
    return response


def _body(message: http.Message, headers: model.Headers | None = None) -> bytes:
    """The content with its Content-Encoding undone, or the raw bytes when that fails.

    `headers` are the message's own, decoded: when they have no Content-Encoding the
    content is the raw bytes, known without mitmproxy's slower look-up."""
    raw = message.raw_content
    if not raw:  # most requests: nothing to decode, nor to look up
        return b""
    if headers is not None and headers.first("content-encoding") is None:
        return raw
    content = message.get_content(strict=False)
    if content is None:
        content = message.raw_content
    return content or b""


def _mark(flow: http.HTTPFlow) -> Mapping[str, Any]:
    mark = flow.metadata.get(KEY)
    return mark if isinstance(mark, Mapping) else {}


def _escape(text: str) -> str:
    """CR, LF and NUL as visible `\\xNN` text: what the model cannot hold, kept readable."""
    return _FORBIDDEN.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _token(text: str) -> str:
    """A method or header name as a token: other characters as `%XX`."""
    return _NOT_TOKEN.sub(lambda m: "".join(f"%{b:02X}" for b in model.to_bytes(m.group())),
                          text) or "%00"


def _escaped_headers(headers: http.Headers) -> model.Headers:
    fields = ((model.from_bytes(k), model.from_bytes(v)) for k, v in headers.fields)
    return model.Headers((_token(k), _escape(v)) for k, v in fields)


class _Built:
    """The model values built for one flow, each with the mitmproxy objects it was
    built from: kept on the flow itself, so a flow is translated once however many
    addons read it, and rebuilt as soon as any addon replaced what it came from.
    The keys hold the objects themselves (a tuple compares identical members as
    equal before asking them), so they cannot be fooled by an id reused after
    garbage collection."""

    __slots__ = ("request_key", "request", "response_key", "response", "exchange_key",
                 "exchange")

    def __init__(self) -> None:
        self.request_key: tuple[Any, ...] | None = None
        self.request: model.Request | None = None
        self.response_key: tuple[Any, ...] | None = None
        self.response: model.Response | None = None
        #: Compared by value (a tuple's == takes identical members as equal first).
        self.exchange_key: tuple[Any, ...] | None = None
        self.exchange: model.Exchange | None = None


#: The attribute of an HTTPFlow that holds its `_Built` (not part of the flow's state:
#: mitmproxy neither saves nor copies it).
_BUILT = "mpsd_built"


def forget(flow: http.HTTPFlow) -> None:
    """Drop the model values built for `flow` once its exchange is over.

    mitmproxy's flows die in reference cycles (a flow and the HTTP stream that
    handled it), which only the garbage collector breaks: whatever hangs off a
    flow waits for a collection and makes it longer. Dropped here, the models,
    their headers and the parsed body are freed at once. A later reader still
    gets the same values: they are built again (`exchange_of`)."""
    flow.__dict__.pop(_BUILT, None)


def _built(flow: http.HTTPFlow) -> _Built:
    built = flow.__dict__.get(_BUILT)
    if built is None:
        built = flow.__dict__[_BUILT] = _Built()
    return built


def request_of(flow: http.HTTPFlow) -> model.Request:
    """The request the title sent, as the domain sees it (see the module docstring)."""
    return _request_of(flow, _mark(flow), _built(flow))


def _request_of(flow: http.HTTPFlow, mark: Mapping[str, Any], built: _Built) -> model.Request:
    """`request_of`, told the flow's mark and memo (`exchange_of` has them already)."""
    request = flow.request
    data = request.data
    url = mark.get("url")
    key = (request, data.method, data.path, data.host, data.headers.fields, data.content, url)
    if built.request_key != key or built.request is None:
        built.request, built.request_key = _build_request(request, url), key
        known = mark.get("resource")
        if isinstance(known, Mapping):
            # The router worked the resource out from this path (never rewritten: the
            # title signs it), so it is not parsed twice.
            built.request.knowing(resource=resources.Resource.from_dict(dict(known)))
    return built.request


def _build_request(request: http.Request, url: Any) -> model.Request:
    if not url or not isinstance(url, str):
        url = request.url
    try:
        headers = model.Headers.from_raw(request.headers.fields)
        return model.Request(request.method, url, headers, _body(request, headers),
                             request.raw_content)
    except model.ModelError:
        pass
    body = _body(request)
    method, headers = _token(request.method), _escaped_headers(request.headers)
    for candidate in (_escape(url).replace(" ", "%20").replace("\t", "%09"),
                      _rebuilt_url(request)):
        try:
            return model.Request(method, candidate, headers, body, request.raw_content)
        except model.ModelError:
            continue
    return model.Request(method, f"{request.scheme or 'http'}://invalid/", headers, body)


def _rebuilt_url(request: http.Request) -> str:
    """A URL the model can hold for a request whose own URL cannot be read (a peer's
    garbage authority): its host and path percent-encoded, its port as a number."""
    host = quote(model.to_bytes(request.data.host), safe=".-_~[]:") or "invalid"
    if ":" in host and not host.startswith("["):
        host = host.replace(":", "%3A")
    path = quote(model.to_bytes(request.path), safe="/?&=%:@!$'()*+,;~-._")
    return f"{request.scheme or 'http'}://{host}:{request.port}{path or '/'}"


def response_of(flow: http.HTTPFlow) -> model.Response | None:
    """The complete response of a flow, as the domain sees it (None without one).

    Raises `model.ModelError` for a status outside 100-599, which no valid answer has.
    """
    response = complete_response(flow)
    if response is None:
        return None
    return _response_of(response, _built(flow))


def _response_of(response: http.Response, built: _Built) -> model.Response:
    """`response_of` for a complete response, told the flow's memo."""
    data = response.data
    key = (response, data.status_code, data.reason, data.headers.fields, data.content,
           response.stream)
    if built.response_key != key or built.response is None:
        built.response, built.response_key = _build_response(response), key
    return built.response


def _build_response(response: http.Response) -> model.Response:
    reason = model.from_bytes(response.data.reason)
    try:
        headers = model.Headers.from_raw(response.headers.fields)
        return model.Response(response.status_code, reason, headers,
                              *_response_body(response, headers))
    except model.ModelError:
        return model.Response(response.status_code, _escape(reason),
                              _escaped_headers(response.headers), *_response_body(response))


def _response_body(response: http.Response, headers: model.Headers | None = None
                   ) -> tuple[bytes, bytes | None, model.Truncated | None]:
    """Body, wire bytes and truncation of a response: a streamed one keeps only what its
    tap kept, as it came on the wire (a stream is never decoded)."""
    if response.raw_content is not None or not _streamed(response):
        return _body(response, headers), response.raw_content, None
    tap = response.stream
    if isinstance(tap, BodyTap):
        return bytes(tap.head), None, model.Truncated(tap.size, len(tap.head), wire=True)
    return b"", None, model.Truncated(None, 0, wire=True)  # streamed before any hook saw it


def _client(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    if not peer:
        return None
    return f"{peer[0]}:{peer[1]}"


def exchange_of(flow: http.HTTPFlow) -> model.Exchange:
    """The one flow -> domain translation: request, complete response or error, times
    (epoch seconds), client `ip:port`, provenance and seq from the `mpsd` mark.

    Built once per flow (see `_Built`) and again only when something it was built
    from has changed since: an addon's new response, the recorder's seq.
    """
    mark, built, failed = _mark(flow), _built(flow), flow.error
    error = failed.msg if failed else None
    complete = complete_response(flow)
    response = None
    if complete is not None:
        try:
            response = _response_of(complete, built)
        except model.ModelError as e:
            error = f"invalid response from the server: {e}"
    end = (complete.timestamp_end if complete is not None else None) or (
        failed.timestamp if failed else None)
    request = _request_of(flow, mark, built)
    provenance = mark.get("provenance")
    seq = mark.get("seq")
    key = (request, response, error, flow.request.timestamp_start, end,
           flow.client_conn.peername, provenance, seq)
    if built.exchange is not None and built.exchange_key == key:
        return built.exchange
    built.exchange_key = key
    built.exchange = model.Exchange(
        request=request,
        response=response,
        error=error,
        start=flow.request.timestamp_start,
        end=end,
        client=_client(flow),
        provenance=dict(provenance) if isinstance(provenance, Mapping) else model.FORWARDED,
        seq=seq if type(seq) is int else None,
    )
    return built.exchange


def to_mitmproxy(response: model.Response, http_version: str = "HTTP/1.1") -> http.Response:
    """A domain answer as mitmproxy's response, ready for `flow.response`.

    The body is encoded with the headers' Content-Encoding and Content-Length set
    to match, as `http.Response.make` does; the reason and every other header are
    the answer's own bytes.
    """
    out = http.Response.make(response.status, response.body, response.headers.raw())
    if response.encoded is not None:  # the very bytes the service sent
        out.raw_content = response.encoded
        out.headers["content-length"] = str(len(response.encoded))
    out.reason = model.to_bytes(response.reason)
    out.http_version = http_version
    return out


# --- flow files -----------------------------------------------------------------------------

def _address(value: str | None) -> tuple[str, int] | None:
    """`127.0.0.1:50412` or `[::1]:50412` -> (host, port)."""
    if not value or ":" not in value:
        return None
    host, _, port = value.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return None


def _wire(body: bytes, headers: http.Headers) -> bytes:
    """A decoded body encoded back with its Content-Encoding, as the wire carried it."""
    content_encoding = headers.get("content-encoding")
    if not body or not content_encoding:
        return body
    try:
        return encoding.encode(body, content_encoding)
    except ValueError:
        return body


def _wire_of(message: model.Request | model.Response, headers: http.Headers) -> bytes:
    """The bytes the wire carried: kept ones when the exchange has them."""
    if message.encoded is not None:
        return message.encoded
    return _wire(message.body, headers)


def flow_of(exchange: model.Exchange,
            classification: Mapping[str, Any] | None = None) -> http.HTTPFlow:
    """A finished, not-live mitmproxy flow for an exchange, its `mpsd` mark included
    (for mitmproxy flow files and HAR export). Headers are the exchange's own, in
    order; bodies are re-encoded with their Content-Encoding.

    Raises ValueError when the URL is not an absolute http(s) URL.
    """
    req = exchange.request
    split = urlsplit(req.url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError(f"not an absolute http(s) URL: {model.printable(req.url)!r}")
    start = exchange.start if exchange.start is not None else time.time()
    end = exchange.end if exchange.end is not None else start
    port = split.port or (443 if split.scheme == "https" else 80)
    client = connection.Client(peername=_address(exchange.client) or ("127.0.0.1", 0),
                               sockname=("127.0.0.1", 0), timestamp_start=start)
    client.timestamp_end = end
    flow = http.HTTPFlow(client, connection.Server(address=(split.hostname, port)))
    flow.timestamp_created = start
    headers = http.Headers(req.headers.raw())
    flow.request = http.Request(
        split.hostname, port, model.to_bytes(req.method), split.scheme.encode(), b"",
        model.to_bytes(req.path), b"HTTP/1.1", headers, _wire_of(req, headers), None,
        start, start)
    if exchange.response is not None:
        resp = exchange.response
        headers = http.Headers(resp.headers.raw())
        flow.response = http.Response(
            b"HTTP/1.1", resp.status, model.to_bytes(resp.reason), headers,
            _wire_of(resp, headers), None, end, end)
    else:
        flow.error = mflow.Error(exchange.error or "no response", timestamp=end)
    mark = {
        "url": req.url,
        "resource": req.resource.to_dict(),
        "provenance": dict(exchange.provenance),
        "classification": dict(classification) if classification is not None else None,
        "seq": exchange.seq,
    }
    if req.url != model.printable(req.url):
        del mark["url"]  # the request's own URL says the same, and a flow file takes it
    flow.metadata[KEY] = model.printable_data(mark)
    flow.live = False
    return flow


# -- websocket messages (the RTA connection) -----------------------------------------------

#: flow.metadata key where the RTA faults (`rtafaults.NOTE`) note the rule that acted on
#: a websocket message: `{"message": index, "rule", "scenario", "seed", "fault",
#: "injected"?: true}`, for the message at `index` of `flow.websocket.messages`.
FAULT_NOTE = "mpsd_rta_fault"
_NOT_PROVENANCE = frozenset({"message", "injected"})


def message_provenance(flow: http.HTTPFlow, index: int) -> dict[str, Any]:
    """Who sent message `index` of the flow's websocket: `injected` (with the rule, when
    a fault noted it) for a frame the proxy sent, else `forwarded` (with the rule that
    acted around it, if any)."""
    assert flow.websocket is not None
    injected = flow.websocket.messages[index].injected
    note = flow.metadata.get(FAULT_NOTE)
    if not isinstance(note, Mapping) or note.get("message") != index:
        return {"source": "injected"} if injected else dict(common.FORWARDED)
    source = "injected" if injected or note.get("injected") else "forwarded"
    return {"source": source, **{k: v for k, v in note.items() if k not in _NOT_PROVENANCE}}


def _url(flow: http.HTTPFlow) -> str:
    """The URL the title asked for (the mark's, before any redirect to an upstream)."""
    url = (common.mark(flow) or {}).get("url")
    return url if isinstance(url, str) and url else flow.request.url


def websocket_message_of(flow: http.HTTPFlow, index: int = -1) -> messages.WebsocketMessage:
    """Message `index` (the newest by default) of a websocket flow as a recording's
    message: mitmproxy hands over whole messages, text or binary, unmasked."""
    assert flow.websocket is not None
    position = index % len(flow.websocket.messages)
    message = flow.websocket.messages[position]
    return messages.WebsocketMessage(
        url=_url(flow), direction="client" if message.from_client else "server",
        opcode="text" if message.is_text else "binary", payload=message.content,
        start=message.timestamp, client=_client(flow),
        provenance=message_provenance(flow, position))


def websocket_close_of(flow: http.HTTPFlow) -> messages.WebsocketMessage | None:
    """How a websocket flow ended, as a `close` message (code and reason, as the close
    frame carries them; 1006 when the connection dropped without one), or None."""
    data = flow.websocket
    if data is None or data.close_code is None:
        return None
    payload = messages.close_payload(data.close_code, model.to_bytes(data.close_reason or ""))
    return messages.WebsocketMessage(
        url=_url(flow), direction="client" if data.closed_by_client else "server",
        opcode="close", payload=payload, start=data.timestamp_end, client=_client(flow))


#: Status code a close frame without one stands for (RFC 6455 7.1.5: "no status received").
NO_STATUS = 1005


def websocket_data_of(sent: list[messages.WebsocketMessage]
                      ) -> tuple[websocket.WebSocketData, list[messages.WebsocketMessage]]:
    """A websocket's recorded messages as mitmproxy keeps them on its flow (the inverse of
    `websocket_message_of` and `websocket_close_of`), and those it has no place for.

    mitmproxy holds whole text and binary messages (a fragmented one joined) and one
    close: who closed, the code and the reason. The answering close, pings and pongs
    are left out."""
    data = websocket.WebSocketData()
    left_out: list[messages.WebsocketMessage] = []
    for message in sent:
        if message.opcode in ("text", "binary"):
            data.messages.append(websocket.WebSocketMessage(
                messages.OPCODES[message.opcode], message.direction == "client",
                message.payload, message.start, dropped=message.dropped,
                injected=message.provenance.get("source") == "injected"))
        elif message.opcode == "continuation" and data.messages:
            data.messages[-1].content += message.payload
        elif message.opcode == "close" and data.close_code is None:
            code, reason = messages.close_of(message.payload)
            data.close_code = NO_STATUS if code is None else code
            data.close_reason = model.from_bytes(reason)
            data.closed_by_client = message.direction == "client"
            data.timestamp_end = message.start
        else:
            left_out.append(message)
    return data, left_out

