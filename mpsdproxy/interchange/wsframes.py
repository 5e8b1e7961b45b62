"""Fiddler's websocket frame files (`raw/NNN_w.txt` in a SAZ), both ways.

Fiddler saves the frames of a websocket session beside its 101 handshake, one
block per frame: a few header lines, a blank line, the frame as it was on the
wire (RFC 6455: masked when the client sent it), then CRLF::

    Request-Length: 64          (Response-Length: for a frame the server sent)
    ID: 1
    BitFlags: 0
    DoneRead: 2016-09-20T13:49:59.8175331-07:00
    BeginSend: ...
    DoneSend: ...

    <64 bytes of frame>

Reading unmasks payloads and names opcodes; writing masks client frames with
a zero key (valid, and the same frames give the same file).
"""

from __future__ import annotations

import datetime
import re
import struct
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass

from mpsdproxy.recording.messages import OPCODES

__all__ = ["Frame", "read_frames", "write_frames", "parse_time"]

_NAMES = {number: name for name, number in OPCODES.items()}


@dataclass(frozen=True)
class Frame:
    """One frame of a websocket session as Fiddler saved it."""

    direction: str  # "client" | "server"
    opcode: str
    payload: bytes
    time: float | None = None
    fin: bool = True


def parse_time(value: str | None) -> float | None:
    """Fiddler's time (ISO 8601, 7 fractional digits, an offset) -> epoch seconds."""
    if not value or value.startswith("0001-01-01"):
        return None
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def fiddler_time(epoch: float) -> str:
    """Epoch seconds -> Fiddler's time format (UTC)."""
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00"


def _unframe(data: bytes) -> tuple[bool, int, bytes]:
    """(fin, opcode number, unmasked payload) of one wire frame."""
    if len(data) < 2:
        raise ValueError("a frame shorter than its 2-byte head")
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    masked, length, pos = bool(data[1] & 0x80), data[1] & 0x7F, 2
    if length == 126:
        (length,), pos = struct.unpack_from("!H", data, pos), pos + 2
    elif length == 127:
        (length,), pos = struct.unpack_from("!Q", data, pos), pos + 8
    key = b""
    if masked:
        key, pos = data[pos:pos + 4], pos + 4
    payload = data[pos:pos + length]
    if len(payload) != length or len(key) != (4 if masked else 0):
        raise ValueError("a frame cut short")
    if masked and length:
        stream = (key * (length // 4 + 1))[:length]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
            length, "big")
    return fin, opcode, payload


def _frame(frame: Frame) -> bytes:
    """The wire bytes of a frame; a client's masked with a zero key."""
    head = bytearray([(0x80 if frame.fin else 0) | OPCODES[frame.opcode]])
    mask = 0x80 if frame.direction == "client" else 0
    size = len(frame.payload)
    if size < 126:
        head.append(mask | size)
    elif size < 1 << 16:
        head += bytes([mask | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask | 127]) + struct.pack("!Q", size)
    if mask:
        head += b"\x00\x00\x00\x00"  # a zero key leaves the payload as it is
    return bytes(head) + frame.payload


def read_frames(data: bytes) -> Iterator[Frame]:
    """The frames of a `_w.txt`. Raises ValueError (naming the frame) for a block
    that cannot be read; the frames before it have been yielded."""
    pos, number = 0, 0
    while True:
        while data.startswith(b"\r\n", pos):
            pos += 2
        if pos >= len(data):
            return
        number += 1
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            raise ValueError(f"frame {number}: no blank line after its headers")
        fields = {}
        for line in data[pos:end].split(b"\r\n"):
            name, _, value = line.partition(b":")
            fields[name.strip().lower().decode("ascii", "replace")] = value.strip().decode(
                "ascii", "replace")
        direction = "client" if "request-length" in fields else "server"
        size = fields.get("request-length") or fields.get("response-length") or ""
        if not size.isdigit():
            raise ValueError(f"frame {number}: no Request-Length or Response-Length")
        pos = end + 4
        wire = data[pos:pos + int(size)]
        pos += int(size)
        try:
            fin, opcode, payload = _unframe(wire)
        except (ValueError, struct.error) as e:
            raise ValueError(f"frame {number}: {e}") from None
        name = _NAMES.get(opcode)
        if name is None:
            raise ValueError(f"frame {number}: opcode {opcode} is not one RFC 6455 defines")
        yield Frame(direction, name, payload, parse_time(fields.get("doneread")), fin)


def write_frames(frames: Iterable[Frame]) -> bytes:
    """A `_w.txt` holding these frames, as Fiddler lays it out."""
    out = bytearray()
    for number, frame in enumerate(frames, start=1):
        wire = _frame(frame)
        kind = "Request-Length" if frame.direction == "client" else "Response-Length"
        when = fiddler_time(frame.time) if frame.time is not None else "0001-01-01T00:00:00"
        out += (f"\r\n{kind}: {len(wire)}\r\nID: {number}\r\nBitFlags: 0\r\n"
                f"DoneRead: {when}\r\nBeginSend: {when}\r\nDoneSend: {when}\r\n\r\n"
                ).encode("ascii")
        out += wire
    return bytes(out) + (b"\r\n" if out else b"")
