"""JSON on the hot path: one parse per body, one fast encoder, the stdlib's meaning.

Several addons look at the same response body in the same hook round (the
classifier checks it is valid JSON, the injector whether it is a whole session,
the recorder whether it can be kept as JSON). `parse` parses it once and hands
the same value to each: the cache holds one body, the one being handled. A
parsed value is shared, so callers read it and never change it.

orjson does the work where it is several times faster than the json module, and
the json module stays the reference: `parse` gives what `json.loads` gives, and
`is_compact` answers exactly as comparing with `json.dumps` would. Where the two
libraries could disagree (orjson refuses NaN, integers beyond 64 bits and lone
surrogates; it writes some small floats differently) the json module decides.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["INVALID", "MAX_DEPTH", "parse", "compact", "is_compact", "nests_at_most",
           "dumps_line", "document", "all_finite", "json_kind"]

#: What `parse` returns for bytes that are not JSON (None is a JSON value).
INVALID: Any = object()

_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)


#: orjson reads an integer beyond 64 bits as a float; the json module keeps it exact.
#: Such an integer has at least 19 digits in a row. Digits are all made "0" and the
#: run looked for as plain bytes: a regex (\d{19}) costs several times the parse.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


def _long_number(raw: bytes) -> bool:
    """Whether `raw` has 19 or more digits in a row (a string holding them only costs
    the slower parse)."""
    return _LONG_RUN in raw.translate(_DIGITS_TO_ZERO)


def _loads(raw: bytes) -> Any:
    if type(raw) is not bytes:
        raw = bytes(raw)  # a bytearray or memoryview reads the same
    if not _long_number(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # maybe still JSON to the json module (NaN, UTF-16, a BOM)
    try:
        return json.loads(raw)
    except _ERRORS:
        return INVALID


def json_kind(value: Any) -> str:
    """What JSON calls a parsed value, as a sentence names it ("an object", "a number"):
    the stand-in's 400s and a recording's skipped lines say what they found."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


def parse(raw: bytes) -> Any:
    """The JSON value of `raw` (as `json.loads` reads it), or INVALID. (A message parses
    its body once: `model.Request.json`.)"""
    return _loads(raw)


#: Compact and UTF-8 as is, as the json module writes it: strict (NaN and Infinity
#: refused, the form records keep) and loose (written as the json module writes them,
#: for bodies read back from any recording). Built once; `json.dumps` with options
#: would build an encoder on every call.
_STRICT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_LOOSE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def compact(value: Any, strict: bool = True) -> str:
    """`value` as compact JSON text, as the json module writes it; when `strict`,
    ValueError for NaN or Infinity."""
    return (_STRICT if strict else _LOOSE).encode(value)


_DIGITS = frozenset(b"0123456789")
_NUMBER_ENDS = frozenset(b",]}")


def _ambiguous(text: bytes) -> bool:
    """Whether orjson's `text` may spell a float differently from the json module:
    orjson writes 1e-05 as 0.00001 and 1e-08 as 1e-8 (a number ends at `,`, `]`, `}`
    or the end of the text). True sends the question to the json module: a string
    that happens to hold such text only costs the slower answer, and GUIDs
    ("...3e-0000-...") are not numbers. Plain finds: a regex is ten times slower here.
    """
    if text.find(b"0.0000") >= 0:
        return True
    end = len(text)
    at = text.find(b"e-")
    while at != -1:
        digits = at + 2
        while digits < end and text[digits] in _DIGITS:
            digits += 1
        if (at > 0 and text[at - 1] in _DIGITS and digits > at + 2
                and (digits == end or text[digits] in _NUMBER_ENDS)):
            return True
        at = text.find(b"e-", at + 2)
    return False


#: JSON nested deeper than this is never kept as JSON (some JSON tools, orjson among
#: them, stop at 255 levels).
MAX_DEPTH = 200


def nests_at_most(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests no deeper than `limit` containers (without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def all_finite(value: Any) -> bool:
    """Whether every number in `value` is finite (without recursion). A body with `NaN`,
    `Infinity` or `1e400` parses here (the json module's reading), yet is no JSON a
    strict parser, the service's among them, takes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def is_compact(value: Any, raw: bytes) -> bool:
    """Whether `compact(value)`, UTF-8 encoded, is exactly `raw`, and `value` nests no
    deeper than MAX_DEPTH: the test for keeping a body as JSON in a record. orjson
    answers when its text cannot differ (and when it can write it, it is shallow)."""
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:
        text = None
    if text is not None and not _ambiguous(text):
        return text == raw
    if text is None and not nests_at_most(value):
        return False
    try:
        return compact(value).encode("utf-8") == raw
    except (ValueError, RecursionError):
        return False


def dumps_line(record: dict[str, Any], newline: bool = False) -> bytes:
    """A record as one compact JSON line in UTF-8 (ending in a newline when asked).

    What orjson cannot write (a lone surrogate from a header that was not UTF-8, an
    integer beyond 64 bits) the json module writes, with escapes where UTF-8 cannot
    carry a character: a line is always valid UTF-8 and valid JSON.
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE if newline else None)
    except orjson.JSONEncodeError:
        pass
    end = b"\n" if newline else b""
    try:
        return compact(record, strict=False).encode("utf-8") + end
    except UnicodeEncodeError:
        return json.dumps(record, separators=(",", ":")).encode("ascii") + end


def document(value: Any, default: Any = None, ensure_ascii: bool = False) -> str:
    """`value` as the indented JSON document a command prints (`--format json`): strict
    JSON, which every parser reads. A body can hold `1e400` or `NaN`, which the json
    module reads as floats it would write back as `Infinity` and `NaN`, no JSON at all;
    such a float is written as that word in a string instead."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=ensure_ascii, allow_nan=False,
                          default=default)
    except ValueError:
        try:
            text = json.dumps(_finite(value), indent=2, ensure_ascii=ensure_ascii,
                              default=default)
        except RecursionError:  # deeper than the walk goes: as the json module writes it
            text = json.dumps(value, indent=2, ensure_ascii=ensure_ascii, default=default)
    return text + "\n"


def _finite(value: Any) -> Any:
    """`value` with each float that is not finite as the word the json module spells it."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
