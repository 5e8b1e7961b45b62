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

__all__ = ["RecordError", "ReadIssue", "iter_records", "numbered", "check_outline", "read"]


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

    The header line is checked and not yielded. A last line without its newline
    is what a killed writer leaves behind: it is reported as truncated rather
    than raised.
    """
    for _, item in numbered(path):
        yield item


def numbered(path: str | os.PathLike[str]
             ) -> Iterator[tuple[int, dict[str, Any] | ReadIssue]]:
    """`iter_records`, each record or issue with the line it came from."""
    path = os.fspath(path)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            item = _item(path, number, line)
            if item is not None:
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
    problem = check_outline(item)
    return ReadIssue(path, number, problem) if problem else item


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
        encoded = part.get("encoded")
        if encoded is not None:
            try:
                base64.b64decode(encoded["base64"], validate=True)
            except (binascii.Error, ValueError, TypeError, KeyError):
                return "an 'encoded' body should be {base64: ...}"
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
