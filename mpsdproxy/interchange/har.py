"""HAR 1.2 (browser devtools, mitmweb, Fiddler) as plain JSON, both ways.

Writing streams: the log's head, then one entry per exchange as it comes, so
memory stays flat however long the recording. Reading streams too
(`harstream`): one entry at a time, each capped in size.

Beyond what HAR 1.2 holds, an entry carries request bodies of any method
(`postData`; a body that is not text as base64 with `"encoding": "base64"`,
as HAR allows for `content`) and an `_mpsd` object with the record's seq,
client and provenance. An exchange without a response gets the empty
response HAR prescribes (`status` 0, `content` with size 0) plus `_error`.
Each entry's `comment` is its classification (`201.created`, with anomaly
codes in parentheses).

Bodies leave as they came: a request body is `postData` as the wire carried
it (`encoded`, base64, when a Content-Encoding made it differ), so a tool that
sends it again sends the same bytes; a response's `content.text` is the
decoded content as HAR prescribes, `bodySize` the bytes on the wire and
`content._encoded` those bytes (base64). Websocket messages go in their 101
handshake's entry's `_webSocketMessages`, as Chromium writes them (`type`
send/receive, `time` in epoch seconds, `opcode`, `data`: text for a text
frame, base64 for any other), and are read back from there; the entry is
written once its websocket closed, or at the end of the log.

HAR is strict UTF-8 text: a URL byte that is not UTF-8 is percent-encoded
(0xE9 -> `%E9`) and a header byte that is not UTF-8 is shown as `\\xNN`
(`model.printable`), so such an exchange exports, and imports as those
characters. Bodies are exact (text or base64).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from importlib import metadata
from typing import IO
from typing import Any
from urllib.parse import parse_qsl
from urllib.parse import urlsplit

from mpsdproxy import encoding
from mpsdproxy import model
from mpsdproxy.interchange.common import UNWRITABLE
from mpsdproxy.interchange.common import body_text
from mpsdproxy.interchange.common import check_exportable
from mpsdproxy.interchange.common import comment
from mpsdproxy.interchange.common import escape_non_utf8
from mpsdproxy.interchange.common import skip
from mpsdproxy.interchange.common import skip_record
from mpsdproxy.interchange.common import text_bytes
from mpsdproxy.interchange.harstream import iter_entries
from mpsdproxy.interchange.saz import MAX_BODY
from mpsdproxy.recording.messages import OPCODES
from mpsdproxy.recording.messages import WebsocketMessage

__all__ = ["write_har", "read_har", "har_entry", "entry_exchange", "entry_messages",
           "gather_messages"]

Item = model.Exchange | WebsocketMessage
_OPCODE_NAMES = {number: name for name, number in OPCODES.items()}


def _creator() -> dict[str, str]:
    try:
        own = metadata.version("mpsdproxy")
    except metadata.PackageNotFoundError:  # an uninstalled checkout still exports
        own = "0"
    return {"name": "mpsdproxy", "version": own}


def _headers(headers: model.Headers) -> list[dict[str, str]]:
    return [{"name": k, "value": model.printable(v)} for k, v in headers]


def _query(url: str) -> list[dict[str, str]]:
    query = urlsplit(url).query
    return [{"name": k, "value": v} for k, v in parse_qsl(query, keep_blank_values=True)]


def _content(body: bytes, content_type: str) -> dict[str, Any]:
    """`content` / `postData` fields for a body: text when it is text, else base64."""
    text = body_text(body, content_type)
    if text is None:
        return {"text": base64.b64encode(body).decode("ascii"), "encoding": "base64"}
    return {"text": text}


def _response(exchange: model.Exchange) -> dict[str, Any]:
    response = exchange.response
    if response is None:
        return {"status": 0, "statusText": "", "httpVersion": "", "cookies": [],
                "headers": [], "content": {"size": 0, "mimeType": ""}, "redirectURL": "",
                "headersSize": -1, "bodySize": -1,
                "_error": model.printable(exchange.error or "no response")}
    content_type = response.headers.get("content-type") or ""
    content: dict[str, Any] = {"size": len(response.body), "mimeType": content_type}
    if response.body:
        content.update(_content(response.body, content_type))
    wire = response.encoded
    if wire is not None:
        content["compression"] = len(response.body) - len(wire)
        content["_encoded"] = base64.b64encode(wire).decode("ascii")
    return {"status": response.status, "statusText": model.printable(response.reason),
            "httpVersion": "HTTP/1.1", "cookies": [], "headers": _headers(response.headers),
            "content": content,
            "redirectURL": model.printable(response.headers.get("location") or ""),
            "headersSize": -1, "bodySize": len(wire if wire is not None else response.body)}


def har_entry(exchange: model.Exchange) -> dict[str, Any]:
    """The HAR entry of an exchange. Raises ValueError when its URL is not absolute."""
    check_exportable(exchange)
    request = exchange.request
    start = exchange.start if exchange.start is not None else time.time()
    end = exchange.end if exchange.end is not None else start
    elapsed = max(0.0, (end - start) * 1000)
    url = escape_non_utf8(request.url)
    wire = request.encoded if request.encoded is not None else encoding.wire_body(
        request.body, request.headers.get("content-encoding"))
    har_request: dict[str, Any] = {
        "method": request.method, "url": url, "httpVersion": "HTTP/1.1", "cookies": [],
        "headers": _headers(request.headers), "queryString": _query(url),
        "headersSize": -1, "bodySize": len(wire),
    }
    if wire:
        content_type = request.headers.get("content-type") or ""
        har_request["postData"] = {"mimeType": content_type, "params": [],
                                   **_content(wire, content_type)}
    return {
        "startedDateTime": datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat(),
        "time": round(elapsed, 3),
        "request": har_request,
        "response": _response(exchange),
        "cache": {},
        "timings": {"send": 0, "wait": round(elapsed, 3), "receive": 0},
        "comment": comment(exchange),
        "_mpsd": {"seq": exchange.seq, "client": exchange.client,
                  "provenance": dict(exchange.provenance)},
    }


def _dumps(value: Any) -> str:
    """JSON text that is valid UTF-8 whatever `value` holds: text that is not (a lone
    surrogate left in a provenance, say) is written as a JSON escape instead."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value)
    return text


def _ws_message(message: WebsocketMessage) -> dict[str, Any]:
    """A websocket message as Chromium lists it in `_webSocketMessages`: `type` send or
    receive, `time` in epoch seconds, `opcode` as on the wire, `data` the text of a text
    frame and base64 for any other (as the DevTools protocol's `payloadData`). A text
    frame that is not UTF-8 is base64 too, marked `_encoding`."""
    out: dict[str, Any] = {"type": "send" if message.direction == "client" else "receive",
                           "time": message.start, "opcode": OPCODES[message.opcode]}
    text = None
    if message.opcode == "text":
        try:
            text = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            out["_encoding"] = "base64"
    out["data"] = text if text is not None else base64.b64encode(message.payload).decode(
        "ascii")
    if not message.fin:
        out["_fin"] = False
    return out


class _Sockets:
    """Websocket handshakes whose entries wait for their messages.

    HAR keeps a websocket's messages inside its handshake's entry, and a live
    recording interleaves them with the exchanges that went on meanwhile, so a
    handshake's entry is held (the others stream on) and written once both sides
    have sent a close, or at the end: it may stand after entries that started
    later, which HAR allows (viewers order by `startedDateTime`). A message finds
    its handshake by URL and client address, else by URL alone.
    """

    def __init__(self) -> None:
        self.open: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.by_url: dict[str, dict[str, Any]] = {}
        self.closed: dict[int, set[str]] = {}

    @staticmethod
    def is_handshake(exchange: model.Exchange) -> bool:
        return exchange.status == 101 or exchange.request.opens_websocket

    def hold(self, exchange: model.Exchange, entry: dict[str, Any]) -> dict[str, Any] | None:
        """Hold a handshake's entry; the entry it replaces (same URL and client), if any."""
        key = (entry["request"]["url"], exchange.client)
        replaced = self.open.pop(key, None)
        self.open[key] = self.by_url[key[0]] = entry
        entry["_webSocketMessages"] = []
        return replaced

    def add(self, message: WebsocketMessage) -> dict[str, Any] | None:
        """File a message with its handshake; the entry, when this close completes it,
        else None. KeyError when no handshake is held for it."""
        url = escape_non_utf8(message.url)
        entry = self.open.get((url, message.client)) or self.by_url[url]
        entry["_webSocketMessages"].append(_ws_message(message))
        if message.opcode != "close":
            return None
        sides = self.closed.setdefault(id(entry), set())
        sides.add(message.direction)
        if len(sides) < 2:
            return None
        for key in [k for k, v in self.open.items() if v is entry]:
            del self.open[key]
        if self.by_url.get(url) is entry:
            del self.by_url[url]
        return entry

    def rest(self) -> list[dict[str, Any]]:
        return list(self.open.values())


def gather_messages(items: Iterable[Item]) -> dict[int, list[WebsocketMessage]]:
    """Handshake seq -> its websocket messages, for a first pass over a recording, so
    `write_har` can write each handshake's entry in its place with its messages
    (a live recording has them after the exchanges that went on meanwhile). A
    message goes to the latest handshake with its URL and client, else its URL."""
    found: dict[int, list[WebsocketMessage]] = {}
    latest: dict[tuple[str, str | None], int] = {}
    by_url: dict[str, int] = {}
    for item in items:
        if isinstance(item, WebsocketMessage):
            seq = latest.get((item.url, item.client), by_url.get(item.url))
            if seq is not None:
                found[seq].append(item)
        elif _Sockets.is_handshake(item) and item.seq is not None:
            latest[(item.request.url, item.client)] = by_url[item.request.url] = item.seq
            found[item.seq] = []
    return found


def write_har(exchanges: Iterable[Item], fo: IO[str], skipped: list[str] | None = None,
              gathered: Mapping[int, list[WebsocketMessage]] | None = None) -> int:
    """Write exchanges as a HAR 1.2 log, one entry at a time; the number written.

    An exchange without an absolute URL is left out and noted in `skipped`, as
    is a websocket message whose handshake is not in the log. With `gathered`
    (`gather_messages` over the same items), each handshake's entry is written in
    its place with its messages; without, it waits for them (see `_Sockets`).
    """
    head = {"version": "1.2", "creator": _creator(), "pages": []}
    fo.write('{"log": ' + json.dumps(head)[:-1] + ', "entries": [\n')
    count = 0
    sockets = _Sockets()
    placed = {m.seq for ms in (gathered or {}).values() for m in ms if m.seq is not None}

    def put(entry: dict[str, Any] | None) -> None:
        nonlocal count
        if entry is not None:
            fo.write((",\n" if count else "") + _dumps(entry))
            count += 1

    for exchange in exchanges:
        if isinstance(exchange, WebsocketMessage):
            if exchange.seq is not None and exchange.seq in placed:
                continue
            try:
                put(sockets.add(exchange))
            except KeyError:
                skip(skipped, f"record {exchange.seq}: a websocket message whose handshake "
                              f"({model.printable(exchange.url)}) is not in the log")
            continue
        try:
            entry = har_entry(exchange)
        except UNWRITABLE as e:
            skip_record(skipped, exchange.seq, e)
            continue
        if gathered is not None and exchange.seq in gathered:
            entry["_webSocketMessages"] = [_ws_message(m) for m in gathered[exchange.seq]]
            put(entry)
        elif sockets.is_handshake(exchange):
            put(sockets.hold(exchange, entry))
        else:
            put(entry)
    for entry in sockets.rest():
        put(entry)
    fo.write("\n]}}\n")
    return count


# --- reading ---------------------------------------------------------------------------------

def _epoch(value: str) -> float:
    moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _read_headers(items: Iterable[Any]) -> model.Headers:
    """`[{"name", "value"}]` (most tools) or `[[name, value]]`; HTTP/2 pseudo-headers
    (`:authority`, which browsers list) are not headers and are left out."""
    pairs = []
    for item in items or ():
        name, value = (item["name"], item["value"]) if isinstance(item, dict) else item
        if not str(name).startswith(":"):
            pairs.append((str(name), str(value)))
    return model.Headers(pairs)


def _read_body(part: Mapping[str, Any] | None, headers: model.Headers) -> bytes:
    if not part or not part.get("text"):
        return b""
    text = part["text"]
    if part.get("encoding") == "base64":
        return base64.b64decode(text)
    return text_bytes(str(text), headers.get("content-type"))


def _wire(part: Mapping[str, Any] | None) -> bytes | None:
    """`content._encoded`: the wire bytes of a response this package exported."""
    value = part.get("_encoded") if isinstance(part, Mapping) else None
    return base64.b64decode(value) if isinstance(value, str) else None


def _read_response(entry: Mapping[str, Any]) -> tuple[model.Response | None, str | None]:
    har = entry.get("response") or {}
    if not har.get("status"):
        return None, str(har.get("_error") or "no response")
    headers = _read_headers(har.get("headers"))
    body = _read_body(har.get("content"), headers)
    return model.Response(int(har["status"]), str(har.get("statusText") or ""), headers,
                          body, _wire(har.get("content"))), None


def entry_exchange(entry: Mapping[str, Any], provenance: Mapping[str, Any]
                   ) -> model.Exchange:
    """The exchange of one HAR entry. `provenance` is used unless the entry carries its
    own (`_mpsd`, an entry exported from a recording). Raises ValueError (KeyError,
    TypeError) for an entry that is not one."""
    har_request = entry["request"]
    headers = _read_headers(har_request.get("headers"))
    wire = _read_body(har_request.get("postData"), headers)  # as the wire carried it
    request = model.Request(str(har_request["method"]), str(har_request["url"]), headers,
                            encoding.plain_body(wire, headers.get("content-encoding")),
                            wire)
    response, error = _read_response(entry)
    start = _epoch(entry["startedDateTime"])
    extra = entry.get("_mpsd") if isinstance(entry.get("_mpsd"), dict) else {}
    own = extra.get("provenance")
    client = extra.get("client")
    return model.Exchange(
        request=request, response=response, error=error, start=start,
        end=start + float(entry.get("time") or 0) / 1000,
        client=client if isinstance(client, str) else None,
        provenance=own if isinstance(own, dict) else provenance,
    )


def _payload(item: Mapping[str, Any]) -> bytes:
    """A message's bytes: `data` is text for a text frame (opcode 1) and base64 for any
    other, as Chromium writes it; ours marks base64 text frames with `_encoding`."""
    data = str(item.get("data") or "")
    if item.get("_encoding") == "base64":
        return base64.b64decode(data)
    if item.get("opcode", 1) != 1:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            pass  # a tool that wrote the frame as text after all
    return model.to_bytes(data)


def entry_messages(entry: Mapping[str, Any], exchange: model.Exchange,
                   skipped: list[str] | None = None, number: int = 0
                   ) -> Iterator[WebsocketMessage]:
    """The websocket messages of an entry's `_webSocketMessages` (ValueError, TypeError
    for one that is not a message). Chromium's `error` items are no frames: each is
    named in `skipped`."""
    for index, item in enumerate(entry.get("_webSocketMessages") or (), start=1):
        kind = item.get("type")
        if kind not in ("send", "receive"):
            skip(skipped, f"entry {number}: websocket message {index} is not a frame "
                          f"(type {model.printable(str(kind))!r})")
            continue
        opcode = _OPCODE_NAMES.get(item.get("opcode", 1))
        if opcode is None:
            raise ValueError(f"websocket message {index}: opcode {item.get('opcode')!r}")
        when = item.get("time")
        yield WebsocketMessage(
            url=exchange.request.url, direction="client" if kind == "send" else "server",
            opcode=opcode, payload=_payload(item),
            start=float(when) if isinstance(when, int | float) else None,
            client=exchange.client, provenance=exchange.provenance,
            fin=item.get("_fin") is not False)


def read_har(fo: IO[bytes], provenance: Mapping[str, Any], skipped: list[str] | None = None,
             *, max_body: int = MAX_BODY) -> Iterator[Item]:
    """Exchanges of a HAR file (ours, a browser's, Fiddler's), each followed by its
    websocket messages, read one entry at a time; CONNECT entries and entries that
    cannot be read are noted in `skipped`, by number.

    Raises ValueError when the file is not a HAR log, or an entry is over the
    cap (twice `max_body` characters, room for a body in base64, plus headers).
    """
    limit = 2 * max_body + (1 << 20)
    try:
        for number, entry in iter_entries(fo, limit):
            yield from _entry_items(number, entry, provenance, skipped)
    except UnicodeDecodeError as e:
        raise ValueError(f"not a HAR file: not UTF-8 ({e.reason})") from None
    except ValueError as e:
        raise ValueError(f"not a HAR file: {e}") from None


def _entry_items(number: int, entry: Any, provenance: Mapping[str, Any],
                 skipped: list[str] | None) -> Iterator[Item]:
    try:
        if str(entry["request"]["method"]).upper() == "CONNECT":
            skip(skipped, f"entry {number}: CONNECT")
            return
        exchange = entry_exchange(entry, provenance)
        messages = list(entry_messages(entry, exchange, skipped, number))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        why = f"no {e.args[0]!r} in it" if isinstance(e, KeyError) and e.args else e
        skip(skipped, f"entry {number}: cannot read it ({why})")
        return
    yield exchange
    yield from messages
