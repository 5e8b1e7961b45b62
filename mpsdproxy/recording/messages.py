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
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mpsdproxy import model
from mpsdproxy.recording import codec

__all__ = ["KIND", "OPCODES", "DIRECTIONS", "WebsocketMessage", "to_record", "from_record",
           "is_message", "check_message"]

KIND = "websocket"
#: Opcode names and their numbers on the wire (RFC 6455 section 5.2).
OPCODES: dict[str, int] = {"continuation": 0, "text": 1, "binary": 2, "close": 8,
                           "ping": 9, "pong": 10}
DIRECTIONS: tuple[str, ...] = ("client", "server")


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
    return record


def check_message(record: Mapping[str, Any]) -> str | None:
    """Why a record line is not a websocket message record, or None when it is one."""
    if not isinstance(record.get("seq"), int):
        return "missing or non-integer 'seq'"
    if not isinstance(record.get("url"), str):
        return "a websocket message needs its 'url'"
    if record.get("direction") not in DIRECTIONS:
        return "a websocket message's 'direction' should be client or server"
    if record.get("opcode") not in OPCODES:
        return f"a websocket message's 'opcode' should be one of {', '.join(OPCODES)}"
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
        fin=record.get("fin") is not False, seq=record["seq"])
