"""The recording format: an Exchange to one JSON line and back, for any bytes.

A recording is JSON Lines. Since format version 2 its first line is a header,
`{"format": "mpsdproxy-recording", "version": 2}`; a file without one is
version 1, which reads the same. The header may carry run metadata,
`"tags": {"build": "1234", "console": "devkit-07"}` (`run --tag`, `import --tag`),
which the fleet groups runs by. Every other line is one record::

    {"seq": 1,
     "start": "2026-11-25T09:37:44.123456Z", "end": "...", "duration_ms": 12.5,
     "client": "127.0.0.1:50412",
     "request": {"method": "PUT", "url": "https://...", "headers": [["Name", "value"], ...],
                 "body": {"json": {...}} | {"text": "..."} | {"base64": "..."} | null,
                 "encoded": {"base64": "..."}   # only when a Content-Encoding changed it},
     "response": {"status": 201, "reason": "Created", "headers": [...], "body": ...} | null,
     "error": null | "message why there was no response",
     "resource": {"kind": "session", "scid": ..., "template": ..., "name": ..., "element": ...},
     "classification": {"id": "201.created", "meaning": "...", "anomalies": [{"code", "message"}]},
     "provenance": {"source": "forwarded"} | {"source": "injected", "rule": ...} | ...}

Headers are [name, value] pairs so order and repeated headers survive. Text
follows the model's one rule (`model.from_bytes`): a byte that is not UTF-8 is
a lone surrogate in memory and a `\\udcNN` escape in the line, which every JSON
reader accepts and this one turns back into the same byte. A body is kept as
JSON only when its compact form is exactly the bytes that were sent and it is
shallow enough for every JSON tool; otherwise it is text, or base64 when not
UTF-8. Whatever the bytes, `encode_line` gives a line: an exchange is never
lost because of what it carried.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math
import re
import time
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from mpsdproxy import jsonbody
from mpsdproxy import model
from mpsdproxy.recording.redact import Redactor

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "header_line",
    "parse_tags",
    "is_header_line",
    "is_seq",
    "duration_of",
    "check_fields",
    "SEQ_PROBLEM",
    "encode_body",
    "decode_body",
    "timestamp",
    "parse_timestamp",
    "header",
    "to_record",
    "to_exchange",
    "encode_line",
]

FORMAT = "mpsdproxy-recording"
FORMAT_VERSION = 2

def header_line(tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The first line of a recording this version writes; `tags` (run metadata such as
    `{"build": "1234"}`) go in as `"tags"`, an added field older readers skip."""
    line: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION}
    if tags:
        line["tags"] = dict(tags)
    return line


#: What a tag key may hold: it becomes a column (and a Hive partition) name in the fleet.
TAG_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def parse_tags(pairs: Iterable[str]) -> dict[str, str]:
    """`("build=1234", "title=netrumble")` -> a dict; ValueError naming the bad pair.

    A key is a name (letters, digits, `_`, `.`, `-`; 64 at most) because the fleet
    groups and partitions by it; a value is any printable text up to 256 characters.
    """
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not TAG_KEY.fullmatch(key):
            raise ValueError(f"tag {pair!r}: should be KEY=VALUE with KEY a name "
                             "(letters, digits, _ . -)")
        if len(value) > 256 or not value.isprintable():
            raise ValueError(f"tag {pair!r}: the value should be printable, 256 characters "
                             "at most")
        tags[key] = value
    return tags


def is_header_line(item: Mapping[str, Any]) -> bool:
    return item.get("format") == FORMAT and "seq" not in item


#: The largest seq a record may carry: what a 64-bit signed integer holds (the replay's
#: index, DuckDB's BIGINT and Parquet keep seqs as such).
MAX_SEQ = 2**63 - 1
#: Why a record's seq is refused, for the readers' one line.
SEQ_PROBLEM = f"missing 'seq', or not a whole number from 0 to {MAX_SEQ}"


def is_seq(value: Any) -> bool:
    """Whether `value` can be a record's seq (a JSON true is not a number here)."""
    return type(value) is int and 0 <= value <= MAX_SEQ


def check_fields(record: Mapping[str, Any], fields: Iterable[tuple[str, type | tuple[type, ...]]],
                 prefix: str = "") -> str | None:
    """Why one of `fields` (name, type) of `record` is not of its type when present and
    not null (a JSON true is not a number here), or None: the problem names the field as
    `prefix` + name."""
    for name, kind in fields:
        value = record.get(name)
        if value is not None and (type(value) is bool or not isinstance(value, kind)):
            wanted = jsonbody.json_kind((kind[0] if isinstance(kind, tuple) else kind)())
            return (f"'{prefix}{name}' should be {wanted} or null, "
                    f"not {jsonbody.json_kind(value)}")
    return None


def duration_of(value: Any) -> float | None:
    """A record's `duration_ms` when it can be one: a finite number of milliseconds, not
    below 0 (a JSON true is not a number here); None, unknown, otherwise. (The fleet's
    SQL reads the field by the same rule: `fleet.engine.LINES_SELECT`.)"""
    if type(value) not in (int, float):
        return None
    duration = float(value)
    return duration if math.isfinite(duration) and duration >= 0 else None


def encode_body(raw: bytes | None, value: Any = jsonbody.INVALID) -> dict[str, Any] | None:
    """JSON stays JSON, text stays text, anything else is base64.

    A body is kept as JSON only when its compact re-encoding gives back the same
    bytes, so a recording can always reproduce what was on the wire. `value` is
    the body's JSON value when the caller has it already (`model.Request.json`).
    """
    if not raw:
        return None
    if raw[:1] in (b"{", b"["):
        # Strict: NaN and Infinity are not JSON, and a record must stay JSON for the
        # tools that read it; such a body stays text. A compact body is the UTF-8 the
        # encoder wrote, so it needs no decoding to be told from text or base64.
        if value is jsonbody.INVALID:
            value = jsonbody.parse(raw)
        if value is not jsonbody.INVALID and jsonbody.is_compact(value, raw):
            return {"json": value}
    try:
        return {"text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}


def decode_body(body: Mapping[str, Any] | None) -> bytes:
    """The bytes a recorded body stood for."""
    if not body:
        return b""
    if "json" in body:
        return jsonbody.compact(body["json"], strict=False).encode()
    if "text" in body:
        return model.to_bytes(str(body["text"]))
    if "base64" in body:
        return base64.b64decode(body["base64"])
    raise ValueError(f"body should have one of json, text, base64, not {sorted(body)}")


def header(pairs: Iterable[Any], name: str) -> str | None:
    """The first value of a header in recorded [name, value] pairs (any case)."""
    low = name.lower()
    for pair in pairs:
        if str(pair[0]).lower() == low:
            return str(pair[1])
    return None


def timestamp(epoch: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with microseconds, as records store times."""
    if epoch is None:
        return None
    frac, whole = math.modf(epoch)
    micros = round(frac * 1e6)
    sec = int(whole)
    if micros >= 1_000_000:
        sec, micros = sec + 1, micros - 1_000_000
    elif micros < 0:
        sec, micros = sec - 1, micros + 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{micros:06d}Z"


def parse_timestamp(value: str) -> float:
    """ISO 8601 UTC as written by `timestamp` -> epoch seconds (ValueError otherwise)."""
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    ).timestamp()


def _time_or_none(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _classification_dict(classification: Any) -> dict[str, Any] | None:
    if classification is None or isinstance(classification, dict):
        return classification
    return classification.to_dict()


def _part(message: model.Request | model.Response, part: dict[str, Any],
          with_body: bool = True) -> dict[str, Any]:
    """`part` (a request's method and URL, a response's status and reason) followed by
    the message's headers, its body (None when left out) and, when a Content-Encoding
    made them differ from the body, its wire bytes as `"encoded"` (so an export gives
    back exactly what was sent); a body kept only in part adds `"truncated"`."""
    part["headers"] = message.headers.pairs()
    body = message.body
    part["body"] = encode_body(body, _json_of(message)) if body and with_body else None
    if with_body and message.encoded is not None:
        part["encoded"] = {"base64": base64.b64encode(message.encoded).decode("ascii")}
    truncated = getattr(message, "truncated", None)
    if truncated is not None:
        part["truncated"] = truncated._asdict()
    return part


def _wire_bytes(part: Mapping[str, Any]) -> bytes | None:
    encoded = part.get("encoded")
    if not isinstance(encoded, Mapping) or not isinstance(encoded.get("base64"), str):
        return None
    return base64.b64decode(encoded["base64"])


def _json_of(message: model.Request | model.Response) -> Any:
    """The message's JSON value when its body looks like JSON (parsed once per message)."""
    return message.json if message.body[:1] in (b"{", b"[") else jsonbody.INVALID


#: Bytes that end a cut body when they could be part of a token: a kept start never
#: ends in a piece of a credential too short to be recognised as one.
_TOKEN_TAIL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-.%~"


def capped(exchange: model.Exchange, body_cap: int | None) -> model.Exchange:
    """`exchange` with a response body over `body_cap` bytes (decoded: a small gzip body
    can inflate past it) cut to its start, and any cut start ending before a token
    could begin: the record stays small and secret whatever the title was sent."""
    response = exchange.response
    if response is None:
        return exchange
    truncated = response.truncated
    if truncated is None:
        if body_cap is None or len(response.body) <= body_cap:
            return exchange
        truncated = model.Truncated(len(response.body), 0)
    head = response.body[:model.KEPT_OF_TRUNCATED].rstrip(_TOKEN_TAIL)
    if head == response.body and truncated.kept == len(head):
        return exchange
    cut = response.replace(body=head, encoded=None,
                           truncated=truncated._replace(kept=len(head)))
    return dataclasses.replace(exchange, response=cut)


def _truncated_of(part: Mapping[str, Any]) -> model.Truncated | None:
    value = part.get("truncated")
    if not isinstance(value, Mapping):
        return None
    size, kept = value.get("size"), value.get("kept")
    return model.Truncated(size if isinstance(size, int) else None,
                           kept if isinstance(kept, int) else 0, bool(value.get("wire")))


def to_record(exchange: model.Exchange, redactor: Redactor, classification: Any = None,
              response_body: bool = True, body_cap: int | None = None) -> dict[str, Any]:
    """The record of an exchange (without its seq), secrets redacted by `redactor`.

    `classification` is a `classify.Classification` or its dict. With
    `response_body=False` the response's body is left out (None): for readers
    that never look at it. Every credential goes first (`redactor.parts`, as
    `redactor.exchange` would, without a new Exchange), so every writer of records
    (recorder, import, resend) writes none. A response body over `body_cap` bytes, or
    one the proxy streamed, is kept in part (`capped`) and marked `"truncated"`.
    """
    exchange = capped(exchange, body_cap)
    request, response, error = redactor.parts(exchange)
    record: dict[str, Any] = {
        "start": timestamp(exchange.start),
        "end": timestamp(exchange.end),
        "duration_ms": exchange.duration_ms,
        "client": exchange.client,
        "request": _part(request, {"method": request.method, "url": request.url}),
        "response": None,
        "error": error,
        "resource": request.resource.to_dict(),
        "classification": _classification_dict(classification),
        "provenance": dict(exchange.provenance),
    }
    if response is not None:
        record["response"] = _part(
            response, {"status": response.status, "reason": response.reason}, response_body)
    return record


def _message_body(part: Mapping[str, Any]) -> tuple[bytes, Any]:
    """The body bytes of a recorded request or response, and its JSON value when the
    record kept it as JSON (so it is not parsed again)."""
    body = part.get("body")
    if body and "json" in body:
        return decode_body(body), body["json"]
    return decode_body(body), jsonbody.INVALID


def to_exchange(record: Mapping[str, Any]) -> model.Exchange:
    """The Exchange a record stands for. Raises `model.ModelError` (a ValueError) when
    the record holds what no wire could carry (CR/LF in a header, status 99999), and
    ValueError for a body that cannot be decoded."""
    req = record["request"]
    body, value = _message_body(req)
    request = model.Request(req["method"], req["url"], model.Headers(req.get("headers") or ()),
                            body, _wire_bytes(req)).knowing(json=value)
    response = None
    resp = record.get("response")
    if resp is not None:
        body, value = _message_body(resp)
        response = model.Response(resp["status"], resp.get("reason") or "",
                                  model.Headers(resp.get("headers") or ()), body,
                                  _wire_bytes(resp), _truncated_of(resp)).knowing(json=value)
    provenance = record.get("provenance")
    return model.Exchange(
        request=request,
        response=response,
        error=record.get("error"),
        start=_time_or_none(record.get("start")),
        end=_time_or_none(record.get("end")),
        client=record.get("client") if isinstance(record.get("client"), str) else None,
        provenance=provenance if isinstance(provenance, Mapping) else model.FORWARDED,
        seq=record.get("seq") if isinstance(record.get("seq"), int) else None,
    )


def _compact_deep(value: Any) -> str:
    """Compact JSON text of `value` however deeply it nests: written with a stack of
    its own, as the json module's recursion would stop."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Literal):
            out.append(item.text)
        elif isinstance(item, dict):
            parts: list[Any] = [_Literal("{")]
            for i, (key, child) in enumerate(item.items()):
                prefix = "," if i else ""
                parts += [_Literal(prefix + json.dumps(str(key)) + ":"), child]
            stack.extend(reversed([*parts, _Literal("}")]))
        elif isinstance(item, list | tuple):
            parts = [_Literal("[")]
            for i, child in enumerate(item):
                parts += [_Literal(","), child] if i else [child]
            stack.extend(reversed([*parts, _Literal("]")]))
        else:
            out.append(json.dumps(item, default=repr))
    return "".join(out)


class _Literal:
    """Text `_compact_deep` writes as is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _demoted(part: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A request or response whose JSON body is written as text instead."""
    if not part or not isinstance(part.get("body"), dict) or "json" not in part["body"]:
        return part
    return {**part, "body": {"text": _compact_deep(part["body"]["json"])}}


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One record as one line of UTF-8 JSON, newline included, whatever it holds.

    A record the fast encoder cannot write (lone surrogates, integers beyond 64
    bits) goes to the json module; one too deep for that keeps its bodies as text.
    """
    try:
        return jsonbody.dumps_line(record if type(record) is dict else dict(record),
                                   newline=True)
    except (ValueError, TypeError, RecursionError, OverflowError):
        pass
    flat = {**record, "request": _demoted(record.get("request")),
            "response": _demoted(record.get("response"))}
    return json.dumps(flat, separators=(",", ":"), default=repr).encode("ascii") + b"\n"
