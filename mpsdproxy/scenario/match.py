"""Whether a request is one a rule concerns: a `Match` checked against a `model.Request`.

A `Matcher` is a Match compiled once, when the engine is built: methods as a
set, resource names as the kinds they cover, globs as regexes. `Facts` is one
request as every matcher sees it, worked out once per request (method upper
case, resource kind, path without query, host). Header values come from
`request.headers`, decoded by the package's one rule (`model.from_bytes`), so a
rule `headers: {X-Title: "Café*"}` matches the UTF-8 header the title sent.
Nothing is remembered between requests.

`situations` works the other way round, for `check`: every kind of request (as
the catalog tells them apart) a match can let through.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import NamedTuple

from mpsdproxy import catalog
from mpsdproxy import model
from mpsdproxy.resources import Kind
from mpsdproxy.resources import Resource
from mpsdproxy.scenario.model import Match

__all__ = ["Facts", "HeaderCheck", "Matcher", "matches", "situations"]


class Facts(NamedTuple):
    """One request as every rule's match sees it."""

    method: str  # upper case
    kind: Kind
    path: str  # without the query
    host: str  # lower case, without port
    headers: model.Headers

    @classmethod
    def of(cls, request: model.Request) -> Facts:
        return cls(request.method.upper(), request.resource.kind,
                   request.path.partition("?")[0], request.host, request.headers)


class HeaderCheck(NamedTuple):
    """One `match.headers` entry: the header present (with a value the regex matches,
    when there is one), or absent."""

    name: str
    present: bool
    regex: re.Pattern[str] | None

    def holds(self, headers: model.Headers) -> bool:
        values = headers.get_all(self.name)
        if not self.present:
            return not values
        if not values:
            return False
        regex = self.regex
        if regex is None:
            return True
        for value in values:  # a plain loop: cheaper than any() over a generator
            if regex.match(value) is not None:
                return True
        return False


class Matcher(NamedTuple):
    """A Match reduced to the cheapest checks: absent conditions dropped, globs as regexes.
    Equal matches give equal matchers, so the engine checks each distinct one once per
    request."""

    methods: frozenset[str] | None
    kinds: frozenset[Kind] | None
    paths: tuple[re.Pattern[str], ...]
    hosts: tuple[re.Pattern[str], ...]
    headers: tuple[HeaderCheck, ...]

    @classmethod
    def of(cls, match: Match) -> Matcher:
        return cls(
            match.methods, match.kinds,
            tuple(g.regex for g in match.paths), tuple(g.regex for g in match.hosts),
            tuple(HeaderCheck(h.name.lower(), h.present,
                              h.glob.regex if h.glob is not None else None)
                  for h in match.headers))

    def test(self, facts: Facts) -> bool:
        """Whether the request these facts describe passes every condition."""
        if self.methods is not None and facts.method not in self.methods:
            return False
        if self.kinds is not None and facts.kind not in self.kinds:
            return False
        if self.paths and not _any_match(self.paths, facts.path):
            return False
        if self.hosts and not _any_match(self.hosts, facts.host):
            return False
        for check in self.headers:
            if not check.holds(facts.headers):
                return False
        return True


def _any_match(regexes: tuple[re.Pattern[str], ...], value: str) -> bool:
    for regex in regexes:
        if regex.match(value) is not None:
            return True
    return False


def matches(match: Match, request: model.Request) -> bool:
    """Whether `request` is one `match` concerns (compiles the match: for one-off checks;
    the engine keeps its matchers)."""
    return Matcher.of(match).test(Facts.of(request))


#: The values of a precondition header that the catalog tells apart: not sent, `*`, an ETag.
_PRECONDITION_VALUES: tuple[str | None, ...] = (None, "*", '"etag"')


def _header_values(match: Match, name: str) -> list[str | None]:
    """The values of a precondition header the match lets through: one of each sort the
    catalog tells apart, plus each glob's own text (so a glob for one ETag still has a
    value it matches)."""
    entries = [h for h in match.headers if h.name.lower() == name.lower()]
    candidates = [*_PRECONDITION_VALUES, *(h.glob.text for h in entries if h.glob)]
    checks = [HeaderCheck(h.name, h.present, h.glob.regex if h.glob else None)
              for h in entries]
    return [value for value in dict.fromkeys(candidates)
            if all(c.holds(model.Headers(((name, value),) if value is not None else ()))
                   for c in checks)]


def situations(match: Match) -> Iterator[catalog.Situation]:
    """Every sort of request `match` lets through, as the catalog tells them apart: each
    method and resource kind it allows, each sort of If-Match and If-None-Match, on a
    session that exists and on one that does not. Paths and hosts are not narrowed by
    (a glob cannot be inverted): this errs towards a request that may never come."""
    methods = sorted(match.methods) if match.methods is not None else sorted(
        catalog.ALL_METHODS)
    kinds = sorted(match.kinds) if match.kinds is not None else list(Kind)
    for exists, method, kind, if_match, if_none_match in itertools.product(
            (True, False), methods, kinds, _header_values(match, "If-Match"),
            _header_values(match, "If-None-Match")):
        resource = Resource(kind, "scid", "template", "name", "element")
        yield catalog.Situation(method, resource, if_match, if_none_match, exists)
