"""HAR entries one at a time, so memory follows the biggest entry, not the file.

A HAR file is one JSON value, `{"log": {..., "entries": [...]}}`. This walks
its outline by hand and decodes each entry (and every other member) with the
standard library's decoder, reading more of the file only when a value is not
complete yet, so no new dependency is needed. A value larger than the cap is
refused with the entry's number rather than read.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import IO
from typing import Any

__all__ = ["iter_entries"]

_WHITE = " \t\r\n"


class _Text:
    """A window on the decoded file: `buf[pos:]` is what is not consumed yet."""

    def __init__(self, fo: IO[bytes], chunk: int = 1 << 16) -> None:
        self.fo, self.chunk = fo, chunk
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf, self.pos, self.eof = "", 0, False

    def fill(self, at_least: int = 0) -> bool:
        """Read more (at least as much again as is pending, so a long value costs
        O(n log n)); False at the end of the file."""
        if self.eof:
            return False
        if self.pos > (1 << 20):
            self.buf, self.pos = self.buf[self.pos:], 0
        data = self.fo.read(max(self.chunk, at_least))
        if not data:
            self.eof = True
            self.buf += self.decoder.decode(b"", final=True)
            return False
        self.buf += self.decoder.decode(data)
        return True

    def peek(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITE:
                self.pos += 1
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos:self.pos + 1]

    def take(self, expected: str, where: str) -> None:
        found = self.peek()
        if found != expected:
            raise ValueError(f"{where}: expected {expected!r}, found {found or 'the end'!r}")
        self.pos += 1

    def value(self, limit: int, where: str) -> Any:
        """The next JSON value, decoded whole; ValueError past `limit` characters."""
        decoder = json.JSONDecoder()
        self.peek()
        while True:
            pending = len(self.buf) - self.pos
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                if pending > limit:
                    raise ValueError(f"{where} is over the {limit}-character cap") from None
                if not self.fill(pending):
                    raise ValueError(f"{where}: {e.msg} (line {e.lineno})") from None
                continue
            except RecursionError:
                raise ValueError(f"{where} nests too deeply") from None
            if end == len(self.buf) and self.fill(pending):
                continue  # a number or literal may go on in the next chunk
            if end - self.pos > limit:
                raise ValueError(f"{where} is over the {limit}-character cap")
            self.pos = end
            return value


def _members(text: _Text, where: str) -> Iterator[str]:
    """The keys of the object at hand, leaving each value for the caller to read."""
    text.take("{", where)
    if text.peek() == "}":
        text.pos += 1
        return
    while True:
        key = text.value(1 << 16, where)
        if not isinstance(key, str):
            raise ValueError(f"{where}: a key that is not a string")
        text.take(":", where)
        yield key
        if text.peek() == ",":
            text.pos += 1
            continue
        text.take("}", where)
        return


def iter_entries(fo: IO[bytes], limit: int) -> Iterator[tuple[int, Any]]:
    """(number from 1, entry) of a HAR file's `log.entries`, streamed. Raises
    ValueError (naming the entry when there is one) for a file that is not a HAR
    log or an entry of more than `limit` characters."""
    text = _Text(fo)
    found = False
    for key in _members(text, "the file"):
        if key != "log":
            text.value(limit, f"member {key!r}")
            continue
        for name in _members(text, "log"):
            if name != "entries":
                text.value(limit, f"log.{name}")
                continue
            found = True
            yield from _entries(text, limit)
    if text.peek():
        raise ValueError("text after the HAR log")
    if not found:
        raise ValueError("no log.entries")


def _entries(text: _Text, limit: int) -> Iterator[tuple[int, Any]]:
    text.take("[", "log.entries")
    if text.peek() == "]":
        text.pos += 1
        return
    number = 0
    while True:
        number += 1
        yield number, text.value(limit, f"entry {number}")
        if text.peek() == ",":
            text.pos += 1
            continue
        text.take("]", f"after entry {number}")
        return
