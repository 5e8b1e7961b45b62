"""The search-handle query language: the documented `filter` subset and `orderBy`.

What a title sends (`MultiplayerQuerySearchHandleRequest::Serialize`,
multiplayer_query_search_handle_request.cpp ≈ line 90): `filter` is an
OData-like string and `orderBy` is `"<attribute> asc"` or `"<attribute> desc"`.
The documented subset (XblMultiplayerGetSearchHandlesAsync, "Filtering search
handles") is the comparisons `eq ne ge gt le lt`, joined by `and`/`or`, over:

    Strings/<name> eq 'value'            a string search attribute
    Numbers/<name> gt 10                 a number search attribute
    Tags/<anything> eq 'value'           the handle carries tag 'value'
    Tags/any(d:d eq 'value')             the same, as a lambda
    MemberXuids/any(d:d eq '2533...')    a member of the handle's session
    OwnerXuids/any(d:d eq '2533...')     an owner of the handle's session

Parentheses group. Keywords, operators and attribute names match without case.
Choices where the documentation is silent: string values and tags also match
without case; a comparison with an attribute the handle lacks is false (so `ne`
does not select handles without the attribute); comparing a number attribute
with a string (or the reverse) is a 400, as a typed query language would refuse it.
`orderBy` with no attribute orders by `Timestamp asc` (the handle's createTime),
as the documentation of `orderByAttribute` says; handles without the attribute
come last.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

__all__ = [
    "FilterError", "Subject", "Predicate", "parse_filter", "parse_order", "order_key", "ordered",
]


class FilterError(ValueError):
    """A filter or orderBy the stand-in cannot read (the service answers 400)."""


@dataclass(frozen=True)
class Subject:
    """What a filter sees of one search handle (names and values as stored)."""

    strings: Mapping[str, str] = field(default_factory=dict)
    numbers: Mapping[str, float] = field(default_factory=dict)
    tags: Sequence[str] = ()
    member_xuids: Sequence[str] = ()
    owner_xuids: Sequence[str] = ()
    timestamp: str = ""
    handle_id: str = ""

    def string(self, name: str) -> str | None:
        return _lookup(self.strings, name)

    def number(self, name: str) -> float | None:
        return _lookup(self.numbers, name)


def _lookup(values: Mapping[str, Any], name: str) -> Any:
    low = name.lower()
    return next((v for k, v in values.items() if k.lower() == low), None)


Predicate = Callable[[Subject], bool]

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<name>[A-Za-z_][\w\-]*(?:/[\w\-]+)*)
    | (?P<punct>[():])
    )""", re.VERBOSE)

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}
_COLLECTIONS = ("tags", "memberxuids", "ownerxuids")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "name" else ""


def _tokens(text: str) -> list[_Token]:
    found: list[_Token] = []
    at = 0
    while at < len(text):
        if not text[at:].strip():
            break
        match = _TOKEN.match(text, at)
        if match is None or match.lastgroup is None:
            raise FilterError(f"the filter can't be read at {text[at:].strip()[:20]!r}")
        found.append(_Token(match.lastgroup, match[match.lastgroup]))
        at = match.end()
    return found


def _literal(token: _Token) -> str | float | bool:
    if token.kind == "string":
        return token.text[1:-1].replace("''", "'")
    if token.kind == "number":
        return float(token.text)
    if token.word in ("true", "false"):
        return token.word == "true"
    raise FilterError(f"expected a value ('text', a number, true or false), not {token.text!r}")


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class _Parser:
    """Recursive descent: or-expression of and-expressions of comparisons."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise FilterError(f"the filter ends where {what} was expected")
        self.at += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take(repr(text))
        if token.text.lower() != text:
            raise FilterError(f"expected {text!r}, not {token.text!r}")

    def parse(self) -> Predicate:
        predicate = self.disjunction()
        if self.peek() is not None:
            raise FilterError(f"unexpected {self.tokens[self.at].text!r} in the filter")
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while (token := self.peek()) is not None and token.word == "or":
            self.at += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda s: any(p(s) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.term()]
        while (token := self.peek()) is not None and token.word == "and":
            self.at += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda s: all(p(s) for p in parts))

    def term(self) -> Predicate:
        token = self.take("a comparison")
        if token.text == "(":
            inner = self.disjunction()
            self.expect(")")
            return inner
        if token.kind != "name" or "/" not in token.text:
            raise FilterError(f"expected Strings/, Numbers/, Tags/, MemberXuids/ or "
                              f"OwnerXuids/, not {token.text!r}")
        head, _, rest = token.text.partition("/")
        if rest.lower() == "any":
            return self.lambda_any(head.lower())
        return self.comparison(head.lower(), rest)

    def operator(self) -> Callable[[Any, Any], bool]:
        token = self.take("an operator")
        compare = _COMPARE.get(token.word)
        if compare is None:
            raise FilterError(f"the operator should be one of {', '.join(_COMPARE)}, "
                              f"not {token.text!r}")
        return compare

    def comparison(self, head: str, name: str) -> Predicate:
        compare = self.operator()
        value = _literal(self.take("a value"))
        if head == "strings":
            if not isinstance(value, str):
                raise FilterError(f"Strings/{name} is compared with a string, not {value!r}")
            return lambda s: (v := s.string(name)) is not None and \
                compare(v.lower(), value.lower())
        if head == "numbers":
            if isinstance(value, str | bool):
                raise FilterError(f"Numbers/{name} is compared with a number, not {value!r}")
            return lambda s: (v := s.number(name)) is not None and compare(float(v), value)
        if head == "tags":
            return _tag_test(name, compare, value)
        raise FilterError(f"unknown attribute kind {head!r}; use Strings/, Numbers/ or Tags/")

    def lambda_any(self, head: str) -> Predicate:
        if head not in _COLLECTIONS:
            raise FilterError(f"any() applies to Tags, MemberXuids or OwnerXuids, not {head!r}")
        self.expect("(")
        variable = self.take("a variable").text
        self.expect(":")
        if self.take("the variable").text != variable:
            raise FilterError(f"any() should compare its variable {variable!r}")
        compare = self.operator()
        value = _fold(_literal(self.take("a value")))
        self.expect(")")
        value = str(int(value)) if isinstance(value, float) and value.is_integer() else value

        def test(s: Subject) -> bool:
            items = {"tags": s.tags, "memberxuids": s.member_xuids,
                     "ownerxuids": s.owner_xuids}[head]
            return any(compare(_fold(item), value) for item in items)
        return test


def _tag_test(name: str, compare: Callable[[Any, Any], bool],
              value: str | float | bool) -> Predicate:
    """`Tags/x eq 'value'` (the tag is present) or `Tags/name eq true`."""
    if isinstance(value, bool):
        return lambda s: compare(name.lower() in (t.lower() for t in s.tags), value)
    if not isinstance(value, str):
        raise FilterError(f"Tags/{name} is compared with a string, not {value!r}")
    return lambda s: compare(value.lower() in (t.lower() for t in s.tags), True)


def parse_filter(text: str | None) -> Predicate:
    """The filter as a predicate over handles; an empty filter selects every handle."""
    if text is None or not text.strip():
        return lambda s: True
    return _Parser(text).parse()


def parse_order(text: str | None) -> tuple[str, bool]:
    """(attribute, ascending) from `orderBy`; default `Timestamp asc`."""
    words = (text or "").split()
    if not words:
        return "timestamp", True
    if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
        raise FilterError(f"orderBy should be '<attribute> asc' or '<attribute> desc', "
                          f"not {text!r}")
    return words[0], len(words) == 1 or words[1].lower() == "asc"


def order_key(subject: Subject, attribute: str) -> tuple[int, Any] | None:
    """A sort key for the handle, or None when it lacks the attribute (it comes last).
    Numbers sort before strings, so a bare name that is a number on one handle and a
    string on another still orders."""
    head, _, name = attribute.partition("/")
    low = head.lower()
    if low == "timestamp" and not name:
        return (1, subject.timestamp) if subject.timestamp else None
    number = subject.number(name) if low == "numbers" else None
    text = _fold(subject.string(name)) if low == "strings" else None
    if low not in ("numbers", "strings"):  # a bare name: a number attribute, else a string
        number = subject.number(attribute)
        text = _fold(subject.string(attribute))
    if number is not None:
        return (0, float(number))
    return (1, text) if text is not None else None


def ordered(subjects: Sequence[Subject], order_by: str | None) -> list[Subject]:
    """The subjects in `orderBy` order (parse_order); those lacking the attribute last,
    in createTime order."""
    attribute, ascending = parse_order(order_by)
    keyed = [(order_key(s, attribute), s) for s in subjects]
    present = [(k, s) for k, s in keyed if k is not None]
    present.sort(key=lambda pair: pair[0], reverse=not ascending)
    missing = sorted((s for k, s in keyed if k is None), key=lambda s: s.timestamp)
    return [s for _, s in present] + missing
