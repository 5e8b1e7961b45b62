"""Websocket messages in a recording: one record per frame, beside the HTTP exchanges.

A capture of a title holds the RTA websocket too: the 101 handshake is an
exchange record, and every frame after it is a record of its own, written
after its handshake::

    {"seq": 12, "kind": "websocket", "start": "2016-09-20T20:50:01.018097Z",
     "client": "127.0.0.1:50412", "url": "https://rta.xboxlive.com/connect",
     "direction": "client" | "server",
     "opcode": "text" | "binary" | "close" | "ping" | "pong" | "continuation",
     "payload": {"text": "..."} | {"base64": "..."},
     "provenance": {...}}

A frame that is not the last of its message adds `"fin": false`. A payload is
text only for a text frame that is UTF-8; anything else is base64, so the
bytes come back exactly. Readers of HTTP records never see these:
`recording.read(path)` leaves them out, `read(path, messages=True)` yields them.

A text frame of the RTA websocket (`is_rta_url`: an RTA host, or `/connect` on
any host, the stand-in's) that holds an RTA message also carries it decoded,
so readers need no JSON-in-JSON and people can grep a recording for a tap::

    "rta": {"type": "event", "subscription_id": 0,
            "taps": [{"session": "<scid>~<template>~<name>", "changeNumber": 2,
                      "branch": "..."}]}

with `sequence`, `uri`, `status`, `subscription_id`, `connection_id` and
`taps` present only when the message has them. It is decoded from the text as
written (after redaction), so it never holds what the payload does not.
`rta_of(record)` reads it back as an `rta.Message`, decoding the payload of a
record written before the field existed.

A frame a fault kept from the title (a dropped tap, the message an `rta: close`
lost) leaves a note: the same record of the frame as the service sent it, with
`"dropped": true` and the fault's provenance, so a recording alone says what was
taken away (the sweep's matrix is built from it). The title never got it: `rta_of`
gives None for it and the verdicts never count it as delivered
(`WebsocketMessage.dropped`, `is_dropped`).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from urllib.parse import urlsplit

from mpsdproxy import model
from mpsdproxy import resources
from mpsdproxy import rta
from mpsdproxy.recording import codec

__all__ = ["KIND", "OPCODES", "DIRECTIONS", "RTA_PATH", "WebsocketMessage", "to_record",
           "from_record", "is_message", "is_dropped", "check_message", "is_rta_url",
           "rta_field", "rta_of", "close_payload", "close_of"]

KIND = "websocket"
#: Opcode names and their numbers on the wire (RFC 6455 section 5.2).
OPCODES: dict[str, int] = {"continuation": 0, "text": 1, "binary": 2, "close": 8,
                           "ping": 9, "pong": 10}
DIRECTIONS: tuple[str, ...] = ("client", "server")
#: The RTA websocket's path, on the service and on the stand-in alike.
RTA_PATH = "/connect"


@dataclass(frozen=True)
class WebsocketMessage:
    """One websocket frame: who sent it, its opcode and its payload (unmasked)."""

    url: str
    direction: str
    opcode: str
    payload: bytes = b""
    start: float | None = None
    client: str | None = None
    provenance: Mapping[str, Any] = field(default_factory=lambda: model.FORWARDED)
    fin: bool = True
    seq: int | None = None
    #: A note of a frame a fault kept from the title: recorded, never delivered.
    dropped: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"websocket direction should be client or server, "
                             f"not {self.direction!r}")
        if self.opcode not in OPCODES:
            raise ValueError(f"websocket opcode should be one of {', '.join(OPCODES)}, "
                             f"not {self.opcode!r}")
        if not isinstance(self.url, str) or not self.url:
            raise ValueError("a websocket message needs the URL of its handshake")


def is_message(record: Mapping[str, Any]) -> bool:
    """Whether a record line is a websocket message rather than an HTTP exchange."""
    return record.get("kind") == KIND


def is_dropped(record: Mapping[str, Any]) -> bool:
    """Whether a message record is the note of a frame a fault kept from the title."""
    return is_message(record) and record.get("dropped") is True


def _payload(message: WebsocketMessage, redactor: Any) -> dict[str, str]:
    if message.opcode == "text":
        try:
            text = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            redact_text = getattr(redactor, "text", None)  # credential shapes in free text
            if redactor is not None and getattr(redactor, "enabled", True) and redact_text:
                text = redact_text(text)
            return {"text": text}
    return {"base64": base64.b64encode(message.payload).decode("ascii")}


def to_record(message: WebsocketMessage, redactor: Any = None) -> dict[str, Any]:
    """The record of a message (without its seq); text payloads go through
    `redactor.text` when the redactor has one."""
    record: dict[str, Any] = {
        "kind": KIND,
        "start": codec.timestamp(message.start),
        "client": message.client,
        "url": message.url,
        "direction": message.direction,
        "opcode": message.opcode,
        "payload": _payload(message, redactor),
        "provenance": dict(message.provenance),
    }
    if not message.fin:
        record["fin"] = False
    if message.dropped:
        record["dropped"] = True
    text = record["payload"].get("text")
    if message.opcode == "text" and text is not None and is_rta_url(message.url):
        decoded = rta.decode(text, from_client=message.direction == "client")
        if decoded is not None:
            record["rta"] = rta_field(decoded)
    return record


def is_rta_url(url: str) -> bool:
    """Whether a websocket's URL is the RTA endpoint: an RTA host (`resources.RTA_HOSTS`),
    or `/connect` on any other (the stand-in on 127.0.0.1, a reverse-mode proxy)."""
    try:
        split = urlsplit(url)
    except ValueError:
        return False
    host = resources.bare_host(split.hostname or "")
    return host in resources.RTA_HOSTS or split.path.rstrip("/") == RTA_PATH


def rta_field(message: rta.Message) -> dict[str, Any]:
    """The `"rta"` field of a record: the decoded message as plain data."""
    field_: dict[str, Any] = {"type": message.type.name.lower()}
    for key in ("sequence", "uri", "status", "subscription_id", "connection_id"):
        value = getattr(message, key)
        if value is not None:
            field_[key] = value
    if message.type is rta.Type.EVENT:
        field_["taps"] = [{"session": t.session, "changeNumber": t.change_number,
                           "branch": t.branch} for t in message.taps]
    return field_


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _from_field(field_: Mapping[str, Any]) -> rta.Message | None:
    try:
        kind = rta.Type[str(field_.get("type", "")).upper()]
    except KeyError:
        return None
    connection = _str(field_.get("connection_id"))
    listed = field_.get("taps")
    taps = tuple(rta.Tap(str(t["session"]), _int(t.get("changeNumber")), _str(t.get("branch")))
                 for t in (listed if isinstance(listed, list) else ()) if isinstance(t, Mapping)
                 and isinstance(t.get("session"), str))
    return rta.Message(kind, sequence=_int(field_.get("sequence")), uri=_str(field_.get("uri")),
                       status=_int(field_.get("status")),
                       subscription_id=_int(field_.get("subscription_id")),
                       data={"ConnectionId": connection} if connection else None, taps=taps)


def rta_of(record: Mapping[str, Any]) -> rta.Message | None:
    """The RTA message a websocket record holds, or None (not a message record, not
    an RTA text frame, or not an RTA message). Reads the `"rta"` field; a record
    without it (written before it existed, or by hand) has its text payload decoded."""
    if not is_message(record) or is_dropped(record):
        return None  # a dropped frame's note: no message the title got
    found = record.get("rta")
    if isinstance(found, Mapping):
        return _from_field(found)
    payload = record.get("payload")
    url = record.get("url")
    if record.get("opcode") != "text" or not isinstance(payload, Mapping) \
            or not isinstance(payload.get("text"), str) or not isinstance(url, str) \
            or not is_rta_url(url):
        return None
    return rta.decode(payload["text"], from_client=record.get("direction") == "client")


#: The optional fields of a message record, each with its one type when not null (its
#: `start` and `client`, when not text, are unknown: `from_record`).
_FIELDS: tuple[tuple[str, type], ...] = (("provenance", dict), ("rta", dict))


def check_message(record: Mapping[str, Any]) -> str | None:
    """Why a record line is not a websocket message record, or None when it is one."""
    if not codec.is_seq(record.get("seq")):
        return codec.SEQ_PROBLEM
    if not isinstance(record.get("url"), str):
        return "a websocket message needs its 'url'"
    direction, opcode = record.get("direction"), record.get("opcode")
    if not isinstance(direction, str) or direction not in DIRECTIONS:
        return "a websocket message's 'direction' should be client or server"
    if not isinstance(opcode, str) or opcode not in OPCODES:
        return f"a websocket message's 'opcode' should be one of {', '.join(OPCODES)}"
    problem = codec.check_fields(record, _FIELDS)
    if problem:
        return problem
    payload = record.get("payload")
    if not (isinstance(payload, dict) and len(payload) == 1
            and isinstance(payload.get("text", payload.get("base64")), str)):
        return "a websocket 'payload' should be {text|base64: ...}"
    if "base64" in payload:
        try:
            base64.b64decode(payload["base64"], validate=True)
        except (binascii.Error, ValueError):
            return "a websocket 'payload' that is not base64"
    return None


def from_record(record: Mapping[str, Any]) -> WebsocketMessage:
    """The message a record stands for; ValueError for a record that is not one."""
    problem = check_message(record)
    if problem:
        raise ValueError(f"record {record.get('seq')}: {problem}")
    payload = record["payload"]
    data = (model.to_bytes(payload["text"]) if "text" in payload
            else base64.b64decode(payload["base64"]))
    start = record.get("start")
    provenance = record.get("provenance")
    return WebsocketMessage(
        url=record["url"], direction=record["direction"], opcode=record["opcode"],
        payload=data,
        start=codec.parse_timestamp(start) if isinstance(start, str) else None,
        client=record.get("client") if isinstance(record.get("client"), str) else None,
        provenance=provenance if isinstance(provenance, Mapping) else model.FORWARDED,
        fin=record.get("fin") is not False, seq=record["seq"], dropped=is_dropped(record))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's payload: the code, two bytes in network order, then the reason."""
    return struct.pack("!H", code) + reason


def close_of(payload: bytes) -> tuple[int | None, bytes]:
    """A close frame's code and reason; no code (None) in a payload under two bytes, as
    RFC 6455 7.1.5 has it ("no status received")."""
    if len(payload) < 2:
        return None, b""
    return struct.unpack("!H", payload[:2])[0], payload[2:]

