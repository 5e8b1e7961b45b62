"""Reading recordings: streamed, every bad line named, never silently dropped."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mpsdproxy.recording import codec
from mpsdproxy.recording import messages as ws

__all__ = ["RecordError", "ReadIssue", "iter_records", "numbered", "check_outline", "read",
           "read_tags", "foreign_file"]


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


def iter_records(path: str | os.PathLike[str], *, messages: bool = True
                 ) -> Iterator[dict[str, Any] | ReadIssue]:
    """Stream every record line of a recording, yielding a ReadIssue for each bad line.

    Websocket message records are yielded too (so a writer continuing a file
    sees every seq); `messages=False` leaves them out. The header line is
    checked and not yielded. A last line without its newline is what a killed
    writer leaves behind: it is reported as truncated rather than raised.
    """
    for _, item in numbered(path, messages=messages):
        yield item


def numbered(path: str | os.PathLike[str], *, messages: bool = False
             ) -> Iterator[tuple[int, dict[str, Any] | ReadIssue]]:
    """Records or issues with the line they came from. HTTP exchange records only,
    unless `messages`: then websocket message records too (`messages.is_message`)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            item = _item(path, number, line)
            if item is None or (not messages and isinstance(item, dict)
                                and ws.is_message(item)):
                continue
            yield number, item


def _item(path: str, number: int, line: str) -> dict[str, Any] | ReadIssue | None:
    """One line's record, or why it is not one (None for the header line)."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError) as e:
        if not line.endswith("\n"):
            return ReadIssue(path, number, "truncated last line (writer stopped mid-record)",
                             truncated=True)
        return ReadIssue(path, number, f"not valid JSON: {e}")
    if not isinstance(item, dict):
        return ReadIssue(path, number,
                         f"a record should be a JSON object, not {type(item).__name__}")
    if codec.is_header_line(item):
        version = item.get("version")
        if not isinstance(version, int) or version > codec.FORMAT_VERSION:
            return ReadIssue(path, number, (
                f"recording format version {version!r}: this mpsdproxy reads "
                f"versions up to {codec.FORMAT_VERSION}"))
        return None
    problem = check_outline(item, messages=True)
    return ReadIssue(path, number, problem) if problem else item


#: The optional fields of an exchange record and of its request and response, each with
#: the one type it has when present and not null (`codec.check_fields`): the shipped
#: schema's types (`data/recording.schema.json`), which the reader never narrows. When
#: and from where (`start`, `end`, `duration_ms`, `client`) are not among them: one that
#: cannot be read is unknown, as a recording without it (`codec.to_exchange`).
_RECORD_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("error", str), ("provenance", dict), ("classification", dict), ("resource", dict),
)
_PART_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("reason", str), ("truncated", dict),
)
#: The members readers take of the record's objects (a provenance's others are free).
_NESTED_FIELDS: dict[str, tuple[tuple[str, type | tuple[type, ...]], ...]] = {
    "provenance": (("source", str), ("rule", str), ("scenario", str), ("phase", str),
                   ("fault", str), ("format", str), ("file", str), ("record", int)),
    "classification": (("id", str), ("meaning", str), ("anomalies", list)),
    "resource": (("kind", str), ("scid", str), ("template", str), ("name", str),
                 ("element", str)),
}
_ANOMALY_FIELDS: tuple[tuple[str, type], ...] = (("code", str), ("message", str))


def check_outline(item: dict[str, Any], *, messages: bool = False) -> str | None:
    """Why a parsed line is not a record, or None when it is one: every field a reader
    takes has its one type (or is null), so no reader meets a header that is a number or
    a provenance that is `true`; the problem names the field.

    A websocket message record (`"kind": "websocket"`) is one with `messages`;
    without, it is named as such, so a caller that only handles exchanges
    skips it with a reason instead of failing on its missing request.
    """
    if ws.is_message(item):
        if not messages:
            return "a websocket message record, not an HTTP exchange"
        return ws.check_message(item)
    if not codec.is_seq(item.get("seq")):
        return codec.SEQ_PROBLEM
    request = item.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("method"), str) \
            or not isinstance(request.get("url"), str):
        return "missing 'request' with 'method' and 'url'"
    response = item.get("response")
    if response is not None and (
        not isinstance(response, dict) or type(response.get("status")) is not int
    ):
        return "'response' should be null or an object with an integer 'status'"
    return (codec.check_fields(item, _RECORD_FIELDS) or _nested_problem(item)
            or _part_problem("request", request)
            or (_part_problem("response", response) if response is not None else None))


def _nested_problem(item: dict[str, Any]) -> str | None:
    """Why a member of the record's provenance, classification or resource is not of its
    type, or None."""
    for name, fields in _NESTED_FIELDS.items():
        if item.get(name) is not None:
            problem = codec.check_fields(item[name], fields, f"{name}.")
            if problem:
                return problem
    anomalies = (item.get("classification") or {}).get("anomalies")
    if anomalies is not None and not all(
            isinstance(a, dict) and codec.check_fields(a, _ANOMALY_FIELDS) is None
            for a in anomalies):
        return "'classification.anomalies' should be a list of {code, message} objects"
    return None


def _part_problem(name: str, part: dict[str, Any]) -> str | None:
    """Why a record's request or response (`name`) cannot be read, or None."""
    problem = codec.check_fields(part, _PART_FIELDS, f"{name}.")
    if problem:
        return problem
    headers = part.get("headers")
    if headers is not None and not (isinstance(headers, list) and all(
            isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], str) for pair in headers)):
        return f"'{name}.headers' should be a list of [name, value] pairs of strings"
    body = part.get("body")
    if body is not None and not (isinstance(body, dict) and len(body) == 1
                                 and next(iter(body)) in ("json", "text", "base64")):
        return f"'{name}.body' should be null or one of {{json|text|base64: ...}}"
    if body is not None and "json" not in body and not isinstance(next(iter(body.values())),
                                                                  str):
        return f"'{name}.body' should hold its text or base64 as a string"
    if "base64" in (body or {}):
        try:
            base64.b64decode(body["base64"], validate=True)  # a string: checked above
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            return f"'{name}.body' is not valid base64"
    encoded = part.get("encoded")
    if encoded is not None:
        try:
            base64.b64decode(encoded["base64"], validate=True)
        except (binascii.Error, ValueError, TypeError, KeyError):
            return f"'{name}.encoded' should be {{base64: ...}}"
    return None


def read(
    path: str | os.PathLike[str], *, strict: bool = False, issues: list[ReadIssue] | None = None,
    messages: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stream the HTTP exchange records of a recording; with `messages`, its websocket
    message records too, in file order (`messages.is_message` tells them apart).

    With `strict`, the first bad line raises RecordError (a truncated last line
    too); otherwise bad lines are skipped and appended to `issues`, so a caller
    can always say which lines it did not use.
    """
    for item in iter_records(path, messages=messages):
        if isinstance(item, ReadIssue):
            if strict:
                raise RecordError(item.path, item.line, item.problem)
            if issues is not None:
                issues.append(item)
            continue
        yield item


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """The run metadata in a recording's header line (`{}` for a file without one, a
    version 1 file, or a header without tags). Reads only the first line."""
    with open(os.fspath(path), encoding="utf-8", errors="surrogateescape") as f:
        first = f.readline()
    try:
        item = json.loads(first)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(item, dict) or not codec.is_header_line(item):
        return {}
    tags = item.get("tags")
    if not isinstance(tags, dict):
        return {}
    return {str(k): str(v) for k, v in tags.items()}


def foreign_file(path: str | os.PathLike[str]) -> str | None:
    """Why an existing file is plainly not a recording, judged by its first line, or None.

    Its first line is not a JSON object (a scenario, a README, a HAR), or it is a header
    naming another format (a verdicts sidecar). An empty or missing file, a version 1
    recording (no header) and a first line too long to check here all pass: the reader
    judges them line by line. Raises OSError when the file cannot be read."""
    path = os.fspath(path)
    if not os.path.isfile(path):  # missing, or a FIFO or device: reading it could block
        return None
    with open(path, "rb") as f:
        first = f.readline(1 << 20)
    if not first.strip():
        return None
    if not first.startswith(b"{"):
        return f"{path}:1: not a recording (a recording's lines are JSON objects)"
    try:
        item = json.loads(first)
    except (ValueError, RecursionError):
        return None  # cut, or longer than was read: the reader names such a line
    named = item.get("format") if isinstance(item, dict) and "seq" not in item else None
    if named is not None and named != codec.FORMAT:
        return f"{path}:1: not a recording (its header says {named!r})"
    return None
