"""Recordings: one exchange per JSON line, redacted before it touches disk.

The outline of a record is a contract that CI jobs and other tools read
(fields may be added, these stay)::

    {"seq": 1,
     "start": "2026-11-25T09:37:44.123456Z", "end": "...", "duration_ms": 12.5,
     "client": "127.0.0.1:50412",
     "request": {"method": "PUT", "url": "https://...", "headers": [["Name", "value"], ...],
                 "body": {"json": {...}} | {"text": "..."} | {"base64": "..."} | null},
     "response": {"status": 201, "reason": "Created", "headers": [...], "body": ...} | null,
     "error": null | "message why there was no response",
     "resource": {"kind": "session", "scid": ..., "template": ..., "name": ..., "element": ...},
     "classification": {"id": "201.created", "meaning": "...", "anomalies": [{"code", "message"}]},
     "provenance": {"source": "forwarded"} | {"source": "injected", "rule": ...} | ...}

Headers are [name, value] pairs so order and repeated headers survive. A
redacted value reads `redacted:` plus 12 hex digits of its SHA-256: secret, yet
two users (or two tokens) stay distinguishable.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from typing import Any

from mpsdproxy import jsonbody

__all__ = [
    "DEFAULT_REDACT",
    "FORMAT_VERSION",
    "Redactor",
    "redact_value",
    "encode_body",
    "decode_body",
    "timestamp",
    "header",
    "Writer",
    "RecordError",
    "ReadIssue",
    "read",
    "iter_records",
    "check_outline",
]

FORMAT_VERSION = 1

#: Headers that carry credentials (protocol notes §2.1, §2.3): never written raw.
DEFAULT_REDACT: tuple[str, ...] = ("Authorization", "Signature", "Cookie", "Set-Cookie")

REDACTED_PREFIX = "redacted:"
_REDACTED = re.compile(r"redacted:[0-9a-f]{12}")


@functools.lru_cache(maxsize=1024)
def redact_value(value: str) -> str:
    """`redacted:` + a short stable hash, so equal secrets stay recognisably equal.

    Remembered for the latest values: a title sends the same token on every call.
    """
    if _REDACTED.fullmatch(value):
        return value  # never hash a hash: redaction is idempotent
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
    return REDACTED_PREFIX + digest[:12]


class Redactor:
    """Replaces the values of secret headers. Names compare case-insensitively."""

    def __init__(self, names: Iterable[str] = DEFAULT_REDACT, enabled: bool = True) -> None:
        self.names = frozenset(n.lower() for n in names)
        self.enabled = enabled

    def headers(self, pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
        """[name, value] pairs with secret values redacted. Takes (str, str) pairs or
        mitmproxy's Headers (read from its raw fields, decoded as its items() would)."""
        fields = getattr(pairs, "fields", None)
        if isinstance(fields, tuple):
            return [self._field(k, v) for k, v in fields]
        if not self.enabled:
            return [[k, v] for k, v in pairs]
        names = self.names
        return [[k, redact_value(v) if k.lower() in names else v] for k, v in pairs]

    def _field(self, key: bytes, value: bytes) -> list[str]:
        """One raw field as Headers.items() decodes it, its value redacted when secret:
        decoding and redacting in one pass over the fields."""
        name = key.decode("utf-8", "surrogateescape")
        text = value.decode("utf-8", "surrogateescape")
        if self.enabled and name.lower() in self.names:
            text = redact_value(text)
        return [name, text]


def encode_body(raw: bytes | None, content_type: str | None = None) -> dict[str, Any] | None:
    """JSON stays JSON, text stays text, anything else is base64.

    A body is kept as JSON only when its compact re-encoding gives back the same
    bytes, so a recording can always reproduce what was on the wire.
    """
    if not raw:
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode("ascii")}
    if text[:1] in "{[":
        # Parsed once per body: the classifier has usually parsed these bytes already.
        # Strict: NaN and Infinity are not JSON, and a record must stay JSON for the
        # tools that read it; such a body stays text.
        value = jsonbody.parse(raw)
        if value is not jsonbody.INVALID and jsonbody.is_compact(value, raw):
            return {"json": value}
    return {"text": text}


def decode_body(body: dict[str, Any] | None) -> bytes:
    """The bytes a recorded body stood for."""
    if not body:
        return b""
    if "json" in body:
        return jsonbody.compact(body["json"], strict=False).encode()
    if "text" in body:
        return str(body["text"]).encode()
    if "base64" in body:
        return base64.b64decode(body["base64"])
    raise ValueError(f"body should have one of json, text, base64, not {sorted(body)}")


def header(pairs: Iterable[Any], name: str) -> str | None:
    """The first value of a header in [name, value] pairs, compared case-insensitively."""
    low = name.lower()
    for pair in pairs:
        if str(pair[0]).lower() == low:
            return str(pair[1])
    return None


#: The text of the latest whole seconds (a record's start and end are often in two).
_seconds: dict[int, str] = {}
_SECONDS_KEPT = 64


def timestamp(epoch: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with microseconds, as records store times.

    The same text `datetime.fromtimestamp(epoch, UTC).strftime(...%fZ)` gives
    (microseconds rounded half to even), a quarter of its cost: every record has
    two, and most records share their seconds with the ones before.
    """
    if epoch is None:
        return None
    frac, whole = math.modf(epoch)
    micros = round(frac * 1e6)
    sec = int(whole)
    if micros >= 1_000_000:
        sec, micros = sec + 1, micros - 1_000_000
    elif micros < 0:
        sec, micros = sec - 1, micros + 1_000_000
    text = _seconds.get(sec)
    if text is None:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        if len(_seconds) >= _SECONDS_KEPT:
            _seconds.clear()
        _seconds[sec] = text
    return f"{text}.{micros:06d}Z"


def parse_timestamp(value: str) -> float:
    """ISO 8601 UTC as written by `timestamp` -> epoch seconds."""
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    ).timestamp()


class Writer:
    """Appends records as JSON lines and flushes each one.

    Flushing per record means a killed proxy loses at most the exchange in
    flight. Sequence numbers continue from the last record of an existing file,
    so appending to a recording keeps them unique and contiguous.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.seq = _last_seq(self.path)
        # Unbuffered: each line goes to the operating system in one write, which is
        # the flush (a buffer in front would only copy it once more).
        self._file: IO[bytes] = open(self.path, "ab", buffering=0)  # noqa: SIM115
        if not _ends_with_newline(self.path):
            # A killed writer left half a line: end it, or the next record would be
            # glued onto it and lost with it.
            self._write_all(b"\n")

    def write(self, record: dict[str, Any]) -> int:
        """Stamp the next sequence number on `record`, write it, flush. Returns seq."""
        self.seq += 1
        self._write_all(jsonbody.dumps_line({"seq": self.seq, **record}, newline=True))
        return self.seq

    def _write_all(self, data: bytes) -> None:
        """`data` in one write as a rule; the rest of a short one is written after it."""
        written = self._file.write(data)
        if written == len(data):
            return
        view = memoryview(data)
        while written != len(view):
            if not written:
                raise OSError(f"could not write to {self.path}")
            view = view[written:]
            written = self._file.write(view)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: str) -> bool:
    """True for an empty file or one whose last byte ends a line."""
    with open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _last_seq(path: str) -> int:
    """The highest seq of an existing recording (0 for a new or empty file)."""
    if not os.path.exists(path):
        return 0
    last = 0
    for item in iter_records(path):
        if isinstance(item, dict):
            last = max(last, int(item.get("seq") or 0))
    return last


class RecordError(ValueError):
    """A recording line that cannot be read; names the file and line."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class ReadIssue:
    """A line the reader skipped, and why: reported, never silently dropped."""

    path: str
    line: int
    problem: str
    truncated: bool = False

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.problem}"


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any] | ReadIssue]:
    """Stream records from a recording, yielding a ReadIssue for each bad line.

    A last line without its newline is what a killed writer leaves behind: it
    is reported as truncated rather than raised.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            complete = line.endswith("\n")
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as e:
                if not complete:
                    yield ReadIssue(path, number, "truncated last line (writer stopped mid-record)",
                                    truncated=True)
                else:
                    yield ReadIssue(path, number, f"not valid JSON: {e}")
                continue
            if not isinstance(item, dict):
                kind = type(item).__name__
                yield ReadIssue(path, number, f"a record should be a JSON object, not {kind}")
                continue
            problem = check_outline(item)
            if problem:
                yield ReadIssue(path, number, problem)
                continue
            yield item


def check_outline(item: dict[str, Any]) -> str | None:
    """Why a parsed line is not a record, or None when it is one."""
    if not isinstance(item.get("seq"), int):
        return "missing or non-integer 'seq'"
    request = item.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) \
            or not isinstance(request.get("url"), str):
        return "missing 'request' with 'method' and 'url'"
    response = item.get("response")
    if response is not None and (
        not isinstance(response, dict) or not isinstance(response.get("status"), int)
    ):
        return "'response' should be null or an object with an integer 'status'"
    for part in (request, response or {}):
        body = part.get("body")
        if body is not None and not (isinstance(body, dict) and len(body) == 1
                                     and next(iter(body)) in ("json", "text", "base64")):
            return "a 'body' should be null or one of {json|text|base64: ...}"
        if "base64" in (body or {}):
            try:
                base64.b64decode(body["base64"], validate=True)
            except (binascii.Error, ValueError, TypeError):  # ValueError: non-ASCII text
                return "a 'base64' body that is not base64"
    return None


def read(
    path: str | os.PathLike[str], *, strict: bool = False, issues: list[ReadIssue] | None = None
) -> Iterator[dict[str, Any]]:
    """Stream the records of a recording.

    With `strict`, the first bad line raises RecordError (a truncated last line
    too); otherwise bad lines are skipped and appended to `issues`, so a caller
    can always say which lines it did not use.
    """
    for item in iter_records(path):
        if isinstance(item, ReadIssue):
            if strict:
                raise RecordError(item.path, item.line, item.problem)
            if issues is not None:
                issues.append(item)
            continue
        yield item
